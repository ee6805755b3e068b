"""The README's own-rig sequence, in process: finetune, evaluate, export with a rig file."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from mf_tf import checkpoints
from mf_tf.fusion import calibrated
from mf_tf.geometry import calibration
from mf_tf.geometry.rig import RigMismatchError
from mf_tf.geometry.rigs import ring_rig
from mf_tf.models.backbone import build_backbone
from mf_tf.modes import evaluate, export, finetune
from mf_tf.serving import model_config


def _rig_file(tmp_path, seed=3, file_name="my_rig.json"):
  path = str(tmp_path / file_name)
  calibration.save_rig_file(ring_rig(3, seed=seed, name="my_rig"), path)
  return path


@pytest.mark.large  # End to end, about 25 s on 2 CPU cores.
def test_finetune_evaluate_export_with_a_rig_file(tmp_path):
  rig_path = _rig_file(tmp_path)
  workdir = str(tmp_path / "work")
  config = default.get_config("smoke")
  config.rig.target = rig_path
  # Export needs a trained backbone (--mode=warmup); an untrained one has the same graph.
  weights = str(tmp_path / "backbone.weights.h5")
  build_backbone(config.model.backbone, config.image_size, 17).save_weights(weights)
  config.export.backbone_weights = weights

  rig_dir = finetune.run(config, workdir)
  assert rig_dir == os.path.join(workdir, "finetune", "my_rig")  # The file's "name" field.
  assert {"fusion.json", "fusion.npz", "rig.json", "meta.json"} <= set(os.listdir(rig_dir))

  results = evaluate.run(config, workdir)
  with open(os.path.join(workdir, "evaluate", "my_rig", "results.json")) as f:
    assert set(json.load(f)["methods"]) == {"no_fusion", "calibrated", "finetuned"}
  assert results["finetuned"]["jdr_mean"] >= results["no_fusion"]["jdr_mean"] - 1.0, results

  export.run(config, workdir)
  root = os.path.join(workdir, "export")
  assert model_config.read_models_config(os.path.join(root, "models.config")) == {
      "my_rig": os.path.join(root, "my_rig")}
  loaded = tf.saved_model.load(os.path.join(root, "my_rig", "1"))
  size = config.image_size
  out = loaded.signatures["serving_default"](images=tf.zeros([1, 3, size, size, 3], tf.uint8))
  assert out["joints_3d"].shape == (1, 17, 3)
  assert np.all(np.isfinite(out["keypoints_image"].numpy()))


def test_evaluate_refuses_a_checkpoint_of_another_calibration(tmp_path):
  config = default.get_config("smoke")
  size = int(config.heatmap_size)
  trained_for = calibration.load_rig_file(_rig_file(tmp_path, seed=3))
  layer = calibrated.calibrated_fusion(trained_for, size)
  workdir = str(tmp_path / "work")
  checkpoints.save_finetuned(layer, trained_for, os.path.join(workdir, "finetune", "my_rig"),
                             {"method": "calibrated", "heatmap_size": size, "shots": 0})
  moved_path = _rig_file(tmp_path, seed=4, file_name="moved.json")  # Same name, other cameras.
  moved = calibration.load_rig_file(moved_path)
  with pytest.raises(RigMismatchError, match="finetune/my_rig/rig.json"):
    evaluate.build_methods(["finetuned"], config, workdir, moved, size)
  with pytest.raises(RigMismatchError) as info:
    evaluate.build_methods(["finetuned"], config, workdir, moved, size, rig_source=moved_path)
  assert moved_path in str(info.value)
  same = evaluate.build_methods(["finetuned"], config, workdir, trained_for, size)
  assert set(same) == {"finetuned"}
