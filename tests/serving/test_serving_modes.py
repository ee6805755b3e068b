"""--mode=export and --mode=tflite end to end on a small config (built-in rig, MetaFuse^0)."""

import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from config_settings import default_config

from mf_tf.geometry import rigs
from mf_tf.models.backbone import build_backbone
from mf_tf.modes import export
from mf_tf.modes import tflite
from mf_tf.serving import model_config



def _config(weights_path, export_root):
  return ml_collections.ConfigDict({
      "seed": 0, "joint_set": "h36m17", "heatmap_size": 16, "image_size": 64, "recipe": "default",
      "rig": {"target": "campus"}, "model": {"backbone": "mobilenetv2_035"},
      "fusion": {"temperature": 0.2, "loss_temperature": 0.2, "loss": "ce",
                 "line_width_px": 1.0, "line_value": 0.3},
      "render": {"tile_mm": 500.0, "noise_std": 0.03},
      "export": {"dir": export_root, "rigs": "", "top_k": 16, "triangulate": True, "version": 0,
                 "base_path_prefix": "", "warmup": True, "client_timeout_s": 60.0,
                 "backbone_weights": weights_path,
                 "fusion_source": "calibrated", "finetuned_dir": "",
                 "batching": default_config().export.batching.to_dict()},
      "tflite": {"quant_type": "int8", "representative_glob": "", "num_representative": 6,
                 "num_eval": 3, "num_threads": 1},
  })


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  if "campus" not in rigs.list_rigs():
    pytest.skip("built-in rig 'campus' is not generated (mf_tf/geometry/make_builtin_rigs.py)")
  root = tmp_path_factory.mktemp("modes")
  weights = str(root / "backbone.weights.h5")
  build_backbone("mobilenetv2_035", 64, 17).save_weights(weights)
  return _config(weights, str(root / "export"))


@pytest.mark.large
def test_export_mode_calibrated_rig(config, tmp_path):
  export.run(config, str(tmp_path))
  root = config.export.dir
  assert model_config.read_models_config(os.path.join(root, "models.config")) == {
      "campus": os.path.join(root, "campus")}
  path = os.path.join(root, "campus", "1")
  with open(os.path.join(path, "assets.extra", "export_config.json")) as f:
    record = json.load(f)
  assert (record["fusion"], record["top_k"], record["fusion_source"]) == ("sparse", 16,
                                                                          "calibrated")
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["serving_default"](images=tf.zeros([1, 3, 64, 64, 3], tf.uint8))
  assert out["joints_3d"].shape == (1, 17, 3)
  assert np.all(np.isfinite(out["keypoints_image"].numpy()))


def test_missing_sources_are_clear(config, tmp_path):
  missing = config.copy_and_resolve_references()
  missing.export.backbone_weights = str(tmp_path / "nope.weights.h5")
  with pytest.raises(FileNotFoundError, match="--mode=warmup"):
    export.run(missing, str(tmp_path))
  bad = config.copy_and_resolve_references()
  bad.export.fusion_source = "learned"
  with pytest.raises(ValueError, match="expected 'finetuned' or 'calibrated'"):
    export.run(bad, str(tmp_path))


@pytest.mark.large
def test_tflite_mode_writes_model_and_report(config, tmp_path, capsys):
  tflite.run(config, str(tmp_path))
  out_dir = os.path.join(config.export.dir, "tflite")
  assert os.path.getsize(os.path.join(out_dir, "backbone_int8.tflite")) > 0
  with open(os.path.join(out_dir, "report_int8.json")) as f:
    report = json.load(f)
  assert report["num_calibration"] == 6 and report["num_eval"] == 3
  assert report["latency_ms_median"] > 0 and np.isfinite(report["keypoint_diff_px_mean"])
  assert '"quant_type": "int8"' in capsys.readouterr().out
