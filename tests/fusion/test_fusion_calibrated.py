"""Calibrated (zero-shot) theta on the real Human3.6M rig: rows lie on epipolar lines."""

import numpy as np
import pytest

from mf_tf.fusion import calibrated
from mf_tf.fusion import layers
from mf_tf.fusion import ops
from mf_tf.geometry import calibration
from mf_tf.geometry import epipolar
from mf_tf.geometry import volume


@pytest.fixture(scope="module")
def h36m_rig(shared_data):
  path = shared_data / "h36m" / "cameras.json"
  if not path.is_file():
    pytest.skip(f"{path} is missing")
  return calibration.read_h36m(path, subject="S9")


def _argmax(heatmaps):
  """[..., H, W, J] -> [..., J, 2] (x, y) of each channel's maximum, in NumPy."""
  heatmaps = np.asarray(heatmaps)
  height, width, joints = heatmaps.shape[-3:]
  flat = heatmaps.reshape(heatmaps.shape[:-3] + (height * width, joints)).argmax(axis=-2)
  return np.stack([flat % width, flat // width], axis=-1).astype(np.float64)


@pytest.mark.parametrize("size", [16, (12, 16)])
def test_calibrated_rows_follow_epipolar_lines(h36m_rig, size):
  omega, theta = calibrated.calibrated_parameters(h36m_rig, size, width_px=0.7)
  height, width = ops.heatmap_hw(size)
  assert theta.shape == (12, height * width, 6)
  matrices = ops.affine_matrices(omega, theta).numpy()
  fundamental = epipolar.pair_fundamental_matrices(h36m_rig, size)
  distance, crosses = calibrated.row_line_distance(fundamental, size, matrices.argmax(axis=-1))
  assert crosses.mean() > 0.5  # Most target pixels see their epipolar line in the other view.
  assert distance[crosses].max() <= 1.0, distance[crosses].max()
  # Every source pixel on the line (within 0.5 px, away from the border) gets a real weight.
  rows_on_line = matrices[crosses].max(axis=-1)
  assert np.median(rows_on_line) > 0.5


def test_metafuse_zero_recovers_an_occluded_joint(h36m_rig):
  """A distractor beats the true peak in one view; calibrated fusion restores the true argmax."""
  size = 32
  centre = volume.axes_meeting_point(h36m_rig)  # Where the cameras look, world mm.
  offsets = np.array([[0, 0, 0], [300, -200, 400], [-250, 150, -500], [100, 350, 200],
                      [-300, -300, 100], [200, 100, -300]], np.float64)
  points = centre + offsets  # A body-sized spread of 3D "joints".
  num_views, num_joints = h36m_rig.num_views, len(points)
  rows, cols = np.mgrid[:size, :size]
  heatmaps = np.zeros((1, num_views, size, size, num_joints), np.float32)
  truth = np.zeros((num_views, num_joints, 2))
  for view, camera in enumerate(h36m_rig.cameras):
    uv, _ = camera.project(points, distort=False)
    xy = uv * np.array([size / camera.width, size / camera.height])
    truth[view] = xy
    for joint, (x, y) in enumerate(xy):
      heatmaps[0, view, :, :, joint] = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * 1.5 ** 2))
  # View 0: the true peak drops to 0.5 and a distractor of 1.0 appears 8 px away.
  distractor = truth[0] + np.array([8.0, -6.0])
  distractor = np.clip(distractor, 2, size - 3)
  for joint in range(num_joints):
    x, y = distractor[joint]
    heatmaps[0, 0, :, :, joint] = 0.5 * heatmaps[0, 0, :, :, joint] + np.exp(
        -((cols - x) ** 2 + (rows - y) ** 2) / (2 * 1.5 ** 2))
  layer = layers.AffineFusion(num_views, size)
  layer.assign_parameters(*calibrated.calibrated_parameters(h36m_rig, size, value=0.3))
  fused = layer(heatmaps).numpy()
  before = _argmax(heatmaps)[0]  # [V, J, 2]
  after = _argmax(fused)[0]
  error_before = np.linalg.norm(before[0] - truth[0], axis=-1)
  error_after = np.linalg.norm(after - truth, axis=-1)
  assert error_before.min() > 4.0
  assert error_after[0].max() <= 1.5, error_after[0]
  assert error_after[1:].max() <= 1.5  # The clean views stay right.
