r"""Checks the aniposelib peer on a synthetic rig with an exactly known answer.

  python -m benchmarks.peers.check_aniposelib [--seed=0] [--noise_px=0.5]

Needs .venv-peers (`bash benchmarks/peers/setup_peers.sh`). Two checks, each printed:

  1. Conventions: random world points projected by aniposelib's cameras (built by
     `calibration_peers` from mf_tf's: Rodrigues rvec and tvec of x_cam = R X + t in millimetres,
     OpenCV's [k1, k2, p1, p2, k3]) and by `Camera.project` must agree to 1e-5 px. Also printed:
     how far aniposelib's `undistort_points` (what its triangulation uses) lands from the exact
     normalized coordinates, in pixels.
  2. Recovery: 4 cameras 3.5-4.5 m around a 3 m x 3 m x 1.8 m volume filmed with distortion,
     `--noise_px` Gaussian pixel noise on random points; the start is the true rig with every
     camera turned by 2 degrees about a random axis and moved by 50 mm. After
     `calibration_peers.aniposelib_bundle_adjust`, `compare_rigs(with_scale=True)` against the
     true rig must give every rotation within 0.2 degrees.

Exits with status 1 when a check fails, 2 when the peer environment is missing.
"""

import argparse
import sys

import numpy as np
from scipy.spatial.transform import Rotation

from benchmarks import calibration_peers
from mf_tf.geometry import people_calibration
from mf_tf.geometry import rig_comparison
from mf_tf.geometry import rigs as rigs_lib
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig

NUM_CAMERAS = 4
DIST = np.array([-0.12, 0.03, 5e-4, -3e-4, 0.004])  # All five coefficients exercised.
START_ROTATION_DEG = 2.0
START_OFFSET_MM = 50.0
MAX_PIXEL_DIFFERENCE = 1e-5
MAX_ROTATION_DEG = 0.2


def synthetic_rig(seed: int) -> Rig:
  """NUM_CAMERAS cameras 3.5-4.5 m around the origin, 1.2-2.6 m high, 1280x960, distorted."""
  rng = np.random.default_rng(seed)
  azimuth = 2 * np.pi * np.arange(NUM_CAMERAS) / NUM_CAMERAS + 0.3 * rng.standard_normal(
      NUM_CAMERAS)
  radius = rng.uniform(3500.0, 4500.0, NUM_CAMERAS)
  centers = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth),
                      rng.uniform(1200.0, 2600.0, NUM_CAMERAS)], axis=-1)
  cameras = []
  for index, center in enumerate(centers):
    R, t = rigs_lib.look_at(center, [0.0, 0.0, 900.0] + 200.0 * rng.standard_normal(3),
                            [0.0, 0.0, 1.0])
    f = rng.uniform(750.0, 900.0)
    K = np.array([[f, 0.0, 640.0 + 5 * index], [0.0, 1.01 * f, 480.0 - 3 * index],
                  [0.0, 0.0, 1.0]])
    cameras.append(Camera(f"cam{index}", K, R, t, DIST * (1 + 0.1 * index), 1280, 960))
  return Rig("synthetic", tuple(cameras))


def random_points(rng, count: int) -> np.ndarray:
  """[count, 3] world points uniform in a 3 m x 3 m x 1.8 m volume on the floor, mm."""
  return rng.uniform([-1500.0, -1500.0, 0.0], [1500.0, 1500.0, 1800.0], (count, 3))


def observe(rig: Rig, world: np.ndarray, noise_px: float, rng) -> people_calibration.Observations:
  """Observations [F, V, 1, 1] of world points [F, 3]: distorted pixels plus noise, in-image."""
  points = np.full((world.shape[0], rig.num_views, 1, 1, 2), np.nan)
  for view, camera in enumerate(rig.cameras):
    uv, depth = camera.project(world)
    uv = uv + noise_px * rng.standard_normal(uv.shape)
    inside = ((depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0)
              & (uv[:, 1] < camera.height))
    points[:, view, 0, 0] = np.where(inside[:, None], uv, np.nan)
  return people_calibration.Observations(points, np.isfinite(points[..., 0]).astype(np.float64))


def perturb(rig: Rig, rng) -> Rig:
  """Every camera turned by START_ROTATION_DEG about a random axis, moved by START_OFFSET_MM."""
  cameras = []
  for camera in rig.cameras:
    axis = rng.standard_normal(3)
    turn = Rotation.from_rotvec(np.radians(START_ROTATION_DEG) * axis / np.linalg.norm(axis))
    shift = rng.standard_normal(3)
    center = camera.center + START_OFFSET_MM * shift / np.linalg.norm(shift)
    R = turn.as_matrix() @ camera.R
    cameras.append(Camera(camera.name, camera.K, R, -R @ center, camera.dist, camera.width,
                          camera.height))
  return Rig("start", tuple(cameras))


def check_conventions(rig: Rig, rng) -> bool:
  """Compares aniposelib's projection and undistortion of random points with mf_tf's."""
  world = random_points(rng, 500)
  projected, undistorted = calibration_peers.aniposelib_project(rig.cameras, world)
  worst = 0.0
  for view, camera in enumerate(rig.cameras):
    uv, _ = camera.project(world)
    difference = float(np.max(np.linalg.norm(projected[view] - uv, axis=-1)))
    x_cam = camera.world_to_camera(world)
    exact = x_cam[:, :2] / x_cam[:, 2:]
    undistortion = float(np.max(np.linalg.norm(undistorted[view] - exact, axis=-1))
                         * camera.K[0, 0])
    print(f"  {camera.name}: aniposelib - mf_tf projection, max {difference:.2e} px; "
          f"aniposelib undistort_points error, max {undistortion:.1e} px")
    worst = max(worst, difference)
  ok = worst < MAX_PIXEL_DIFFERENCE
  print(f"conventions: max pixel difference {worst:.2e} px (limit {MAX_PIXEL_DIFFERENCE:g}): "
        f"{'ok' if ok else 'FAILED'}")
  return ok


def _errors(title: str, rig: Rig, reference: Rig) -> dict:
  errors = rig_comparison.compare_rigs(rig, reference, with_scale=True)
  rotation = " ".join(f"{value:.3f}" for value in errors["rotation_deg"].values())
  centre = " ".join(f"{value:.1f}" for value in errors["center_mm"].values())
  print(f"  {title}: rotation deg [{rotation}], centre mm after similarity [{centre}], "
        f"scale {errors['scale']:.4f}")
  return errors


def check_recovery(rig: Rig, noise_px: float, rng, seed: int) -> bool:
  """Runs the peer from a perturbed start; checks the rotations against the true rig."""
  observations = observe(rig, random_points(rng, 1000), noise_px, rng)
  start = perturb(rig, rng)
  print(f"recovery: {observations.points.shape[0]} points, {noise_px:g} px noise, start "
        f"{START_ROTATION_DEG:g} deg and {START_OFFSET_MM:g} mm off")
  _errors("start", start, rig)
  result = calibration_peers.run_aniposelib(observations, start, seed=seed)
  errors = _errors("aniposelib", result.rig, rig)
  print(f"  aniposelib error {result.error_before_px:.3f} -> {result.error_px:.3f} px over "
        f"{result.num_points} points in {result.seconds:.1f} s")
  ok = errors["max_rotation_deg"] < MAX_ROTATION_DEG
  print(f"recovery: max rotation error {errors['max_rotation_deg']:.3f} deg (limit "
        f"{MAX_ROTATION_DEG:g}), max centre error {errors['max_center_mm']:.1f} mm: "
        f"{'ok' if ok else 'FAILED'}")
  return ok


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--noise_px", type=float, default=0.5)
  args = parser.parse_args()
  if not calibration_peers.aniposelib_available():
    print(f"aniposelib peer missing: run `{calibration_peers.SETUP_COMMAND}`", file=sys.stderr)
    sys.exit(2)
  rng = np.random.default_rng(args.seed)
  rig = synthetic_rig(args.seed)
  ok = check_conventions(rig, rng)
  ok = check_recovery(rig, args.noise_px, rng, args.seed) and ok
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
