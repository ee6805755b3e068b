"""Per-rig SavedModel export: layout, reload == direct computation, input checks, 3D output."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from config_settings import batching_settings
from serving_test_helpers import (HEATMAP_SIZE, IMAGE_SIZE, NUM_JOINTS, NUM_VIEWS, TOP_K,
                                  distorted_rig)

from mf_tf.data.codec import HeatmapCodec
from mf_tf.evaluation import evaluate
from mf_tf.fusion import ops as fusion_ops
from mf_tf.fusion import sparse as fusion_sparse
from mf_tf.fusion.layers import MaterializedFusion
from mf_tf.geometry import calibration
from mf_tf.geometry.camera import undistort_points
from mf_tf.geometry.triangulation import triangulate_dlt
from mf_tf.serving import export, model_config


def _images(batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (batch, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)


def _direct(backbone, fusion, images):
  """2D outputs computed without the SavedModel: Keras backbone, fusion layer, evaluation."""
  batch = images.shape[0]
  heatmaps = backbone(images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 3).astype(np.float32),
                      training=False).numpy()
  heatmaps = heatmaps.reshape(batch, NUM_VIEWS, HEATMAP_SIZE, HEATMAP_SIZE, NUM_JOINTS)
  fused = fusion(tf.constant(heatmaps)).numpy()
  # The evaluation's read-out: the served keypoints and scores must be the evaluated ones.
  coords, scores = evaluate.decode_joints(fused, fusion.temperature)
  return {"initial_heatmaps": heatmaps, "fused_heatmaps": fused, "keypoints_heatmap": coords,
          "scores": scores}


def _joints_3d(rig, keypoints_image, scores):
  """Reference 3D output: NumPy undistortion of each view, then the confidence-weighted DLT.

  The keypoints of a random network do not correspond across views, so some joints are
  ill-conditioned; the same DLT (float64 eigh) is used so that those agree too. Correctness of
  the 3D answer is `test_triangulation_recovers_known_points`.
  """
  undistorted = np.stack([undistort_points(c, keypoints_image[:, v]) for v, c in
                          enumerate(rig.cameras)], axis=1)
  return triangulate_dlt(rig.projection_matrices(), undistorted,
                         np.maximum(scores, 0)).numpy()


def test_layout_and_models_config(exported):
  export_dir = exported["dir"]
  for name, path in (("toy3", exported["dense_path"]), ("toy3_sparse", exported["sparse_path"])):
    assert path == os.path.join(export_dir, name, "1")
    assert sorted(os.listdir(os.path.join(export_dir, name))) == ["1"]  # No temporary left over.
    extra = os.path.join(path, "assets.extra")
    assert sorted(os.listdir(extra)) == ["export_config.json", "rig.json",
                                         "tf_serving_warmup_requests"]
    rig = calibration.load_rig_file(os.path.join(extra, "rig.json"))
    np.testing.assert_allclose(rig.cameras[1].dist, exported["rig"].cameras[1].dist)
    with open(os.path.join(extra, "export_config.json")) as f:
      record = json.load(f)
    assert record["rig"] == name and record["version"] == 1 and record["num_views"] == NUM_VIEWS
    assert record["top_k"] == (TOP_K if name.endswith("sparse") else None)
  paths = model_config.read_models_config(os.path.join(export_dir, "models.config"))
  assert paths == {"toy3": os.path.join(export_dir, "toy3"),
                   "toy3_sparse": os.path.join(export_dir, "toy3_sparse")}
  logs = model_config.read_warmup_requests(
      os.path.join(exported["dense_path"], "assets.extra", "tf_serving_warmup_requests"))
  request = logs[0].predict_log.request
  assert request.model_spec.name == "toy3"
  assert tf.make_ndarray(request.inputs["images"]).shape == (
      1, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_reload_matches_direct_computation(exported, kind):
  loaded = tf.saved_model.load(exported[f"{kind}_path"])
  assert set(loaded.signatures) == {"serving_default", "serving_float32", "heatmaps",
                                    "fuse_crops"}
  images = _images()
  want = _direct(exported["backbone"], exported[kind], images)
  got = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
      images=tf.constant(images)).items()}
  scale = np.abs(want["initial_heatmaps"]).max()  # Graph and eager kernels round differently.
  for key in ("initial_heatmaps", "fused_heatmaps", "scores"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-3, atol=1e-4 * scale, err_msg=key)
  np.testing.assert_allclose(got["keypoints_heatmap"], want["keypoints_heatmap"], atol=0.02)
  rig = exported["rig"]
  pixels_per_heatmap_px = np.array([[c.width, c.height] for c in rig.cameras]) / HEATMAP_SIZE
  np.testing.assert_allclose(got["keypoints_image"],
                             got["keypoints_heatmap"] * pixels_per_heatmap_px[:, None], rtol=1e-6)
  np.testing.assert_allclose(got["joints_3d"],
                             _joints_3d(rig, got["keypoints_image"], got["scores"]),
                             rtol=1e-4, atol=0.05)
  # The float32 signature and the heatmaps signature give the same answers.
  as_float = loaded.signatures["serving_float32"](images=tf.constant(images, tf.float32))
  from_heatmaps = loaded.signatures["heatmaps"](heatmaps=tf.constant(got["initial_heatmaps"]))
  assert "initial_heatmaps" not in from_heatmaps
  for key in ("fused_heatmaps", "keypoints_image", "scores", "joints_3d"):
    np.testing.assert_allclose(as_float[key].numpy(), got[key], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(from_heatmaps[key].numpy(), got[key], rtol=1e-5, atol=1e-4)


def test_sparse_with_all_entries_equals_dense(exported):
  dense = exported["dense"]
  hw = HEATMAP_SIZE * HEATMAP_SIZE
  order = np.argsort(-np.abs(dense.matrices.numpy()), axis=-1)
  full = MaterializedFusion(NUM_VIEWS, HEATMAP_SIZE, top_k=hw, indices=order,
                            values=np.take_along_axis(dense.matrices.numpy(), order, axis=-1))
  heatmaps = tf.random.stateless_uniform((2, NUM_VIEWS, HEATMAP_SIZE, HEATMAP_SIZE, NUM_JOINTS),
                                         (1, 2))
  module_dense = export.ExportModule(exported["backbone"], dense, exported["rig"])
  module_full = export.ExportModule(exported["backbone"], full, exported["rig"])
  a = module_dense.serve_heatmaps(heatmaps)
  b = module_full.serve_heatmaps(heatmaps)
  np.testing.assert_allclose(a["fused_heatmaps"].numpy(), b["fused_heatmaps"].numpy(),
                             rtol=1e-5, atol=1e-5)


def test_materialize_per_pair_equals_all_pairs_at_once(exported):
  fusion = exported["fusion"]
  matrices = fusion_ops.affine_matrices(fusion.omega_base, fusion.theta)
  np.testing.assert_allclose(exported["dense"].matrices.numpy(), matrices.numpy(), atol=1e-6)
  values, indices = fusion_sparse.sparsify_top_k(matrices, TOP_K)
  np.testing.assert_allclose(np.sort(exported["sparse"].values.numpy(), axis=-1),
                             np.sort(values.numpy(), axis=-1), atol=1e-6)
  heatmaps = tf.random.stateless_uniform((1, NUM_VIEWS, HEATMAP_SIZE, HEATMAP_SIZE, NUM_JOINTS),
                                         (3, 4))
  np.testing.assert_allclose(exported["sparse"](heatmaps).numpy(),
                             fusion_sparse.fuse_sparse(heatmaps, values, indices).numpy(), atol=1e-5)


def test_triangulation_recovers_known_points(exported):
  """Distorted projections of known 3D points -> Gaussian heatmaps -> joints_3d == the points."""
  rig = exported["rig"]
  rng = np.random.default_rng(5)
  points = np.array([0.0, 0.0, 900.0]) + rng.uniform(-500, 500, (2, NUM_JOINTS, 3))
  uv = np.stack([c.project(points)[0] for c in rig.cameras], axis=1)  # [B, V, J, 2] distorted
  scale = np.array([[c.width, c.height] for c in rig.cameras]) / HEATMAP_SIZE
  heatmap_xy = uv / scale[:, None, :]
  assert np.all((heatmap_xy > 1) & (heatmap_xy < HEATMAP_SIZE - 2)), "points must stay in view"
  heatmaps, _ = HeatmapCodec(HEATMAP_SIZE).encode(heatmap_xy)  # [B, V, H, W, J]
  zero = MaterializedFusion(NUM_VIEWS, HEATMAP_SIZE, matrices=np.zeros(
      (NUM_VIEWS * (NUM_VIEWS - 1), HEATMAP_SIZE**2, HEATMAP_SIZE**2), np.float32))
  module = export.ExportModule(exported["backbone"], zero, rig)
  out = module.serve_heatmaps(heatmaps)
  # The served read-out is the evaluation's (softmax_T, then decode): equal to it, and within a
  # fraction of a heatmap pixel of the true projections (the softmax sharpens the Gaussian).
  coords, scores = evaluate.decode_joints(heatmaps.numpy(), zero.temperature)
  np.testing.assert_allclose(out["keypoints_image"].numpy(), coords * scale[:, None, :],
                             rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["keypoints_image"].numpy() / scale[:, None, :], heatmap_xy,
                             atol=0.05)
  # Undistortion and DLT in the graph equal NumPy's on the served keypoints, and recover the
  # known points to within the read-out's sub-pixel error.
  np.testing.assert_allclose(out["joints_3d"].numpy(),
                             _joints_3d(rig, out["keypoints_image"].numpy(),
                                        out["scores"].numpy()), rtol=1e-4, atol=0.05)
  np.testing.assert_allclose(out["joints_3d"].numpy(), points, atol=10.0)  # millimetres


@pytest.mark.parametrize("signature, array, message", [
    ("serving_default", np.zeros((1, 2, 64, 64, 3), np.uint8), "got shape] [1 2 64 64 3]"),
    ("serving_default", np.zeros((1, 3, 32, 32, 3), np.uint8), "got shape] [1 3 32 32 3]"),
    ("serving_default", np.zeros((0, 3, 64, 64, 3), np.uint8), "batch >= 1"),
    ("serving_float32", np.full((1, 3, 64, 64, 3), 300.0, np.float32), "in [0, 255]; got min"),
    ("serving_float32", np.full((1, 3, 64, 64, 3), np.nan, np.float32), "NaN or Inf"),
    ("heatmaps", np.zeros((1, 3, 16, 16, 5), np.float32), "got shape] [1 3 16 16 5]"),
    ("heatmaps", np.full((1, 3, 16, 16, 4), np.inf, np.float32), "NaN or Inf"),
])
def test_bad_inputs_raise_invalid_argument(exported, signature, array, message):
  loaded = tf.saved_model.load(exported["dense_path"])
  function = loaded.signatures[signature]
  (name,) = function.structured_input_signature[1]
  with pytest.raises(tf.errors.InvalidArgumentError, match=None) as info:
    function(**{name: tf.constant(array)})
  assert message in info.value.message


class _SmallModule(tf.Module):
  """An export module with one small signature: what version numbering and atomicity see.

  Tracing and saving the real module takes most of a minute; the versioning logic around the
  save is the same for any module (the real exports are checked by the other tests here).
  """

  def __init__(self, backbone, fusion, rig, **settings):
    super().__init__()
    del backbone, settings
    self.rig_name, self.num_views, self.image_size = rig.name, rig.num_views, IMAGE_SIZE
    self.heatmap_size, self.num_joints, self.top_k = HEATMAP_SIZE, NUM_JOINTS, fusion.top_k
    self.triangulate, self.crop_heatmap_size, self.num_lines = True, HEATMAP_SIZE, 1
    self.line_width_px, self.line_value = 1.0, 0.1
    self.scale = tf.Variable(2.0)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def serve(self, x):
    return {"y": self.scale * x}

  def signatures(self):
    return {"serving_default": self.serve.get_concrete_function()}


def test_versions_are_atomic_and_increment(exported, tmp_path, monkeypatch):
  export_dir = str(tmp_path)
  rig = distorted_rig("atomic")
  fusion = exported["sparse"]
  batching = batching_settings()
  monkeypatch.setattr(export, "ExportModule", _SmallModule)
  original_save = tf.saved_model.save

  def failing_save(*args, **kwargs):
    original_save(*args, **kwargs)
    raise OSError("disk full")

  monkeypatch.setattr(tf.saved_model, "save", failing_save)
  with pytest.raises(OSError, match="disk full"):
    export.export_rig(None, fusion, rig, export_dir, warmup=False, batching=batching)
  assert os.listdir(os.path.join(export_dir, "atomic")) == []  # Neither "1" nor a temporary.
  assert not os.path.exists(os.path.join(export_dir, "models.config"))
  monkeypatch.setattr(tf.saved_model, "save", original_save)
  first = export.export_rig(None, fusion, rig, export_dir, warmup=False, batching=batching)
  second = export.export_rig(None, fusion, rig, export_dir, warmup=True,
                             base_path_prefix="/models", batching=batching)
  assert (os.path.basename(first), os.path.basename(second)) == ("1", "2")
  assert model_config.latest_version(os.path.join(export_dir, "atomic")) == 2
  assert model_config.read_models_config(os.path.join(export_dir, "models.config")) == {
      "atomic": "/models/atomic"}
  with open(os.path.join(second, "assets.extra", "export_config.json"), encoding="utf-8") as f:
    assert json.load(f)["version"] == 2
  assert tf.saved_model.load(second).signatures["serving_default"](
      x=tf.constant([1.5]))["y"].numpy() == pytest.approx([3.0])
  with pytest.raises(FileExistsError, match="immutable"):
    export.export_rig(None, fusion, rig, export_dir, version=2, batching=batching)


def test_models_config_rejects_bad_text():
  with pytest.raises(ValueError, match="not a valid ModelServerConfig"):
    model_config.parse_models_config("model_config_list { config { nme: 'x' } }")
  with pytest.raises(ValueError, match="lists no model"):
    model_config.parse_models_config("")
  with pytest.raises(ValueError, match="more than once"):
    model_config.parse_models_config(
        "model_config_list { config { name: 'a' base_path: '/a' } "
        "config { name: 'a' base_path: '/b' } }")
  # Served model names follow mf_tf's one rule for names that become folders (files.check_name).
  for name in ("../etc", ".hidden", "a" * 101):
    with pytest.raises(ValueError, match="model name .* is not a safe name: expected 1-100"):
      model_config.check_model_name(name)
  with pytest.raises(ValueError, match="model name 'a b' is not a safe name"):
    model_config.parse_models_config("model_config_list { config { name: 'a b' base_path: '/a' } }")
  assert model_config.check_model_name("h36m_S9.v-2") == "h36m_S9.v-2"


def test_export_module_rejects_mismatched_fusion(exported):
  with pytest.raises(ValueError, match="4 views"):
    export.ExportModule(exported["backbone"], exported["dense"], distorted_rig("v4", 4))


@pytest.mark.large
def test_savedmodel_loads_without_project_code(exported):
  """A fresh interpreter that never imports mf_tf (nor Keras objects) can load and run it."""
  script = (
      "import sys, numpy as np, tensorflow as tf\n"
      "m = tf.saved_model.load(sys.argv[1])\n"
      "out = m.signatures['serving_default'](images=tf.zeros([1, 3, 64, 64, 3], tf.uint8))\n"
      "assert 'mf_tf' not in sys.modules\n"
      "print(sorted(out))\n")
  result = subprocess.run([sys.executable, "-c", script, exported["dense_path"]],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), cwd="/")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "joints_3d" in result.stdout
