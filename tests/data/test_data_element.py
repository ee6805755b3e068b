"""The training element shared by the TFRecord and TFDS inputs: recipe choices and one frame."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.data import element
from mf_tf.data.codec import HeatmapCodec

SIZE = 16
STORED = ("frame_index", "joints3d", "joints2d", "visibility", "head_size", "peaks",
          "amplitudes", "noise_seed", "images")
PER_VIEW = ("joints2d", "visibility", "head_size", "peaks", "amplitudes", "images")
DETECTOR = {"sigma": 1.0, "noise_level": 0.0}


def _recipe(**request):
  options = dict(with_images=False, render_heatmaps=True, views=None, target_sigma=1.5,
                 where="dataset test")
  options.update(request)
  return element.make_recipe(STORED, PER_VIEW, 3, SIZE, DETECTOR, **options)


def test_recipe_reads_only_what_is_requested():
  recipe = _recipe()
  assert "images" not in recipe.keys and "peaks" in recipe.keys
  assert recipe.detector == (1.0, 0.0) and recipe.views is None
  assert recipe.codec.heatmap_size == SIZE and recipe.codec.sigma == 1.5
  plain = _recipe(render_heatmaps=False, with_images=True, views=[2, 0])
  assert plain.keys == ("frame_index", "joints3d", "joints2d", "visibility", "head_size",
                        "images")
  assert plain.detector is None and plain.views == (2, 0)


def test_recipe_errors_name_the_dataset():
  with pytest.raises(ValueError, match=r"views=\[3\]: expected distinct view indices in "
                                       r"\[0, 3\) for the 3-view dataset test"):
    _recipe(views=[3])
  with pytest.raises(ValueError, match=r"dataset test: the 'detector' metadata lacks "
                                       r"\['noise_level'\]"):
    element.make_recipe(STORED, PER_VIEW, 3, SIZE, {"sigma": 1.0}, with_images=False,
                        render_heatmaps=True, views=None, target_sigma=2.0, where="dataset test")


def test_element_gathers_views_renders_and_encodes():
  rng = np.random.default_rng(0)
  joints2d = rng.uniform(1.0, SIZE - 2.0, (3, 4, 2)).astype(np.float32)
  visibility = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]], np.float32)
  frame = {
      "frame_index": tf.constant(7, tf.int64), "joints3d": tf.zeros([4, 3], tf.float64),
      "joints2d": tf.constant(joints2d), "visibility": tf.constant(visibility),
      "head_size": tf.constant([3.0, 4.0, 5.0]),
      "peaks": tf.constant(joints2d[:, :, None, :]), "amplitudes": tf.ones([3, 4, 1]),
      "noise_seed": tf.constant(11, tf.int64)}
  out = element.to_element(_recipe(views=[2, 0]), frame)
  assert out["joints3d"].dtype == tf.float32 and out["frame_index"].numpy() == 7
  np.testing.assert_array_equal(out["head_size"].numpy(), [5.0, 3.0])
  assert out["heatmaps"].shape == (2, SIZE, SIZE, 4)
  # Noise-free rendering of one unit peak per joint puts each maximum on the joint's pixel.
  peak = out["heatmaps"].numpy().reshape(2, SIZE * SIZE, 4).argmax(axis=1)
  np.testing.assert_array_equal(
      np.stack([peak % SIZE, peak // SIZE], -1), np.rint(joints2d[[2, 0]]).astype(int))
  targets, weights = HeatmapCodec(SIZE, 1.5).encode(joints2d[[2, 0]], visibility[[2, 0]])
  np.testing.assert_allclose(out["target_heatmaps"].numpy(), targets.numpy())
  np.testing.assert_array_equal(out["target_weights"].numpy(), weights.numpy())
  assert sorted(frame) == sorted(STORED[:-1])  # The input frame is left as it was.
