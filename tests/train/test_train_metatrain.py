"""Meta-training: learning on held-out pairs, exact resume, and config validation."""

import numpy as np
import pytest

from mf_tf import checkpoints
from mf_tf.data import world
from mf_tf.geometry import rigs
from mf_tf.meta import tasks
from mf_tf.modes import metatrain as metatrain_mode
from mf_tf.train import metatrain

from config_settings import maml_settings  # pylint: disable=wrong-import-order

SIZE, JOINTS = 16, 6


def small_pool(num_frames=60, seed=0):
  """A 20-camera Panoptic pool at 16 px with the first 6 joints (compact detector state)."""
  frames = world.simulate_frames(rigs.get_rig("panoptic_vga20"), num_frames, seed,
                                 heatmap_size=SIZE, return_heatmaps=False)
  for key in ("joints2d", "visibility", "peaks", "amplitudes"):
    frames[key] = frames[key][:, :, :JOINTS]
  return tasks.FramePool.from_frames(frames, SIZE)


@pytest.fixture(scope="module")
def pool():
  return small_pool()


@pytest.mark.large
def test_metatraining_lowers_adapted_query_loss_on_heldout_pairs(pool):
  train_pairs, heldout = tasks.split_pairs(pool.num_views, 40, seed=0)
  settings = maml_settings(num_steps=60, tasks_per_step=4, inner_lr=2.0, outer_lr=3e-3,
                           target_sigma=0.5, seed=0, loss="mse")
  init = metatrain.default_meta_params(SIZE)
  before = metatrain.evaluate_pairs(init, pool, heldout, settings, 16)
  params = metatrain.metatrain_fusion(pool, train_pairs, settings, init=init, progress=False)
  after = metatrain.evaluate_pairs(params, pool, heldout, settings, 16)
  # Meta-training lowers the loss reached after one adaptation step on pairs it never saw ...
  assert after["query_loss_after"] < before["query_loss_after"] - 0.01  # Measured: -0.030.
  # ... and adaptation from the meta-learned init still helps.
  assert after["query_loss_after"] < after["query_loss_before"]


def test_killed_run_resumes_to_the_same_parameters(pool, tmp_path):
  pairs = pool.num_views and tasks.split_pairs(pool.num_views, 0, seed=0)[0]
  settings = maml_settings(num_steps=6, tasks_per_step=2, support_size=2, query_size=2,
                           inner_lr=2.0, outer_lr=1e-2, target_sigma=0.5, seed=3, loss="mse")
  straight = metatrain.metatrain_fusion(pool, pairs, settings, workdir=str(tmp_path / "a"),
                                        progress=False)

  class Killed(Exception):
    pass

  def kill_after_five(step, metrics):
    del metrics
    if step == 5:  # Between checkpoints: step 5 ran, the last checkpoint holds step 4.
      raise Killed()

  with pytest.raises(Killed):
    metatrain.metatrain_fusion(pool, pairs, settings, workdir=str(tmp_path / "b"),
                               checkpoint_every=2, progress=False, callback=kill_after_five)
  steps = []
  resumed = metatrain.metatrain_fusion(pool, pairs, settings, workdir=str(tmp_path / "b"),
                                       checkpoint_every=2, progress=False,
                                       callback=lambda step, _: steps.append(step))
  # Steps 1-4 come from the checkpoint; the lost step 5 is redone with the same task draw.
  assert steps == [5, 6]
  np.testing.assert_allclose(resumed.theta, straight.theta, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(resumed.omega_base, straight.omega_base, rtol=1e-5, atol=1e-6)
  assert not np.allclose(straight.theta, metatrain.default_meta_params(SIZE).theta)


def test_meta_params_file_round_trip(tmp_path):
  params = metatrain.default_meta_params(SIZE)
  path = str(tmp_path / "meta.npz")
  checkpoints.save_meta_params(params, path, {"method": "maml"})
  loaded, meta = checkpoints.load_meta_params(path)
  np.testing.assert_array_equal(loaded.theta, params.theta)
  assert meta == {"method": "maml"}
  with pytest.raises(FileNotFoundError):
    checkpoints.load_meta_params(str(tmp_path / "none.npz"))


@pytest.mark.parametrize("bad", [dict(inner_lr=-0.1), dict(outer_lr=0.0), dict(inner_steps=0),
                                 dict(tasks_per_step=0), dict(support_size=-1)])
def test_bad_settings_are_rejected(bad):
  with pytest.raises(ValueError):
    maml_settings(**bad)


def test_mode_config_validation(tmp_path, default_config):
  config = default_config("smoke")
  config.metatrain.inner_lr = -1.0
  with pytest.raises(ValueError, match="inner learning rate"):
    metatrain_mode.run(config, str(tmp_path))
