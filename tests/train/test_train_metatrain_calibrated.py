"""Calibrated variant of meta-training: per-pair calibrated theta + a shared residual."""

import numpy as np
import tensorflow as tf

from mf_tf.data import world
from mf_tf.fusion import calibrated
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import rigs
from mf_tf.meta import maml
from mf_tf.meta import tasks
from mf_tf.train import metatrain

from config_settings import maml_settings  # pylint: disable=wrong-import-order

SIZE, JOINTS = 8, 3


def _pool(num_frames=8):
  frames = world.simulate_frames(rigs.get_rig("panoptic_vga20"), num_frames, 0,
                                 heatmap_size=SIZE, return_heatmaps=False)
  for key in ("joints2d", "visibility", "peaks", "amplitudes"):
    frames[key] = frames[key][:, :, :JOINTS]
  return tasks.FramePool.from_frames(frames, SIZE)


def test_calibrated_meta_step_runs_and_finetune_init_is_calibrated_plus_delta():
  rig = rigs.get_rig("panoptic_vga20")
  init, theta_by_pair = metatrain.calibrated_meta_init(rig, SIZE, 1.0, 0.3)
  np.testing.assert_array_equal(init.omega_base, calibrated.calibrated_base(SIZE, 1.0, 0.3))
  np.testing.assert_array_equal(init.theta, 0.0)
  assert theta_by_pair.shape == (rig.num_views * (rig.num_views - 1), SIZE * SIZE, 6)

  # Task theta = its own pair's calibrated theta (pair_index order), not a shared one.
  pairs = np.array([[3, 0], [0, 3], [19, 7]])
  offsets = metatrain.pair_theta_offsets(theta_by_pair, pairs, rig.num_views)
  full = calibrated.calibrated_theta(rig, SIZE)
  for row, (source, target) in enumerate(pairs):
    np.testing.assert_array_equal(offsets[row], full[rigs.get_rig("panoptic_vga20").pairs
                                                     .tolist().index([source, target])])
  delta = tf.constant(np.full((SIZE * SIZE, 6), 0.01, np.float32))
  tiled = maml.tile_params(maml.MetaParams(tf.constant(init.omega_base), delta), 3,
                           theta_offset=offsets)
  np.testing.assert_allclose(tiled.theta.numpy(), offsets + 0.01, atol=1e-7)

  # Two outer steps of the calibrated variant: finite losses, both meta-parameters move.
  settings = maml_settings(num_steps=2, tasks_per_step=2, support_size=2, query_size=2,
                           inner_lr=0.1, outer_lr=1e-3, temperature=0.5, target_sigma=1.0,
                           seed=0, loss="mse")
  steps = []
  params = metatrain.metatrain_fusion(_pool(), rig.pairs, settings, init=init, progress=False,
                                      theta_by_pair=theta_by_pair,
                                      callback=lambda step, m: steps.append(m))
  assert len(steps) == 2 and all(np.isfinite(list(m.values())).all() for m in steps)
  assert np.abs(params.theta).max() > 0  # The residual delta was learned (init zeros).
  assert not np.allclose(params.omega_base, init.omega_base)

  # On a new calibrated rig, every pair starts at its calibrated theta + delta, base as learned.
  new_rig = rigs.get_rig("h36m")
  layer = fusion_starts.make_fusion_layer("metafuse_calibrated", new_rig, SIZE, init=params)
  np.testing.assert_allclose(layer.theta.numpy(),
                             calibrated.calibrated_theta(new_rig, SIZE) + params.theta[None],
                             atol=1e-6)
  np.testing.assert_array_equal(layer.omega_base.numpy(), params.omega_base)
  assert not layer.omega_base.trainable
