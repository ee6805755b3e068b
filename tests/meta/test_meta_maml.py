"""MAML step: exact second-order gradients, first-order option, per-task batching."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import ops
from mf_tf.meta import maml

SIZE, TASKS, FRAMES, JOINTS = 6, 2, 2, 2


def _split(rng, dtype=tf.float64):
  return maml.TaskSplit(
      tf.constant(rng.random((TASKS, FRAMES, 2, SIZE, SIZE, JOINTS)), dtype),
      tf.constant(rng.random((TASKS, FRAMES, SIZE, SIZE, JOINTS)), dtype),
      tf.constant(rng.integers(0, 2, (TASKS, FRAMES, JOINTS)), dtype))


def _params(dtype=np.float64):
  return maml.MetaParams(tf.constant(ops.line_base(SIZE, 1.0, 0.3).astype(dtype)),
                         tf.constant(ops.translation_theta(SIZE).astype(dtype) * 0.9))


KW = dict(inner_lr=0.5, inner_steps=2, temperature=1.0)


def _objective(params, support, query, first_order=False):
  adapted, _ = maml.adapt(params, support, first_order=first_order, **KW)
  return float(tf.reduce_mean(maml.task_losses(adapted.omega_base, adapted.theta, query, 1.0)))


def test_second_order_gradient_matches_finite_differences():
  rng = np.random.default_rng(0)
  support, query = _split(rng), _split(rng)
  params = _params()
  grads, metrics = maml.maml_gradients(params, support, query, **KW)
  eps = 1e-6
  for which, index in [(0, (2, 3)), (0, (4, 1)), (1, (7, 2)), (1, (20, 0)), (1, (33, 5))]:
    delta = np.zeros(params[which].shape)
    delta[index] = eps
    plus = list(params)
    minus = list(params)
    plus[which] = params[which] + delta
    minus[which] = params[which] - delta
    numeric = (_objective(maml.MetaParams(*plus), support, query)
               - _objective(maml.MetaParams(*minus), support, query)) / (2 * eps)
    np.testing.assert_allclose(grads[which].numpy()[index], numeric, rtol=1e-5, atol=1e-9)
  assert metrics["query_loss_after"].numpy() == pytest.approx(_objective(params, support, query))


def test_first_order_differs_and_equals_gradient_at_adapted_params():
  rng = np.random.default_rng(1)
  support, query = _split(rng), _split(rng)
  params = _params()
  second, _ = maml.maml_gradients(params, support, query, **KW)
  first, _ = maml.maml_gradients(params, support, query, first_order=True, **KW)
  assert not np.allclose(first.theta.numpy(), second.theta.numpy())
  # First order: the query gradient at the adapted parameters, summed over tasks / T.
  adapted, _ = maml.adapt(params, support, first_order=True, **KW)
  adapted = maml.MetaParams(tf.Variable(adapted.omega_base), tf.Variable(adapted.theta))
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(maml.task_losses(adapted.omega_base, adapted.theta, query, 1.0))
  g_omega, g_theta = tape.gradient(loss, [adapted.omega_base, adapted.theta])
  np.testing.assert_allclose(first.omega_base.numpy(), tf.reduce_sum(tf.convert_to_tensor(
      g_omega), 0).numpy(), rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(first.theta.numpy(), tf.reduce_sum(g_theta, 0).numpy(),
                             rtol=1e-6, atol=1e-12)


def test_tasks_adapt_independently():
  rng = np.random.default_rng(2)
  support = _split(rng)
  params = _params()
  batched, losses = maml.adapt(params, support, **KW)
  for task in range(TASKS):
    single = maml.TaskSplit(*(x[task:task + 1] for x in support))
    alone, loss = maml.adapt(params, single, **KW)
    np.testing.assert_allclose(batched.theta[task].numpy(), alone.theta[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(batched.omega_base[task].numpy(), alone.omega_base[0].numpy(),
                               atol=1e-12)
    assert losses[task].numpy() == pytest.approx(loss[0].numpy())


def test_task_loss_uses_fusion_core():
  rng = np.random.default_rng(3)
  split = _split(rng)
  params = _params()
  matrices = ops.affine_matrices(params.omega_base, params.theta[None])
  fused = split.heatmaps[0][:, 1] + tf.reshape(tf.einsum(
      "ij,njc->nic", matrices[0], tf.reshape(split.heatmaps[0][:, 0], [FRAMES, SIZE * SIZE, -1])),
      [FRAMES, SIZE, SIZE, JOINTS])
  expected = ops.fusion_loss(fused[:, None], split.target[0][:, None], split.weights[0][:, None],
                             1.0)
  tiled = maml.tile_params(params, TASKS)
  got = maml.task_losses(tiled.omega_base, tiled.theta, split, 1.0)
  assert got[0].numpy() == pytest.approx(expected.numpy())


def test_compiled_step_matches_eager():
  rng = np.random.default_rng(4)
  support, query = _split(rng, tf.float32), _split(rng, tf.float32)
  params = _params(np.float32)
  eager, _ = maml.maml_gradients(params, support, query, **KW)
  compiled = tf.function(functools.partial(maml.maml_gradients, **KW), jit_compile=True)
  xla, _ = compiled(params, support, query)
  np.testing.assert_allclose(xla.theta.numpy(), eager.theta.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bad", [dict(inner_lr=-1.0), dict(inner_steps=0), dict(temperature=0.0)])
def test_bad_hyperparameters(bad):
  values = dict(inner_lr=1.0, inner_steps=1, temperature=0.2)
  values.update(bad)
  with pytest.raises(ValueError):
    maml.validate_hyperparameters(**values)
