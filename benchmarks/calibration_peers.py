r"""Calibration peers that run in their own environment: aniposelib's bundle adjustment.

aniposelib (the anipose project's calibration library) needs opencv-contrib (cv2.aruco), whose
`cv2` module clashes with the opencv-python-headless mf_tf installs, so it lives in the separate
environment .venv-peers (created by `bash benchmarks/peers/setup_peers.sh`, pinned in
benchmarks/peers/requirements.txt) and runs in a subprocess, `benchmarks/peers/
aniposelib_bundle_adjust.py`, which exchanges .npz files with this module. Nothing here imports
aniposelib.

The peer is `CameraGroup.bundle_adjust_iter` with only the extrinsics free (the intrinsics are
known, as in `people_calibration.estimate_extrinsics`): rounds of DLT triangulation, a shrinking
reprojection-error threshold (start_mu to end_mu pixels) that sets outliers aside, and
`scipy.optimize.least_squares` on the sampled inliers (plain squares, every camera and point free,
no fixed gauge: the result is in the start's world up to a small similarity, so compare it with
`rig_comparison.compare_rigs(..., with_scale=True)`).

Conventions: as mf_tf's (x_cam = R X + t, millimetres, distortion [k1, k2, p1, p2, k3] in
OpenCV's order), which aniposelib's `Camera` shares: its rvec is the Rodrigues vector of R and
its tvec is t, and it projects with `cv2.projectPoints`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile

import numpy as np

from mf_tf.geometry.camera import Camera
from mf_tf.geometry.people_calibration import Observations
from mf_tf.geometry.rig import Rig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_PYTHON = ".venv-peers/bin/python"  # Relative paths are from the repository root.
SETUP_COMMAND = "bash benchmarks/peers/setup_peers.sh"
ANIPOSELIB_SCRIPT = os.path.join(ROOT, "benchmarks", "peers", "aniposelib_bundle_adjust.py")
# aniposelib's own defaults of `bundle_adjust_iter` (0.8.0), written out so that a run states them.
ANIPOSELIB_OPTIONS = {
    "n_iters": 6,  # Rounds of triangulate, threshold, adjust.
    "start_mu": 15.0,  # First round's outlier threshold, pixels, shrinking geometrically...
    "end_mu": 1.0,  # ...to this one (bounded by each camera pair's error percentiles).
    "max_nfev": 200,  # Function evaluations per round's least squares.
    "ftol": 1e-4,  # Relative cost change that ends a round's least squares.
    "n_samp_iter": 200,  # Points sampled per camera pair for each round.
    "n_samp_full": 1000,  # Points sampled per camera pair for the thresholds and the last round.
    "error_threshold": 0.3,  # Median error (pixels) that ends the rounds early.
}


class PeerUnavailableError(RuntimeError):
  """The peer environment .venv-peers is missing or cannot import the peer."""


@dataclasses.dataclass(frozen=True)
class AniposelibResult:
  """aniposelib's adjusted rig and what it reported.

  Attributes:
    rig: The start's cameras (names, K, dist, image sizes) with the adjusted R, t (mm).
    error_before_px: aniposelib's error of the start: median over points of the mean over views
      of the reprojection error of each point's DLT triangulation, pixels.
    error_px: The same after the adjustment.
    seconds: Wall time of `bundle_adjust_iter` in the peer (its numba and jax compilation
      included; the subprocess start and the file exchange excluded).
    num_points: Points (frame, person, joint) seen by two views or more.
  """

  rig: Rig
  error_before_px: float
  error_px: float
  seconds: float
  num_points: int


def _python_path(python: str) -> str:
  return python if os.path.isabs(python) else os.path.join(ROOT, python)


def aniposelib_available(python: str = PEER_PYTHON) -> bool:
  """Whether `python` (the peer environment's interpreter) exists and imports aniposelib."""
  path = _python_path(python)
  if not os.path.isfile(path):
    return False
  try:
    subprocess.run([path, "-c", "import aniposelib.cameras"], check=True, capture_output=True,
                   timeout=120)
  except (OSError, subprocess.SubprocessError):
    return False
  return True


def points2d(observations: Observations, min_score: float = 0.5) -> np.ndarray:
  """[V, N, 2] raw pixels of `observations`, N = F * P * J, NaN where not confidently seen.

  Args:
    observations: Joints [F, V, P, J, 2] and scores [F, V, P, J].
    min_score: Joints with a lower score, or non-finite, become NaN.

  Returns:
    [V, F * P * J, 2] float64, points in (frame, person, joint) order.
  """
  points = np.asarray(observations.points, np.float64)
  scores = np.asarray(observations.scores, np.float64)
  if points.ndim != 5 or points.shape[-1] != 2 or scores.shape != points.shape[:-1]:
    raise ValueError(f"observations have points {points.shape} and scores {scores.shape}, "
                     "expected [F, V, P, J, 2] and [F, V, P, J]")
  seen = (scores >= min_score) & np.all(np.isfinite(points), axis=-1)
  points = np.where(seen[..., None], points, np.nan)
  return np.moveaxis(points, 1, 0).reshape(points.shape[1], -1, 2)


def _run_peer(python: str, script: str, fields: dict, timeout_s: float) -> dict:
  """Writes `fields` to an .npz, runs `script` on it with `python`, returns its output's fields."""
  path = _python_path(python)
  if not os.path.isfile(path):
    raise PeerUnavailableError(
        f"the peer environment's interpreter {path} does not exist; create the environment "
        f"with `{SETUP_COMMAND}` (from the repository root)")
  with tempfile.TemporaryDirectory(prefix="calibration_peer_") as folder:
    source, target = os.path.join(folder, "input.npz"), os.path.join(folder, "output.npz")
    np.savez(source, **fields)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["JAX_PLATFORMS"] = "cpu"  # The peer's jax triangulates on the CPU.
    try:
      run = subprocess.run([path, script, source, target], capture_output=True, text=True,
                           timeout=timeout_s, env=environment, cwd=folder)
    except subprocess.TimeoutExpired:
      raise TimeoutError(f"{os.path.basename(script)} did not finish within {timeout_s:g} s") \
          from None
    if run.returncode != 0:
      tail = (run.stderr or run.stdout).strip()[-2000:]
      if "ModuleNotFoundError" in tail:
        raise PeerUnavailableError(f"{path} cannot import the peer ({tail.splitlines()[-1]}); "
                                   f"recreate the environment with `{SETUP_COMMAND}`")
      raise RuntimeError(f"{os.path.basename(script)} failed (exit {run.returncode}):\n{tail}")
    with np.load(target, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}


def _camera_fields(cameras) -> dict:
  return {
      "names": np.array([camera.name for camera in cameras]),
      "image_size": np.array([[camera.width, camera.height] for camera in cameras], np.int64),
      "K": np.stack([camera.K for camera in cameras]),
      "dist": np.stack([camera.dist for camera in cameras]),
      "R": np.stack([camera.R for camera in cameras]),
      "t": np.stack([camera.t for camera in cameras]),
  }


def run_aniposelib(observations: Observations, start: Rig, *, min_score: float = 0.5,
                   python: str = PEER_PYTHON, seed: int = 0, timeout_s: float = 1800.0,
                   options: dict | None = None, name: str = "aniposelib") -> AniposelibResult:
  """Adjusts `start`'s extrinsics to `observations` with aniposelib's `bundle_adjust_iter`.

  Args:
    observations: Joints [F, V, P, J, 2] (raw pixels) and scores [F, V, P, J], views in the order
      of `start.cameras`.
    start: The rig the adjustment starts from; its intrinsics (K, dist, image sizes) stay fixed.
    min_score: Joints with a lower score (or non-finite) are not used.
    python: The peer environment's interpreter (relative paths: from the repository root).
    seed: Seed of aniposelib's random point sampling.
    timeout_s: Limit of the peer's run, seconds.
    options: Overrides of `ANIPOSELIB_OPTIONS` (`bundle_adjust_iter`'s arguments).
    name: Name of the returned rig.

  Returns:
    AniposelibResult; its rig has no `up` or `floor` (the adjustment moves the world frame).

  Raises:
    PeerUnavailableError: .venv-peers is missing or broken (the message names the setup command).
    ValueError: observations that do not match the rig.
    RuntimeError, TimeoutError: the peer failed or ran past `timeout_s`.
  """
  uv = points2d(observations, min_score)
  if uv.shape[0] != start.num_views:
    raise ValueError(f"observations have {uv.shape[0]} views, rig {start.name!r} has "
                     f"{start.num_views} cameras {list(start.camera_names)}")
  unknown = sorted(set(options or {}) - set(ANIPOSELIB_OPTIONS))
  if unknown:
    raise ValueError(f"unknown aniposelib options {unknown}, expected some of "
                     f"{sorted(ANIPOSELIB_OPTIONS)}")
  seen = np.sum(np.isfinite(uv[..., 0]), axis=0) >= 2  # Single-view points carry nothing.
  fields = {**_camera_fields(start.cameras), "points2d": uv[:, seen], "adjust": np.array(True),
            "seed": np.array(seed), **{key: np.array(value) for key, value in
                                       {**ANIPOSELIB_OPTIONS, **(options or {})}.items()}}
  out = _run_peer(python, ANIPOSELIB_SCRIPT, fields, timeout_s)
  cameras = tuple(Camera(camera.name, camera.K, R, t, camera.dist, camera.width, camera.height)
                  for camera, R, t in zip(start.cameras, out["R"], out["t"]))
  return AniposelibResult(rig=Rig(name, cameras), error_before_px=float(out["error_before_px"]),
                          error_px=float(out["error_px"]), seconds=float(out["seconds"]),
                          num_points=int(out["num_points"]))


def aniposelib_bundle_adjust(observations: Observations, start: Rig, min_score: float = 0.5,
                             python: str = PEER_PYTHON, **kwargs) -> Rig:
  """The rig of `run_aniposelib` (same arguments): `start` with aniposelib's adjusted R, t."""
  return run_aniposelib(observations, start, min_score=min_score, python=python, **kwargs).rig


def aniposelib_project(cameras, points3d: np.ndarray, python: str = PEER_PYTHON,
                       timeout_s: float = 600.0):
  """Projects world points with aniposelib's cameras built from mf_tf's (a convention check).

  Args:
    cameras: V mf_tf cameras.
    points3d: [M, 3] world points, millimetres.
    python: The peer environment's interpreter.
    timeout_s: Limit of the peer's run, seconds.

  Returns:
    (pixels [V, M, 2] by `CameraGroup.project`, normalized [V, M, 2] those pixels undistorted by
    aniposelib's `Camera.undistort_points`).
  """
  cameras = tuple(cameras)
  fields = {**_camera_fields(cameras), "points2d": np.zeros((len(cameras), 0, 2)),
            "adjust": np.array(False), "seed": np.array(0),
            "points3d": np.asarray(points3d, np.float64).reshape(-1, 3)}
  out = _run_peer(python, ANIPOSELIB_SCRIPT, fields, timeout_s)
  return out["projected"], out["undistorted"]

