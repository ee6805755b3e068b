r"""Calibration from people on a synthetic rig: accuracy against keypoint noise and frames used.

  python -m benchmarks.people_calibration_synthetic [--seeds=3] [--people=2]

The rig and scene are the test's (`tests/geometry/test_geometry_people_calibration.py`): 5
cameras 3.5-4.5 m around a 4 m area with lens distortion, real standing Human3.6M poses walking on
circles, projected with distortion plus Gaussian noise (`--people` people, scores 1). For each
noise level (0.5, 1, 2, 4 px) and number of frames (10, 25, 50), `estimate_extrinsics` runs with
the true stature (scale from the height) and `compare_rigs` against the true rig gives, as the
mean over `--seeds` seeds of the worst camera: the rotation error (degrees), the centre error
after the similarity (% of the rig size), the centre error after a rigid alignment only (the
height-derived scale judged too, %), the scale error (%) and the median reprojection error (px).
Measured figures belong in BUILD.md.
"""

import time

import numpy as np
from absl import app
from absl import flags

from mf_tf.geometry import people_calibration as pc
from mf_tf.geometry import rig_comparison
from tests.geometry.test_geometry_people_calibration import synthetic_rig, synthetic_scene

_SEEDS = flags.DEFINE_integer("seeds", 3, "Noise seeds averaged per cell.")
_PEOPLE = flags.DEFINE_integer("people", 2, "People walking in the scene (1 or 2).")
NOISE_PX = (0.5, 1.0, 2.0, 4.0)
FRAMES = (10, 25, 50)


def main(argv):
  del argv
  rig = synthetic_rig()
  print(f"{'noise px':>8} {'frames':>6} {'rot deg':>8} {'centre %':>9} {'rigid %':>8} "
        f"{'scale %':>8} {'reproj px':>9} {'time s':>7}")
  for noise in NOISE_PX:
    for frames in FRAMES:
      rows = []
      for seed in range(_SEEDS.value):
        observations, _, stature = synthetic_scene(rig, num_frames=frames,
                                                   num_people=_PEOPLE.value, noise_px=noise,
                                                   seed=seed)
        start = time.perf_counter()
        result = pc.estimate_extrinsics(observations, rig.cameras, person_height_mm=stature)
        elapsed = time.perf_counter() - start
        similar = rig_comparison.compare_rigs(result.rig, rig)
        rigid = rig_comparison.compare_rigs(result.rig, rig, with_scale=False)
        rows.append([similar["max_rotation_deg"], similar["max_center_percent"],
                     rigid["max_center_percent"], 100 * abs(1 / similar["scale"] - 1),
                     max(result.reprojection_error_px.values()), elapsed])
      mean = np.mean(rows, axis=0)
      print(f"{noise:8.1f} {frames:6d} {mean[0]:8.4f} {mean[1]:9.4f} {mean[2]:8.3f} "
            f"{mean[3]:8.3f} {mean[4]:9.3f} {mean[5]:7.2f}")


if __name__ == "__main__":
  app.run(main)
