"""Each recipe's stages at smoke scale, in process: every stage reads what the one before wrote.

The paper recipe runs configs/metafuse_paper.py's pipeline (warm-up -> precompute with that
backbone -> meta-training on that pool -> finetuning from that init); the default recipe reads no
earlier stage (the K labels give the geometry); the calibrated recipe finetunes its two starts,
one of them from meta-training started at the calibrated theta.
"""

import functools
import importlib.util
import json
import os

import numpy as np
import pytest

from mf_tf import checkpoints
from mf_tf.data import world
from mf_tf.fusion import calibrated as calibrated_lib
from mf_tf.meta import tasks as tasks_lib
from mf_tf.modes import common
from mf_tf.modes import finetune as finetune_mode
from mf_tf.modes import metatrain as metatrain_mode
from mf_tf.modes import precompute as precompute_mode
from mf_tf.modes import warmup as warmup_mode
from mf_tf.train import precompute
from mf_tf.train import warmup

pytestmark = pytest.mark.large


def _config(repo_root, name, variant):
  spec = importlib.util.spec_from_file_location(f"config_{name}_under_test",
                                                os.path.join(repo_root, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _finetuned(workdir, config):
  rig_dir = os.path.join(workdir, "finetune", common.rig(config, "target").name)
  layer, _, _ = checkpoints.load_finetuned(rig_dir)
  with open(os.path.join(rig_dir, "meta.json")) as stream:
    return layer, json.load(stream)


def test_paper_recipe_runs_the_papers_pipeline(repo_root, tmp_path, monkeypatch):
  # The warm-up's XLA compile of MobileNetV2's step would be most of this test's time.
  monkeypatch.setattr(warmup_mode.warmup, "warmup_backbone",
                      functools.partial(warmup.warmup_backbone, jit_compile=False))
  config = _config(repo_root, "metafuse_paper.py", "smoke")
  assert config.recipe == "paper" and config.precompute.source == "backbone"
  workdir = str(tmp_path)
  warmup_mode.run(config, workdir)
  pool = precompute_mode.run(config, workdir)
  # The pool holds the warm-up backbone's heatmaps of the pretraining rig's rendered frames.
  backbone = precompute.load_warmup_backbone(workdir)
  frames = world.simulate_frames(common.rig(config, "pretrain"), int(config.precompute.num_frames),
                                 int(config.seed), config.joint_set, int(config.heatmap_size),
                                 detector_params=world.detector_params_from_config(
                                     config.detector), render_images=True,
                                 image_size=int(config.image_size), return_heatmaps=False)
  assert pool.heatmaps is not None, "the pool holds the simulated detector, not the backbone's"
  np.testing.assert_allclose(pool.heatmaps, precompute.backbone_heatmaps(backbone,
                                                                         frames["images"]),
                             atol=1e-5)
  params = metatrain_mode.run(config, workdir)
  meta_path = os.path.join(workdir, "metatrain", checkpoints.META_PARAMS_FILE)
  _, meta_info = checkpoints.load_meta_params(meta_path)
  assert meta_info["pool"] == os.path.join(workdir, precompute.POOL_FILE)
  assert meta_info["recipe"] == "paper" and meta_info["settings"]["loss"] == "mse"
  finetune_mode.run(config, workdir)
  layer, meta = _finetuned(workdir, config)
  assert meta["recipe"] == "paper" and meta["method"] == "metafuse"
  assert meta["init"] == meta_path
  # omega_base is frozen in finetuning: the checkpoint's is the meta-trained one.
  np.testing.assert_array_equal(layer.omega_base.numpy(), params.omega_base)
  assert isinstance(tasks_lib.FramePool.load(os.path.join(workdir, precompute.POOL_FILE)),
                    tasks_lib.FramePool)


def test_default_recipe_reads_no_earlier_stage(repo_root, tmp_path):
  config = _config(repo_root, "default.py", "smoke")
  assert config.recipe == "default"
  workdir = str(tmp_path)
  finetune_mode.run(config, workdir)
  layer, meta = _finetuned(workdir, config)
  assert meta["recipe"] == "default" and meta["method"] == "self_calibrated"
  assert meta["init"] == "" and not os.path.exists(os.path.join(workdir, "metatrain"))
  fusion = common.fusion_settings(config)
  np.testing.assert_array_equal(layer.omega_base.numpy(), calibrated_lib.calibrated_base(
      int(config.heatmap_size), fusion.line_width_px, fusion.line_value))


def test_calibrated_recipe_meta_trains_from_calibrated_theta(repo_root, tmp_path):
  config = _config(repo_root, "default.py", "smoke")
  config.recipe = "calibrated"
  config.metatrain.num_steps = 2
  config.metatrain.checkpoint_every = 2
  config.metatrain.holdout_pairs = 0
  config.precompute.num_frames = 8
  workdir = str(tmp_path)
  params = metatrain_mode.run(config, workdir)
  meta_path = os.path.join(workdir, "metatrain", checkpoints.META_PARAMS_FILE)
  _, meta_info = checkpoints.load_meta_params(meta_path)
  assert meta_info["theta_init"] == "calibrated" and meta_info["recipe"] == "calibrated"
  finetune_mode.run(config, workdir)
  layer, meta = _finetuned(workdir, config)
  assert meta["recipe"] == "calibrated"
  assert set(meta["starts"]) == {"metafuse_calibrated", "calibrated"}
  assert meta["starts"][meta["method"]] == max(meta["starts"].values())
  if meta["method"] == "metafuse_calibrated":
    assert meta["init"] == meta_path
    np.testing.assert_array_equal(layer.omega_base.numpy(), params.omega_base)
