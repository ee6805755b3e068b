"""SimpleBaseline 2D pose backbones: an image trunk plus three deconvolutions to joint heatmaps.

Xiao, Wu, Wei, "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018 (the
estimator MetaFuse builds on, paper Sec. 5.1): ResNet50 at stride 32, then three transposed
convolutions (256 filters, 4x4, stride 2, batch norm, ReLU) back to stride 4, then a 1x1
convolution to one heatmap per joint. A 256x256 image gives 64x64 heatmaps.

Backbones take float32 images in [0, 255] (channels last) and rescale them to [-1, 1] inside the
model, so serving and the data pipeline feed raw pixel values. Trunks start from `weights=None`
(nothing is downloaded); `load_backbone_weights` loads a local weights file.

`BACKBONES` maps a name to its builder: "resnet50" is the paper's, "mobilenetv2_035" (MobileNetV2,
width 0.35, 64-filter deconvolutions) is the light one for CI and quick runs on a CPU.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import keras

_STRIDE = 32  # Output stride of every trunk below; the three deconvolutions bring it to 4.


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """How to build one named backbone.

  Attributes:
    trunk: Builds the headless image trunk from `input_shape` [S, S, 3].
    deconv_filters: Filters of each of the three deconvolution layers.
  """

  trunk: Callable[[tuple[int, int, int]], keras.Model]
  deconv_filters: int


def _resnet50(input_shape):
  return keras.applications.ResNet50(include_top=False, weights=None, input_shape=input_shape)


def _mobilenetv2_035(input_shape):
  return keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                        input_shape=input_shape)


BACKBONES = {
    "resnet50": BackboneSpec(trunk=_resnet50, deconv_filters=256),
    "mobilenetv2_035": BackboneSpec(trunk=_mobilenetv2_035, deconv_filters=64),
}


def build_backbone(name: str, image_size: int, num_joints: int,
                   weights: str | None = None) -> keras.Model:
  """Builds a SimpleBaseline pose network.

  Args:
    name: A key of `BACKBONES`.
    image_size: Input side S in pixels; a multiple of 32. Heatmaps are S/4 x S/4.
    num_joints: Number of heatmap channels J.
    weights: Optional local weights file, loaded by `load_backbone_weights`.

  Returns:
    A functional `keras.Model` named "backbone" mapping images [B, S, S, 3] (float32, 0..255) to
    heatmaps [B, S/4, S/4, J] float32. Its trunk is the nested layer named "trunk".
  """
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
  if image_size <= 0 or image_size % _STRIDE:
    raise ValueError(f"image_size must be a positive multiple of {_STRIDE}, got {image_size}")
  if num_joints <= 0:
    raise ValueError(f"num_joints must be positive, got {num_joints}")
  spec = BACKBONES[name]
  images = keras.Input((image_size, image_size, 3), name="images")
  x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(images)
  trunk = spec.trunk((image_size, image_size, 3))
  trunk.name = "trunk"
  x = trunk(x)
  for i in range(3):
    x = keras.layers.Conv2DTranspose(spec.deconv_filters, 4, strides=2, padding="same",
                                     use_bias=False, name=f"deconv{i}")(x)
    x = keras.layers.BatchNormalization(name=f"deconv{i}_bn")(x)
    x = keras.layers.ReLU(name=f"deconv{i}_relu")(x)
  heatmaps = keras.layers.Conv2D(num_joints, 1, name="heatmaps")(x)
  model = keras.Model(images, heatmaps, name="backbone")
  if weights is not None:
    load_backbone_weights(model, weights)
  return model


def load_backbone_weights(model: keras.Model, path: str) -> str:
  """Loads a local weights file into a backbone, whole or trunk only.

  The file is first tried against the whole backbone (a file written by `model.save_weights`),
  then against its trunk alone (e.g. ImageNet weights of the headless ResNet50, as shipped for
  `keras.applications`).

  Args:
    model: A model from `build_backbone`.
    path: A `.weights.h5` (Keras 3) or legacy `.h5` weights file.

  Returns:
    "backbone" or "trunk": the part the weights were loaded into.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: The file matches neither the backbone nor its trunk.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"backbone weights file {path!r} does not exist")
  if not path.endswith(".h5"):
    raise ValueError(f"backbone weights file {path!r}: expected a .weights.h5 or .h5 file")
  errors = []
  targets = [("backbone", model)]
  try:
    targets.append(("trunk", model.get_layer("trunk")))
  except ValueError:
    pass
  for part, target in targets:
    try:
      target.load_weights(path)
      return part
    except Exception as error:  # Keras raises ValueError or h5py errors; report them all below.
      errors.append(f"{part}: {type(error).__name__}: {str(error)[:300]}")
  raise ValueError(f"backbone weights file {path!r} does not match model {model.name!r} "
                   f"(tried {', '.join(p for p, _ in targets)}):\n  " + "\n  ".join(errors))
