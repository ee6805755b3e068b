"""The fuse_crops signature: person-crop heatmaps + crop affines -> fused joints in 2D and 3D."""

import numpy as np
import pytest
import tensorflow as tf
from config_settings import batching_settings
from serving_test_helpers import NUM_JOINTS, trained_like_fusion

from mf_tf.data.codec import HeatmapCodec
from mf_tf.geometry import crops
from mf_tf.geometry.rigs import get_rig
from mf_tf.serving import export

CROP = export.CROP_HEATMAP_SIZE
SIGMA = 2.0  # Crop heatmap Gaussians, crop heatmap px.
BATCH = 2


@pytest.fixture(scope="module")
def crops_model(tmp_path_factory, small_backbone):
  """Three Human3.6M cameras (lens distortion included) exported with the small backbone."""
  rig = get_rig("h36m").subset([0, 1, 2], name="h36m3")
  path = export.export_rig(small_backbone, trained_like_fusion().materialize(), rig,
                           str(tmp_path_factory.mktemp("export_crops")), warmup=False,
                           batching=batching_settings())
  return rig, tf.saved_model.load(path).signatures["fuse_crops"]


def _scene(rig, seed=0):
  """Known joints seen through a randomly rotated and scaled crop per view.

  Returns:
    points: [B, J, 3] world mm; affines: [B, V, 3, 3] undistorted image px -> crop px;
    crop_points: [B, V, J, 2] the joints in crop px; sizes: [B, V] crop sides, image px.
  """
  rng = np.random.default_rng(seed)
  points = np.array([0.0, 0.0, 1000.0]) + rng.uniform(-250.0, 250.0, (BATCH, NUM_JOINTS, 3))
  affines = np.zeros((BATCH, rig.num_views, 3, 3))
  undistorted = np.zeros((BATCH, rig.num_views, NUM_JOINTS, 2))
  sizes = rng.uniform(450.0, 650.0, (BATCH, rig.num_views))
  for b in range(BATCH):
    for v, camera in enumerate(rig.cameras):
      undistorted[b, v] = camera.project(points[b], distort=False)[0]
      center = undistorted[b, v].mean(axis=0) + rng.uniform(-20.0, 20.0, 2)
      affines[b, v] = crops.roi_affine(center, sizes[b, v], rng.uniform(-0.7, 0.7), CROP)
  return points, affines, crops.apply_affine(affines, undistorted), sizes


def _heatmaps(crop_points):
  """[B, V, C, C, J] exact Gaussians (peak 1) at the given crop pixels."""
  return HeatmapCodec(CROP, SIGMA).encode(crop_points)[0].numpy()


def _call(signature, heatmaps, affines):
  out = signature(crop_heatmaps=tf.constant(heatmaps, tf.float32),
                  crop_affines=tf.constant(affines, tf.float32))
  return {key: value.numpy() for key, value in out.items()}


def _image_points(rig, points):
  """[B, V, J, 2] raw (distorted) image pixels of world points [B, J, 3]."""
  return np.stack([camera.project(points)[0] for camera in rig.cameras], axis=1)


def test_fuse_crops_recovers_known_joints(crops_model):
  rig, signature = crops_model
  points, affines, crop_points, sizes = _scene(rig)
  assert np.all((crop_points > 2) & (crop_points < CROP - 3))  # Peaks inside the crops.
  got = _call(signature, _heatmaps(crop_points), affines)
  assert got["joints_2d"].shape == (BATCH, rig.num_views, NUM_JOINTS, 2)
  assert got["scores"].shape == (BATCH, rig.num_views, NUM_JOINTS)
  assert got["joints_3d"].shape == (BATCH, NUM_JOINTS, 3)
  # The other views' lines through the peak pull its sub-pixel refinement by up to 0.3 crop
  # heatmap px (measured; 1 crop px is 7-10 image px here); 0.4 px, in image pixels.
  error_2d = np.linalg.norm(got["joints_2d"] - _image_points(rig, points), axis=-1)
  assert np.all(error_2d < 0.4 * sizes[..., None] / CROP), error_2d
  np.testing.assert_array_less(np.linalg.norm(got["joints_3d"] - points, axis=-1), 20.0)
  assert np.all(got["scores"] > 1.5)  # Each view's peak plus the lines of the others.


def test_without_lines_the_crop_geometry_is_exact(crops_model, small_backbone):
  """line_value 0: decode, inverse crop affine, lens distortion and DLT alone, exact."""
  rig, _ = crops_model
  module = export.ExportModule(small_backbone, trained_like_fusion().materialize(), rig,
                               line_value=0.0)
  points, affines, crop_points, _ = _scene(rig, seed=2)
  got = module.serve_crops(tf.constant(_heatmaps(crop_points)), tf.constant(affines, tf.float32))
  np.testing.assert_allclose(got["joints_2d"].numpy(), _image_points(rig, points), atol=0.01)
  np.testing.assert_allclose(got["joints_3d"].numpy(), points, atol=0.05)
  # The peak sample of a Gaussian centred between pixels (sigma 2): within 0.5 px, > 0.94.
  assert np.all((got["scores"].numpy() > 0.94) & (got["scores"].numpy() <= 1.0))


def _line(rig, affines, frame, source, target, points):
  """Epipolar lines [N, 3] in target's crop of source crop points [N, 2]."""
  F_crop = crops.crop_fundamental_matrix(rig.cameras[source], rig.cameras[target],
                                         affines[frame, source], affines[frame, target])
  homogeneous = np.concatenate([points, np.ones_like(points[:, :1])], axis=-1)
  return homogeneous @ F_crop.T


def test_fusion_corrects_a_distractor(crops_model):
  """One view's peak moved far away: the other two views' lines bring its joint back.

  With three views, the distractor's own epipolar line in another view crosses the third view's
  line there at a phantom point that gathers two line sums, as much as the true peak gets (its
  own value and one line); the distractor is placed so that this crossing falls outside the crop.
  """
  rig, signature = crops_model
  points, affines, crop_points, sizes = _scene(rig, seed=1)
  frame, view, joint = 0, 1, 2
  moved = crop_points.copy()
  candidates = np.stack(np.meshgrid(np.arange(6.0, CROP - 6), np.arange(6.0, CROP - 6)),
                        -1).reshape(-1, 2)
  # Far from the truth (> 20 crop px) and from the epipolar lines of the other two views.
  keep = np.linalg.norm(candidates - crop_points[frame, view, joint], axis=-1) > 20.0
  others = [v for v in range(rig.num_views) if v != view]
  for source in others:
    line = _line(rig, affines, frame, source, view, crop_points[frame, source, joint][None])[0]
    keep &= np.abs(candidates @ line[:2] + line[2]) / np.linalg.norm(line[:2]) > 10.0
  for target, third in (others, others[::-1]):
    crossing = np.cross(_line(rig, affines, frame, view, target, candidates),
                        _line(rig, affines, frame, third, target,
                              crop_points[frame, third, joint][None]))
    with np.errstate(divide="ignore", invalid="ignore"):
      xy = crossing[:, :2] / crossing[:, 2:]
    keep &= ~np.all((xy > -10.0) & (xy < CROP + 10.0), axis=-1)
  assert keep.any()
  moved[frame, view, joint] = candidates[np.flatnonzero(keep)[0]]
  heatmaps = _heatmaps(moved)
  decoded = HeatmapCodec(CROP, SIGMA).decode(heatmaps)[0].numpy()
  np.testing.assert_allclose(decoded[frame, view, joint], moved[frame, view, joint], atol=1e-3)

  got = _call(signature, heatmaps, affines)
  truth = _image_points(rig, points)[frame, view, joint]
  # Without fusion the joint would be > 20 crop px (> 140 image px) away; fused, it is back.
  error = np.linalg.norm(got["joints_2d"][frame, view, joint] - truth)
  assert error < 1.0 * sizes[frame, view] / CROP, error
  np.testing.assert_array_less(np.linalg.norm(got["joints_3d"] - points, axis=-1), 20.0)


@pytest.mark.parametrize("heatmap_shape, affine_shape, message", [
    ((1, 3, 32, 32, NUM_JOINTS), (1, 3, 3, 3), "crop_heatmaps must be [batch, views, C, C, J]"),
    ((1, 3, CROP, CROP, NUM_JOINTS), (1, 2, 3, 3), "crop_affines must be [batch, views, 3, 3]"),
    ((2, 3, CROP, CROP, NUM_JOINTS), (1, 3, 3, 3), "the same number of frames"),
])
def test_bad_crop_inputs_name_the_expected_shapes(crops_model, heatmap_shape, affine_shape,
                                                  message):
  _, signature = crops_model
  affines = np.broadcast_to(np.eye(3), affine_shape)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message.replace("[", r"\[")):
    _call(signature, np.zeros(heatmap_shape), affines)


def test_singular_affine_is_refused(crops_model):
  _, signature = crops_model
  affines = np.broadcast_to(np.diag([1.0, 0.0, 1.0]), (1, 3, 3, 3))
  with pytest.raises(tf.errors.InvalidArgumentError, match="invertible affine maps"):
    _call(signature, np.zeros((1, 3, CROP, CROP, NUM_JOINTS)), affines)
