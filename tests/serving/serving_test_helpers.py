"""Small rigs, fusion and shapes shared by the serving tests (S 64, H 16, 3 views, 4 joints)."""

import keras
import numpy as np

from mf_tf.fusion.layers import AffineFusion
from mf_tf.geometry.camera import Camera
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.rigs import ring_rig

IMAGE_SIZE = 64
HEATMAP_SIZE = 16
NUM_VIEWS = 3
NUM_JOINTS = 4
TOP_K = 32
DISTORTION = np.array([-0.21, 0.12, 1.5e-3, -1.0e-3, -0.02])  # Realistic (Human3.6M-like) lens.


def distorted_rig(name: str = "toy3", num_views: int = NUM_VIEWS) -> Rig:
  """A ring of cameras with lens distortion, 640x480 images."""
  ring = ring_rig(num_views, seed=3, image_size=(640, 480))
  cameras = [Camera(c.name, c.K, c.R, c.t, DISTORTION * (1.0 + 0.1 * i), c.width, c.height)
             for i, c in enumerate(ring.cameras)]
  return Rig(name, cameras, up=ring.up, floor=ring.floor)


def trained_like_fusion(num_views: int = NUM_VIEWS, seed: int = 0) -> AffineFusion:
  """An AffineFusion with perturbed theta, so every fusion matrix is distinct and non-zero."""
  fusion = AffineFusion(num_views, HEATMAP_SIZE, name="fusion")
  fusion.build((None, num_views, HEATMAP_SIZE, HEATMAP_SIZE, NUM_JOINTS))
  rng = np.random.default_rng(seed)
  theta = fusion.theta.numpy() + 0.05 * rng.standard_normal(fusion.theta.shape)
  fusion.assign_parameters(omega_base=fusion.omega_base.numpy() * 4.0, theta=theta)
  return fusion


def set_batch_norm_statistics(model, images) -> None:
  """Sets every BatchNormalization's moving mean/variance to its batch statistics on `images`.

  A freshly initialized network has moving variance 1 everywhere, which shrinks activations by
  orders of magnitude per block (heatmaps of ~1e-11); with statistics from real inputs the
  activations have the scale of a trained network, which quantization tests need.
  """
  layers = [layer for layer in _all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]
  momenta = [layer.momentum for layer in layers]
  for layer in layers:
    layer.momentum = 0.0
  model(np.asarray(images, np.float32), training=True)
  for layer, momentum in zip(layers, momenta):
    layer.momentum = momentum


def _all_layers(model):
  for layer in model.layers:
    yield layer
    if hasattr(layer, "layers"):
      yield from _all_layers(layer)


def smooth_images(count: int, seed: int = 0) -> np.ndarray:
  """Image-like uint8 [count, S, S, 3]: upsampled colour noise plus fine noise."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (count, IMAGE_SIZE // 8, IMAGE_SIZE // 8, 3))
  fine = rng.normal(0, 10, (count, IMAGE_SIZE, IMAGE_SIZE, 3))
  return np.clip(np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2) + fine, 0, 255).astype(
      np.uint8)
