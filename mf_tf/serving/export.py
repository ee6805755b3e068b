r"""Per-rig serving export: one SavedModel per rig in TF Serving's layout.

`export_rig` (--mode=export: `mf_tf.modes.export`) writes

    <export_dir>/models.config                         ModelServerConfig listing every rig
    <export_dir>/batching_parameters                   BatchingParameters (`serving.batching`)
    <export_dir>/<rig>/<version>/saved_model.pb        signatures below
    <export_dir>/<rig>/<version>/variables/            backbone weights, fusion matrices
    <export_dir>/<rig>/<version>/assets.extra/rig.json, export_config.json,
                                               tf_serving_warmup_requests

Signatures (V views, S x S images, H x W heatmaps, J joints; B any batch size):

  serving_default   images  uint8   [B, V, S, S, 3]         raw pixels, whole camera frames
  serving_float32   images  float32 [B, V, S, S, 3]         values in [0, 255]
  heatmaps          heatmaps float32 [B, V, H, W, J]        initial heatmaps (skip the backbone)
  fuse_crops        crop_heatmaps float32 [B, V, C, C, J]   person-crop heatmaps (C = 64), with
                    crop_affines  float32 [B, V, 3, 3]      undistorted image px -> crop heatmap px

returning

  initial_heatmaps [B, V, H, W, J]   backbone output (images signatures only)
  fused_heatmaps   [B, V, H, W, J]   paper Eq. 1, before the temperature softmax
  keypoints_heatmap [B, V, J, 2]     fused joints, heatmap pixels (x = column, y = row)
  keypoints_image  [B, V, J, 2]      fused joints, pixels of each camera's image (distorted)
  scores           [B, V, J]         softmax_T peak probability per joint (`fusion.readout`, the
                                     evaluation's read-out; T = the fusion layer's temperature)
  initial_keypoints_heatmap [B, V, J, 2], initial_scores [B, V, J]   the same before fusion
  joints_3d        [B, J, 3]         calibrated rigs: DLT triangulation in world millimetres

and, for fuse_crops (real images seen through one rotated square crop per view, e.g.
`mf_tf.models.blazepose.BlazePose.estimate` given each view's camera),

  joints_2d        [B, V, J, 2]      fused joints, pixels of each camera's image (distorted)
  scores           [B, V, J]         fused crop heatmap maximum per joint
  joints_3d        [B, J, 3]         DLT triangulation in world millimetres (when triangulating)

fuse_crops fuses with the calibrated epipolar lines of the exact per-frame crop geometry,
F_crop = A_v^-T F A_u^-1 per ordered pair (`mf_tf.geometry.crops.crop_fundamental_matrix`), built
in the graph from the rig's pair fundamental matrices (`mf_tf.geometry.tf_geometry`), then
evaluated line by line (`mf_tf.fusion.epipolar_fusion`). The crop affines act on UNDISTORTED image
pixels, as `mf_tf.geometry.crops` documents (crops sampled from the undistorted image), so F_crop
is exact.

Fusion matrices are materialized once at export (no warping at serve time): dense [P, HW, HW], or
the top-k entries per row as one sparse [HW, V*HW] matrix per target view
(`mf_tf.fusion.sparse.fuse_sparse_blocks`). The rig's calibration is baked in as constants;
keypoints are undistorted in TF before triangulation (`mf_tf.geometry.tf_geometry`). Inputs are
checked inside the graph (view count, image size, value range, NaN: `mf_tf.serving.input_checks`),
so a bad request fails with InvalidArgument and a message naming the bad value. A version is
written to a temporary folder beside its final place and renamed, so a running server never sees
half a model; models.config is replaced atomically. Temporary folders left by a killed export are
removed by the next export of the rig (`mf_tf.files.remove_stale_temporaries`). Fusion parameters
that are not finite (or a theta over MAX_ABS_THETA, see `check_fusion_parameters`) are refused
before anything is written. Folders are written 0755 and files 0644 whatever the umask, so a TF
Serving container running as another user can read them. The SavedModel holds graphs and tensors
only: loading it runs no Python code from the file.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from mf_tf import files
from mf_tf.data.codec import HeatmapCodec
from mf_tf.fusion import epipolar_fusion
from mf_tf.fusion import readout
from mf_tf.fusion import sparse as fusion_sparse
from mf_tf.fusion.layers import MaterializedFusion
from mf_tf.geometry import calibration
from mf_tf.geometry import epipolar
from mf_tf.geometry import tf_geometry
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.triangulation import triangulate_dlt
from mf_tf.serving import batching as batching_lib
from mf_tf.serving import input_checks
from mf_tf.serving import model_config
from mf_tf.serving.graph_utils import Untracked, graph_variables

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_IMAGES_FLOAT = "serving_float32"
SIGNATURE_HEATMAPS = "heatmaps"
SIGNATURE_CROPS = "fuse_crops"
CROP_HEATMAP_SIZE = 64  # Side of a person crop's heatmaps (`mf_tf.models.blazepose`).
ASSETS_EXTRA = model_config.ASSETS_EXTRA
WARMUP_FILE = model_config.WARMUP_FILE
RIG_FILE = "rig.json"
EXPORT_CONFIG_FILE = model_config.EXPORT_CONFIG_FILE
# Largest |theta| served. theta maps each target pixel to a source position in normalized
# coordinates where the heatmap spans [-1, 1] (a translation of 2 is one heatmap width, a linear
# entry of 1 the identity scale); trained and calibrated values stay within a few units. At 1e3
# heatmap sizes every sample of a row falls far outside the source heatmap: the matrices are
# (nearly) zero and the served model silently fuses nothing, as after a diverged meta-training.
MAX_ABS_THETA = 1e3


def check_fusion_parameters(fusion, rig_name: str = "") -> None:
  """Refuses fusion parameters that are not finite, or a theta too large to be an alignment.

  Args:
    fusion: An AffineFusion (omega_base, theta: its effective theta) or a MaterializedFusion /
      NaiveFusion (matrices, or top-k values).
    rig_name: Named in the message.

  Raises:
    ValueError: naming the parameter, its worst value and the bound.
  """
  where = f" of rig {rig_name!r}" if rig_name else ""
  parameters = {}
  for name in ("omega_base", "matrices", "values"):
    if getattr(fusion, name, None) is not None:
      parameters[name] = getattr(fusion, name)
  if callable(getattr(fusion, "effective_theta", None)):
    parameters["theta"] = fusion.effective_theta()
  for name, value in parameters.items():
    value = np.asarray(value)
    # Row by row: a dense [P, HW, HW] fusion (768 MB at 4 views, 64 x 64) needs no full mask.
    bad = sum(int(np.size(row) - np.count_nonzero(np.isfinite(row)))
              for row in value.reshape(value.shape[0] if value.ndim else 1, -1))
    if bad:
      raise ValueError(f"fusion parameter {name!r}{where} holds NaN or Inf ({bad} of "
                       f"{value.size} values); refusing to serve it")
  if "theta" in parameters:
    largest = float(np.max(np.abs(parameters["theta"]), initial=0.0))
    if largest > MAX_ABS_THETA:
      raise ValueError(f"fusion parameter 'theta'{where} reaches |theta| = {largest:.3g}, over "
                       f"{MAX_ABS_THETA:g} heatmap sizes (normalized coordinates, the heatmap "
                       "spans [-1, 1]): no alignment, the fusion would do nothing; refusing to "
                       "serve it (retrain, e.g. with a smaller learning rate)")


# ----------------------------------------------------------------------------- module


class ExportModule(tf.Module):
  """A rig's full inference graph for serving: backbone, materialized fusion, decoding, 3D.

  Args:
    backbone: Keras model mapping images [N, S, S, 3] float32 in [0, 255] to heatmaps
      [N, H, W, J] (`mf_tf.models.backbone.build_backbone`); S, H, W, J are read from it.
    fusion: A built `mf_tf.fusion.layers.MaterializedFusion` (dense or sparse top-k) for the
      rig's V views at H x W (from `AffineFusion.materialize`).
    rig: The rig; its camera order is the view order of every input and output.
    sigma: Gaussian sigma of the heatmap codec, heatmap pixels.
    triangulate: Add `joints_3d` (DLT over every view, with the rig's calibration).
    line_width_px: fuse_crops: std of the epipolar line's cross-section, crop heatmap pixels.
    line_value: fuse_crops: peak weight on the line (`mf_tf.fusion.epipolar_fusion`).
    crop_heatmap_size: fuse_crops: side C of the crop heatmaps.
    num_lines: fuse_crops: at most this many pencil lines per pair; None:
      `epipolar_fusion.default_num_lines`.
    name: Module name.
  """

  def __init__(self, backbone, fusion, rig: Rig, *, sigma: float = 2.0, triangulate: bool = True,
               line_width_px: float = epipolar_fusion.DEFAULT_LINE_WIDTH_PX,
               line_value: float = epipolar_fusion.DEFAULT_LINE_VALUE,
               crop_heatmap_size: int = CROP_HEATMAP_SIZE, num_lines: int | None = None,
               name: str | None = None):
    super().__init__(name=name)
    image_size, heatmap_size, num_joints = _check_arguments(backbone, fusion, rig)
    self._keras = Untracked(backbone=backbone, fusion=fusion)  # Saved via graph_variables.
    if fusion.top_k is not None:  # Top-k: one sparse-dense product per target view.
      self.fusion_blocks = [
          (tf.Variable(indices, trainable=False, name=f"fusion_indices_{target}"),
           tf.Variable(values, trainable=False, name=f"fusion_values_{target}"))
          for target, (indices, values) in enumerate(fusion_sparse.sparse_fusion_blocks(
              fusion.values.numpy(), fusion.indices.numpy(), rig.num_views))]
    self.rig_name = rig.name
    self.num_views = int(rig.num_views)
    self.image_size = image_size
    self.heatmap_size = heatmap_size
    self.num_joints = num_joints
    self.top_k = fusion.top_k
    self.temperature = float(fusion.temperature)  # Read-out softmax T (`fusion.readout`).
    self.triangulate = bool(triangulate)
    self._codec = HeatmapCodec(self.heatmap_size, sigma)
    if not float(line_width_px) > 0:
      raise ValueError(f"line_width_px={line_width_px}, expected a positive width in pixels")
    self.line_width_px = float(line_width_px)
    self.line_value = float(line_value)
    self.crop_heatmap_size = int(crop_heatmap_size)
    self.num_lines = epipolar_fusion.default_num_lines(self.crop_heatmap_size, num_lines)
    self._crop_codec = HeatmapCodec(self.crop_heatmap_size, sigma)
    cameras = rig.cameras
    self._image_scale = tf.constant(
        [[c.width / self.heatmap_size, c.height / self.heatmap_size] for c in cameras],
        tf.float32)  # [V, 2]: heatmap px -> image px per camera.
    self._K = tf.constant(np.stack([c.K for c in cameras]), tf.float64)
    self._dist = tf.constant(np.stack([c.dist for c in cameras]), tf.float64)
    self._projections = tf.constant(np.stack([c.projection_matrix for c in cameras]), tf.float64)
    self._pair_fundamental = tf.constant(epipolar.pair_fundamental_matrices(rig),
                                         tf.float64)  # Undistorted image px.
    self._trace_signatures()

  def _trace_signatures(self):
    """The serving tf.functions, traced with their input signatures."""
    # Both image signatures call one traced images -> outputs function: the backbone is traced
    # (and stored in the SavedModel) once.
    self._images_to_outputs = tf.function(
        self._serve_images, input_signature=[tf.TensorSpec(
            [None, self.num_views, self.image_size, self.image_size, 3], tf.float32, "images")])
    self.serve = tf.function(
        self._serve_uint8, input_signature=[tf.TensorSpec([None] * 5, tf.uint8, "images")])
    self.serve_float32 = tf.function(
        self._serve_float32, input_signature=[tf.TensorSpec([None] * 5, tf.float32, "images")])
    self.serve_heatmaps = tf.function(
        self._serve_heatmaps, input_signature=[tf.TensorSpec([None] * 5, tf.float32, "heatmaps")])
    self.serve_crops = tf.function(
        self._serve_crops, input_signature=[
            tf.TensorSpec([None] * 5, tf.float32, "crop_heatmaps"),
            tf.TensorSpec([None] * 4, tf.float32, "crop_affines")])
    # The captured tf.Variables as SavedModel nodes of their own (see graph_utils).
    self.graph_variables = graph_variables(
        [self.serve, self.serve_float32, self.serve_heatmaps, self.serve_crops])

  def signatures(self) -> dict:
    """Signature name -> concrete function, for `tf.saved_model.save`."""
    return {
        SIGNATURE_IMAGES: self.serve.get_concrete_function(),
        SIGNATURE_IMAGES_FLOAT: self.serve_float32.get_concrete_function(),
        SIGNATURE_HEATMAPS: self.serve_heatmaps.get_concrete_function(),
        SIGNATURE_CROPS: self.serve_crops.get_concrete_function(),
    }

  # -- graph pieces

  def _backbone(self, images):
    """[B, V, S, S, 3] float32 in [0, 255] -> [B, V, H, W, J]."""
    batch = tf.shape(images)[0]
    s = self.image_size
    flat = tf.reshape(images, [-1, s, s, 3])
    heatmaps = self._keras.backbone(flat, training=False)
    h, j = self.heatmap_size, self.num_joints
    return tf.reshape(heatmaps, [batch, self.num_views, h, h, j])

  def fuse(self, heatmaps):
    """Paper Eq. 1 with this module's constants: [B, V, H, W, J] -> [B, V, H, W, J]."""
    if self.top_k is None:
      return self._keras.fusion(heatmaps)
    return fusion_sparse.fuse_sparse_blocks(heatmaps, self.fusion_blocks)

  def _from_heatmaps(self, heatmaps):
    outputs = {}
    initial_coords, initial_scores = readout.decode_fused(heatmaps, self.temperature, self._codec)
    outputs["initial_keypoints_heatmap"] = initial_coords
    outputs["initial_scores"] = initial_scores
    fused = self.fuse(heatmaps)
    coords, scores = readout.decode_fused(fused, self.temperature, self._codec)
    image_coords = coords * self._image_scale[:, None, :]
    outputs.update(fused_heatmaps=fused, keypoints_heatmap=coords, keypoints_image=image_coords,
                   scores=scores)
    if self.triangulate:
      uv = tf_geometry.undistort_pixels(tf.cast(image_coords, tf.float64), self._K, self._dist)
      confidences = tf.maximum(tf.cast(scores, tf.float64), 0.0)
      outputs["joints_3d"] = tf.cast(
          triangulate_dlt(self._projections, uv, confidences), tf.float32)
    return outputs

  def fuse_crops(self, crop_heatmaps, crop_affines):
    """Calibrated epipolar fusion of person crops under their per-frame geometry.

    Args:
      crop_heatmaps: [B, V, C, C, J] float32 with static V, C, J.
      crop_affines: [B, V, 3, 3] undistorted image px -> crop heatmap px.

    Returns:
      [B, V, C, C, J] fused crop heatmaps (Eq. 1 of `mf_tf.fusion.epipolar_fusion`).
    """
    fundamental = tf_geometry.crop_fundamental_matrices(
        self._pair_fundamental, tf.cast(crop_affines, tf.float64), self.num_views)

    def fuse_frame(frame):
      heatmaps, frame_fundamental = frame
      plan = epipolar_fusion.line_plan(
          frame_fundamental, self.crop_heatmap_size, line_width_px=self.line_width_px,
          line_value=self.line_value, num_lines=self.num_lines)
      return epipolar_fusion.apply_line_plan(heatmaps, plan)

    return tf.map_fn(fuse_frame, (crop_heatmaps, fundamental),
                     fn_output_signature=tf.TensorSpec(crop_heatmaps.shape[1:], tf.float32))

  def _serve_crops(self, crop_heatmaps, crop_affines):
    """crop_heatmaps [B, V, C, C, J], crop_affines [B, V, 3, 3] -> joints_2d, scores, 3D."""
    crop_heatmaps, crop_affines = input_checks.check_crops(
        crop_heatmaps, crop_affines, self.rig_name, self.num_views, self.crop_heatmap_size,
        self.num_joints)
    fused = self.fuse_crops(crop_heatmaps, crop_affines)
    coords, scores = readout.decode_crops(fused, self._crop_codec)  # [B, V, J, 2] crop px.
    uv = tf_geometry.apply_affine(tf.linalg.inv(tf.cast(crop_affines, tf.float64)),
                                  tf.cast(coords, tf.float64))  # Undistorted image px.
    outputs = {"joints_2d": tf.cast(tf_geometry.distort_pixels(uv, self._K, self._dist),
                                    tf.float32),
               "scores": scores}
    if self.triangulate:
      confidences = tf.maximum(tf.cast(scores, tf.float64), 0.0)
      outputs["joints_3d"] = tf.cast(triangulate_dlt(self._projections, uv, confidences),
                                     tf.float32)
    return outputs

  def _serve_images(self, images):
    heatmaps = self._backbone(images)
    outputs = self._from_heatmaps(heatmaps)
    outputs["initial_heatmaps"] = heatmaps
    return outputs

  def _serve_uint8(self, images):
    """images: uint8 [B, V, S, S, 3] -> dict of outputs (module docstring)."""
    images = input_checks.check_images(images, self.rig_name, self.num_views, self.image_size)
    return self._images_to_outputs(tf.cast(images, tf.float32))

  def _serve_float32(self, images):
    """images: float32 [B, V, S, S, 3] in [0, 255] -> dict of outputs (module docstring)."""
    return self._images_to_outputs(input_checks.check_images(
        images, self.rig_name, self.num_views, self.image_size))

  def _serve_heatmaps(self, heatmaps):
    """heatmaps: float32 [B, V, H, W, J] -> dict of outputs without `initial_heatmaps`."""
    return self._from_heatmaps(input_checks.check_heatmaps(
        heatmaps, self.rig_name, self.num_views, self.heatmap_size, self.num_joints))


def _check_arguments(backbone, fusion, rig: Rig) -> tuple[int, int, int]:
  """Raises unless backbone, fusion and rig fit together; returns (S, H, J) of the backbone."""
  in_shape, out_shape = tuple(backbone.input_shape), tuple(backbone.output_shape)
  if len(in_shape) != 4 or in_shape[1] != in_shape[2] or in_shape[3] != 3 or None in in_shape[1:]:
    raise ValueError(f"backbone input must be [N, S, S, 3] with S known, got {in_shape}")
  if len(out_shape) != 4 or out_shape[1] != out_shape[2] or None in out_shape[1:]:
    raise ValueError(f"backbone output must be [N, H, H, J] with H, J known, got {out_shape}")
  if not isinstance(fusion, MaterializedFusion) or not fusion.built:
    raise ValueError(f"fusion must be a built MaterializedFusion (AffineFusion.materialize()), "
                     f"got {type(fusion).__name__}")
  check_fusion_parameters(fusion, rig.name)  # Never serve NaN, Inf or a diverged theta.
  if fusion.num_views != rig.num_views or tuple(fusion.heatmap_size) != out_shape[1:3]:
    raise ValueError(f"fusion is for {fusion.num_views} views at {fusion.heatmap_size}, but rig "
                     f"{rig.name!r} has {rig.num_views} views and the backbone gives "
                     f"{out_shape[1]}x{out_shape[2]} heatmaps")
  return int(in_shape[1]), int(out_shape[1]), int(out_shape[3])


def warmup_log(rig_name: str, num_views: int, image_size: int, batch_size: int = 1):
  """A PredictionLog holding one serving_default request of mid-grey images."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = rig_name
  request.model_spec.signature_name = SIGNATURE_IMAGES
  images = np.full((batch_size, num_views, image_size, image_size, 3), 128, np.uint8)
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def save_version(module: ExportModule, rig: Rig, model_dir: str, version: int | None = None, *,
                 export_config: dict, warmup: bool = True) -> str:
  """Writes one version of a rig's model atomically: temp folder in `model_dir`, then rename.

  Args:
    module: The export module.
    rig: The rig, saved as `assets.extra/rig.json` (canonical rig file).
    model_dir: `<export_dir>/<rig_name>`, the model's base path.
    version: Version number; None: one more than the highest present (1 for the first).
    export_config: Settings and provenance, saved as `assets.extra/export_config.json`.
    warmup: Also write `assets.extra/tf_serving_warmup_requests`.

  Stale temporary folders of killed exports are removed first (`remove_stale_temporaries`);
  the version is written 0755 / 0644 (`make_tree_readable`).

  Returns:
    The final version folder.

  Raises:
    FileExistsError: `version` already exists (versions are immutable once served).
  """
  files.make_dirs_readable(model_dir)
  files.remove_stale_temporaries(model_dir)
  if version is None:
    version = (model_config.latest_version(model_dir) or 0) + 1
  if int(version) < 1:
    raise ValueError(f"version must be a positive integer, got {version}")
  final = os.path.join(model_dir, str(int(version)))
  if os.path.exists(final):
    raise FileExistsError(f"version folder {final!r} already exists; versions are immutable")
  # A name that is not a number, so TF Serving ignores the folder while it is being written, and
  # that holds this process's pid, so a later export can tell whether its writer still runs.
  temp = files.make_temporary_folder(model_dir, int(version))
  try:
    tf.saved_model.save(module, temp, signatures=module.signatures())
    extra = os.path.join(temp, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    calibration.save_rig_file(rig, os.path.join(extra, RIG_FILE))
    with open(os.path.join(extra, EXPORT_CONFIG_FILE), "w", encoding="utf-8") as f:
      json.dump(dict(export_config, version=int(version)), f, indent=1, sort_keys=True)
    if warmup:
      model_config.write_warmup_requests(
          os.path.join(extra, WARMUP_FILE),
          [warmup_log(module.rig_name, module.num_views, module.image_size)])
    files.make_tree_readable(temp)  # mkdtemp makes 0700; the umask may strip the files' read bits.
    os.rename(temp, final)
  except BaseException:
    shutil.rmtree(temp, ignore_errors=True)
    raise
  return final


def export_rig(backbone, fusion, rig: Rig, export_dir: str, *,
               batching: batching_lib.BatchingSettings, sigma: float = 2.0,
               triangulate: bool = True,
               line_width_px: float = epipolar_fusion.DEFAULT_LINE_WIDTH_PX,
               line_value: float = epipolar_fusion.DEFAULT_LINE_VALUE,
               version: int | None = None,
               export_config: dict | None = None, base_path_prefix: str | None = None,
               warmup: bool = True) -> str:
  """Exports one rig's model as `<export_dir>/<rig.name>/<version>/` and rewrites models.config
  and batching_parameters.

  Args:
    backbone, fusion, rig, sigma, triangulate, line_width_px, line_value: See `ExportModule`
      (the last two: the fuse_crops signature's epipolar lines).
    export_dir: Root served by TF Serving.
    batching: Written as `<export_dir>/batching_parameters` (every signature batches along its
      first axis: `mf_tf.serving.batching`); the modes build it from config.export.batching.
    version: See `save_version`.
    export_config: Extra settings recorded in `assets.extra/export_config.json`.
    base_path_prefix: See `model_config.write_models_config`.
    warmup: Write warm-up requests.

  Returns:
    The version folder written.
  """
  model_config.check_model_name(rig.name)
  module = ExportModule(backbone, fusion, rig, sigma=sigma, triangulate=triangulate,
                        line_width_px=line_width_px, line_value=line_value)  # Checks first.
  files.make_dirs_readable(export_dir)
  record = dict(export_config or {})
  record.update(rig=rig.name, num_views=module.num_views, image_size=module.image_size,
                heatmap_size=module.heatmap_size, num_joints=module.num_joints, sigma=float(sigma),
                fusion="dense" if module.top_k is None else "sparse", top_k=module.top_k,
                temperature=float(fusion.temperature), triangulate=module.triangulate,
                crop_heatmap_size=module.crop_heatmap_size, line_width_px=module.line_width_px,
                line_value=module.line_value, num_lines=module.num_lines,
                exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                signatures=[SIGNATURE_IMAGES, SIGNATURE_IMAGES_FLOAT, SIGNATURE_HEATMAPS,
                            SIGNATURE_CROPS])
  path = save_version(module, rig, os.path.join(export_dir, rig.name), version,
                      export_config=record, warmup=warmup)
  model_config.write_models_config(export_dir, base_path_prefix)
  batching_lib.write(export_dir, batching)
  logging.info("exported rig %r to %s", rig.name, path)
  return path


