r"""TFLite backbone for edge devices: SavedModel -> .tflite (fp32, fp16, int8), run with LiteRT.

    python -m mf_tf.main --mode=tflite --workdir=/tmp/mf_tf [--config.tflite.quant_type=int8]

The edge device runs the per-view backbone (images -> heatmaps); fusion and triangulation stay on
the server, which takes heatmaps through the `heatmaps` signature of the rig's SavedModel.

The backbone's SavedModel has one signature, `serving_default`: images float32 [1, S, S, 3] with
values in [0, 255] -> {"heatmaps": [1, H, W, J]}. Quantization (`quant_type`):
  fp32  plain conversion;
  fp16  weights stored as float16 (half the size), computed in float32 on CPUs;
  int8  full-integer: int8 weights and activations with ranges calibrated on representative
        images (`representative_images`), builtin int8 kernels only; the interface stays float32
        (quantize / dequantize at the edges), so callers feed the same pixels as to Keras.

Agreement with Keras is reported as the mean distance, in heatmap pixels, between the keypoints
decoded from both models' heatmaps. It is meaningful on a trained backbone, whose heatmaps have
one clear peak per joint (target for int8: at most 1 px); an untrained network's flat heatmaps
turn small quantization errors into jumps of the argmax.
"""

from __future__ import annotations

import glob
import time

import numpy as np
import tensorflow as tf

from mf_tf.data.codec import HeatmapCodec
from mf_tf.serving.graph_utils import Untracked, graph_variables

QUANT_TYPES = ("fp32", "fp16", "int8")


class BackboneModule(tf.Module):
  """The backbone alone with a fixed-size float32 signature, the input of the TFLite converter.

  Args:
    backbone: Keras model, images [N, S, S, 3] float32 in [0, 255] -> heatmaps [N, H, W, J].
    batch_size: Static batch size of the signature (1 for edge devices).
  """

  def __init__(self, backbone, batch_size: int = 1, name: str | None = None):
    super().__init__(name=name)
    self._keras = Untracked(backbone=backbone)
    size = int(backbone.input_shape[1])
    self.serve = tf.function(
        self._serve,
        input_signature=[tf.TensorSpec([int(batch_size), size, size, 3], tf.float32, "images")])
    self.graph_variables = graph_variables([self.serve])

  def _serve(self, images):
    return {"heatmaps": self._keras.backbone(images, training=False)}


def export_backbone_saved_model(backbone, path: str, batch_size: int = 1) -> str:
  """Saves the backbone as a SavedModel with one `serving_default` signature (see module doc)."""
  module = BackboneModule(backbone, batch_size)
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
  return path


def _representative_dataset(images):
  def generate():
    for image in images:
      yield [np.asarray(image, np.float32)[None]]
  return generate


def convert_tflite_model(saved_model_dir: str, quant_type: str = "fp32",
                         representative_images=None) -> bytes:
  """Converts a backbone SavedModel to a TFLite flatbuffer.

  Args:
    saved_model_dir: SavedModel with a `serving_default` signature (`export_backbone_saved_model`).
    quant_type: "fp32", "fp16" or "int8" (see the module docstring).
    representative_images: int8 only: [N, S, S, 3] images (uint8 or float32 in [0, 255]) that
      look like the deployment's inputs (real or rendered frames), N >= 1, typically 32-200.

  Returns:
    The .tflite model bytes.

  Raises:
    ValueError: Unknown `quant_type`, or int8 without representative images.
  """
  if quant_type not in QUANT_TYPES:
    raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
  if quant_type == "fp16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quant_type == "int8":
    if representative_images is None or len(representative_images) == 0:
      raise ValueError("quant_type='int8' needs representative_images [N, S, S, 3] to calibrate "
                       "activation ranges; got none")
    images = np.asarray(representative_images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"representative_images must be [N, S, S, 3], got shape {images.shape}")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative_dataset(images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  return converter.convert()


class TFLiteBackbone:
  """Runs a converted backbone with the LiteRT interpreter (`ai_edge_litert`).

  Args:
    model_content: .tflite bytes from `convert_tflite_model`.
    num_threads: Interpreter threads.
  """

  def __init__(self, model_content: bytes, num_threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter  # Heavy import, only when used.

    self.interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
    self.interpreter.allocate_tensors()
    (self._input,) = self.interpreter.get_input_details()
    (self._output,) = self.interpreter.get_output_details()
    self.image_size = int(self._input["shape"][1])

  def __call__(self, images) -> np.ndarray:
    """images [N, S, S, 3] (uint8 or float in [0, 255]) -> heatmaps [N, H, W, J] float32."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(f"images must be [N, {self.image_size}, {self.image_size}, 3], got "
                       f"{images.shape}")
    outputs = []
    for image in images:  # The edge model has batch size 1.
      self.interpreter.set_tensor(self._input["index"], image[None])
      self.interpreter.invoke()
      outputs.append(self.interpreter.get_tensor(self._output["index"])[0].copy())
    return np.stack(outputs)


def compare_with_keras(backbone, model_content: bytes, images, num_threads: int | None = None,
                       repeats: int = 3, sigma: float = 2.0) -> dict:
  """Size, per-image latency and keypoint agreement of a TFLite backbone against Keras.

  Args:
    backbone: The Keras backbone the TFLite model was converted from.
    model_content: .tflite bytes.
    images: [N, S, S, 3] evaluation images.
    num_threads: Interpreter threads.
    repeats: Timed passes over the images (after one warm-up pass).
    sigma: Heatmap codec sigma.

  Returns:
    dict: size_bytes; latency_ms_median / latency_ms_min / latency_ms_max per image;
    keypoint_diff_px_mean / _max (heatmap pixels, decoded keypoints); heatmap_abs_diff_max;
    heatmap_correlation (Pearson, over all heatmap values).
  """
  images = np.asarray(images, np.float32)
  runner = TFLiteBackbone(model_content, num_threads)
  lite = runner(images)  # Warm-up pass, also the output compared.
  times = []
  for _ in range(int(repeats)):
    for image in images:
      start = time.perf_counter()
      runner(image[None])
      times.append(1000.0 * (time.perf_counter() - start))
  reference = backbone(images, training=False).numpy()
  codec = HeatmapCodec(reference.shape[1], sigma)
  coords_ref, _ = codec.decode(reference)
  coords_lite, _ = codec.decode(lite)
  distance = np.linalg.norm(coords_ref.numpy() - coords_lite.numpy(), axis=-1)
  return {
      "size_bytes": len(model_content),
      "latency_ms_median": float(np.median(times)),
      "latency_ms_min": float(np.min(times)),
      "latency_ms_max": float(np.max(times)),
      "keypoint_diff_px_mean": float(distance.mean()),
      "keypoint_diff_px_max": float(distance.max()),
      "heatmap_abs_diff_max": float(np.abs(reference - lite).max()),
      "heatmap_correlation": _correlation(reference, lite),
  }


def _correlation(a, b) -> float:
  """Pearson correlation of all values; NaN when either side is constant (e.g. all zero)."""
  a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
  norm = float(np.linalg.norm(a) * np.linalg.norm(b))
  return float(a @ b / norm) if norm > 0 else float("nan")


def load_images(pattern: str, image_size: int, limit: int) -> np.ndarray:
  """Up to `limit` images matching a glob, each whole frame resized to S x S: uint8 [N, S, S, 3]."""
  paths = sorted(glob.glob(pattern))[:int(limit)]
  if not paths:
    raise FileNotFoundError(f"no image file matches {pattern!r}")
  images = []
  for path in paths:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    images.append(tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8).numpy())
  return np.stack(images)


