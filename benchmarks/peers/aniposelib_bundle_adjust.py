r"""aniposelib's iterative bundle adjustment of a rig's extrinsics, run in the peer environment.

  .venv-peers/bin/python benchmarks/peers/aniposelib_bundle_adjust.py INPUT.npz OUTPUT.npz

Runs with .venv-peers/bin/python (benchmarks/peers/setup_peers.sh), never in mf_tf's environment,
and imports nothing of mf_tf: `benchmarks/calibration_peers.py` writes INPUT and reads OUTPUT.

Conventions (mf_tf's, which are aniposelib's too): x_cam = R X + t with X in millimetres;
pixels ~ K distort(x_cam / z) with OpenCV's 5 coefficients [k1, k2, p1, p2, k3]; aniposelib's
`Camera` keeps R as a Rodrigues vector (`rvec`, world to camera) and projects with
`cv2.projectPoints`, so the mf_tf values pass unchanged.

INPUT fields:
  names: [V] camera names.
  image_size: [V, 2] (width, height) pixels.
  K: [V, 3, 3] intrinsics, pixels.
  dist: [V, 5] distortion [k1, k2, p1, p2, k3].
  R: [V, 3, 3] world-to-camera rotations (the start).
  t: [V, 3] world-to-camera translations, millimetres (the start).
  points2d: [V, N, 2] raw (distorted) pixels, NaN where a camera does not see a point.
  adjust: Run the bundle adjustment (False: only project `points3d`).
  seed: Seed of NumPy's global generator, which aniposelib's point sampling draws from.
  n_iters, start_mu, end_mu, max_nfev, ftol, n_samp_iter, n_samp_full, error_threshold:
    `CameraGroup.bundle_adjust_iter`'s arguments.
  points3d: Optional [M, 3] world points, millimetres, projected with the start cameras.

OUTPUT fields:
  R, t: [V, 3, 3], [V, 3] the adjusted world-to-camera extrinsics (the start when not adjusted).
  error_before_px, error_px: aniposelib's error before and after (median over points of the mean
    over views of the reprojection error of each point's DLT triangulation, pixels).
  seconds: Wall time of `bundle_adjust_iter` (numba's and jax's compilation included).
  num_points: Points of `points2d` seen by two views or more.
  projected: [V, M, 2] pixels of `points3d` by the start cameras (`CameraGroup.project`).
  undistorted: [V, M, 2] those pixels back to normalized coordinates (`Camera.undistort_points`,
    the inverse aniposelib's triangulation uses).
  version: aniposelib's version.
"""

import sys
import time

import cv2
import numpy as np
import aniposelib
from aniposelib.cameras import Camera, CameraGroup

OPTIONS = ("n_iters", "start_mu", "end_mu", "max_nfev", "ftol", "n_samp_iter", "n_samp_full",
           "error_threshold")
INT_OPTIONS = ("n_iters", "max_nfev", "n_samp_iter", "n_samp_full")


def camera_group(data) -> CameraGroup:
  """The aniposelib cameras of INPUT's start extrinsics and intrinsics."""
  cameras = []
  for name, size, K, dist, R, t in zip(data["names"], data["image_size"], data["K"], data["dist"],
                                       data["R"], data["t"]):
    rvec, _ = cv2.Rodrigues(np.asarray(R, np.float64))
    cameras.append(Camera(matrix=K, dist=dist, size=(int(size[0]), int(size[1])),
                          rvec=rvec.ravel(), tvec=t, name=str(name)))
  return CameraGroup(cameras)


def run(data) -> dict:
  """Adjusts the extrinsics (`bundle_adjust_iter`, only_extrinsics=True) and projects points3d.

  Args:
    data: The INPUT fields (module docstring).

  Returns:
    The OUTPUT fields.
  """
  group = camera_group(data)
  points2d = np.asarray(data["points2d"], np.float64)
  num_views = len(group.cameras)
  if points2d.ndim != 3 or points2d.shape[0] != num_views or points2d.shape[2] != 2:
    raise ValueError(f"points2d has shape {points2d.shape}, expected [{num_views}, N, 2]")
  out = {"version": np.array(aniposelib.__version__)}
  if "points3d" in data:
    points3d = np.asarray(data["points3d"], np.float64).reshape(-1, 3)
    out["projected"] = group.project(points3d)
    out["undistorted"] = np.stack([camera.undistort_points(np.ascontiguousarray(projected))
                                   for camera, projected in zip(group.cameras, out["projected"])])
  seen = np.sum(np.isfinite(points2d).all(axis=-1), axis=0) >= 2
  out["num_points"] = np.array(int(seen.sum()))
  if bool(data["adjust"]):
    if seen.sum() < 8:
      raise ValueError(f"{int(seen.sum())} points are seen by two views or more, expected at "
                       "least 8")
    np.random.seed(int(data["seed"]))
    options = {name: (int(data[name]) if name in INT_OPTIONS else float(data[name]))
               for name in OPTIONS if name in data}
    out["error_before_px"] = np.array(group.average_error(points2d[:, seen], median=True))
    started = time.perf_counter()
    error = group.bundle_adjust_iter(points2d[:, seen], only_extrinsics=True, verbose=False,
                                     **options)
    out["seconds"] = np.array(time.perf_counter() - started)
    out["error_px"] = np.array(float(error))
  out["R"] = np.stack([cv2.Rodrigues(camera.get_rotation())[0] for camera in group.cameras])
  out["t"] = np.stack([camera.get_translation() for camera in group.cameras])
  return out


def main(argv):
  if len(argv) != 3:
    raise SystemExit(f"usage: {argv[0]} INPUT.npz OUTPUT.npz")
  with np.load(argv[1], allow_pickle=False) as data:
    out = run({key: data[key] for key in data.files})
  np.savez(argv[2], **out)


if __name__ == "__main__":
  main(sys.argv)
