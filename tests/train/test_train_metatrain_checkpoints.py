"""Meta-training checkpoints: verified on load, honest resume, loop-setting validation."""

import dataclasses
import glob
import logging
import os

import numpy as np
import pytest

from mf_tf import checkpoints
from mf_tf.meta import tasks
from mf_tf.modes import metatrain as metatrain_mode
from mf_tf.train import metatrain
from mf_tf.train import metatrain_checkpoints as meta_checkpoints

from config_settings import maml_settings  # pylint: disable=wrong-import-order
from test_train_metatrain import small_pool  # pylint: disable=wrong-import-order

SETTINGS = maml_settings(num_steps=4, tasks_per_step=2, support_size=2, query_size=2,
                         inner_lr=2.0, outer_lr=1e-2, target_sigma=0.5, seed=3, loss="mse")


@pytest.fixture(scope="module")
def pool():
  return small_pool(num_frames=20)


@pytest.fixture(scope="module")
def pairs(pool):
  return tasks.split_pairs(pool.num_views, 0, seed=0)[0]


@pytest.fixture(scope="module")
def finished(pool, pairs, tmp_path_factory):
  """A 4-step run with checkpoints at steps 2 and 4: (workdir, final params)."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  params = metatrain.metatrain_fusion(pool, pairs, SETTINGS, workdir=workdir, checkpoint_every=2,
                                      progress=False)
  return workdir, params


def copy_run(finished, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "run")
  shutil.copytree(finished[0], workdir)
  return workdir


def truncate_data(workdir, step):
  (path,) = glob.glob(os.path.join(workdir, "checkpoints", f"ckpt-{step}.data-*"))
  with open(path, "r+b") as stream:
    stream.truncate(os.path.getsize(path) // 2)
  return path


def resume(pool, pairs, workdir, settings=SETTINGS, **kwargs):
  steps = []
  params = metatrain.metatrain_fusion(pool, pairs, settings, workdir=workdir, checkpoint_every=2,
                                      progress=False, callback=lambda step, _: steps.append(step),
                                      **kwargs)
  return params, steps


def test_each_checkpoint_stores_settings_and_data_fingerprint(finished, pool):
  import json  # pylint: disable=import-outside-toplevel
  with open(os.path.join(finished[0], "checkpoints", "ckpt-4" + meta_checkpoints.RUN_INFO_SUFFIX)) as f:
    info = json.load(f)
  assert info["step"] == 4
  assert info["settings"] == dataclasses.asdict(SETTINGS)
  assert info["data"]["pool_frames"] == pool.num_frames == 20
  assert len(info["data"]["pool_sha256"]) == 16


def test_truncated_latest_checkpoint_falls_back_to_the_previous(finished, pool, pairs, tmp_path,
                                                                caplog):
  workdir = copy_run(finished, tmp_path)
  path = truncate_data(workdir, 4)
  with caplog.at_level(logging.WARNING, logger="absl"):
    params, steps = resume(pool, pairs, workdir)
  assert steps == [3, 4]  # Steps 1-2 from ckpt-2, steps 3-4 trained again.
  assert os.path.basename(path) in caplog.text and "unreadable" in caplog.text
  np.testing.assert_allclose(params.theta, finished[1].theta, rtol=1e-5, atol=1e-6)


def test_no_intact_checkpoint_is_one_clear_error(finished, pool, pairs, tmp_path):
  workdir = copy_run(finished, tmp_path)
  truncate_data(workdir, 4)
  truncate_data(workdir, 2)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"no intact checkpoint .*ckpt-4 \(IndexError.*ckpt-2 \(IndexError"):
    resume(pool, pairs, workdir)


def test_truncated_meta_params_file_is_named(tmp_path):
  path = str(tmp_path / "meta_params.npz")
  checkpoints.save_meta_params(metatrain.default_meta_params(16), path)
  with open(path, "r+b") as stream:
    stream.truncate(os.path.getsize(path) // 2)
  with pytest.raises(checkpoints.CheckpointError, match=f"{path}.*BadZipFile.*truncated"):
    checkpoints.load_meta_params(path)


def test_resume_with_other_settings_is_refused_listing_each(finished, pool, pairs, tmp_path):
  workdir = copy_run(finished, tmp_path)
  other = dataclasses.replace(SETTINGS, num_steps=2, seed=7, outer_lr=0.5)
  with pytest.raises(checkpoints.CheckpointError) as error:
    resume(pool, pairs, workdir, other)
  message = str(error.value)
  for words in ("ckpt-4 (step 4)", "num_steps: 4 -> 2", "outer_lr: 0.01 -> 0.5", "seed: 3 -> 7",
                "restart=True"):
    assert words in message, message
  assert "inner_lr" not in message


def test_resume_with_other_data_is_refused(finished, pairs, tmp_path):
  workdir = copy_run(finished, tmp_path)
  with pytest.raises(checkpoints.CheckpointError, match=r"pool_frames: 20 -> 12.*pool_sha256"):
    resume(small_pool(num_frames=12), pairs, workdir)


def test_restart_starts_over(finished, pool, pairs, tmp_path):
  workdir = copy_run(finished, tmp_path)
  other = dataclasses.replace(SETTINGS, num_steps=2, seed=7)
  _, steps = resume(pool, pairs, workdir, other, restart=True)
  assert steps == [1, 2]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
      "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-2.run.json"]


def test_longer_run_continues_and_complete_run_trains_nothing(finished, pool, pairs, tmp_path,
                                                              caplog):
  workdir = copy_run(finished, tmp_path)
  with caplog.at_level(logging.INFO, logger="absl"):
    params, steps = resume(pool, pairs, workdir)
  assert steps == [] and "the run is complete, nothing to train" in caplog.text
  np.testing.assert_array_equal(params.theta, finished[1].theta)
  _, steps = resume(pool, pairs, workdir, dataclasses.replace(SETTINGS, num_steps=5))
  assert steps == [5]


@pytest.mark.parametrize("num_steps, checkpoint_every, words", [
    (0, 2, "num_steps=0, expected an integer >= 1"),
    (4, 0, "checkpoint_every=0, expected an integer >= 1"),
])
def test_loop_settings_are_validated_before_training(pool, pairs, tmp_path, num_steps,
                                                     checkpoint_every, words):
  steps = []
  with pytest.raises(ValueError, match=words):
    metatrain.metatrain_fusion(pool, pairs, dataclasses.replace(SETTINGS, num_steps=num_steps),
                               workdir=str(tmp_path), checkpoint_every=checkpoint_every,
                               progress=False, callback=lambda step, _: steps.append(step))
  assert not steps


@pytest.mark.parametrize("key, value", [("num_steps", 0), ("checkpoint_every", 0)])
def test_mode_validates_loop_settings_up_front(tmp_path, default_config, key, value):
  config = default_config("smoke")
  config.metatrain[key] = value
  with pytest.raises(ValueError, match=f"{key}=0, expected an integer >= 1"):
    metatrain_mode.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "metatrain")  # Nothing simulated or trained.


def test_unreadable_state_file_falls_back_to_the_checkpoints_on_disk(finished, pool, pairs,
                                                                     tmp_path):
  workdir = copy_run(finished, tmp_path)
  with open(os.path.join(workdir, "checkpoints", "checkpoint"), "w") as stream:
    stream.write("not a checkpoint state {")
  params, steps = resume(pool, pairs, workdir)
  assert steps == []  # Resumed at ckpt-4: the run is complete (not restarted from scratch).
  np.testing.assert_array_equal(params.theta, finished[1].theta)
