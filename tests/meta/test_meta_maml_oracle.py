"""MAML inner step and meta-gradient against a closed form worked out in NumPy.

The case: one task, one frame, one joint, 3x3 heatmaps, cross-entropy loss. Every row i of theta
is [0, 0, a_i, 0, 0, b_i], so target pixel i samples the base map at one point (X_i, Y_i) =
(a_i + 1, b_i + 1) (base pixels, align_corners, 3x3) for every source pixel:

    W[i, j] = s_i = bilinear(omega, X_i, Y_i),   fused_i = h_target[i] + S s_i,

with S = sum_j h_source[j]. The source view is uniform, so sum_j h_source[j] x_j =
sum_j h_source[j] y_j = 0 over the symmetric grid: the gradients of theta's other four columns
vanish, they stay 0 after the inner step, and so do their meta-gradients. Then, with
p = softmax(fused / T) and q = target / sum(target),

    L = -sum_i q_i log p_i - H(q),   dL/ds = S (p - q) / T,   d2L/ds2 = S^2 (diag p - p p^T) / T^2,

and with phi = (omega [9], a [9], b [9]), J = ds/dphi and the second derivatives of the bilinear
s_i (d2/da db = omega_00 - omega_01 - omega_10 + omega_11, d2/(domega da) and d2/(domega db) the
derivatives of the corner weights, the rest zero):

    grad = J^T dL/ds,   hess = J^T d2L/ds2 J + sum_i (dL/ds_i) d2s_i/dphi2.

MAML with one inner step (Finn et al. 2017): phi' = phi - alpha grad_support(phi), second-order
meta-gradient (I - alpha hess_support(phi)) grad_query(phi'), first order grad_query(phi').
"""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.meta import maml

SIZE = 3
TEMPERATURE = 0.5
ALPHA = 0.3
SCALE = (SIZE - 1) / 2.0  # Normalized -> pixel coordinates of the base map.
NUM = SIZE * SIZE

# Sample points (X, Y) of the nine rows, inside the base map and off its pixel grid lines.
SAMPLE_X = np.array([0.3, 1.6, 0.45, 1.25, 0.7, 1.8, 0.15, 1.4, 0.85])
SAMPLE_Y = np.array([1.7, 0.35, 1.15, 0.6, 1.45, 0.2, 0.9, 1.3, 0.55])


def _omega():
  return np.random.default_rng(7).uniform(0.2, 1.5, (SIZE, SIZE))


def _data(source_value, seed):
  """(uniform source value, target-view heatmap [9], Gaussian-like target [9])."""
  rng = np.random.default_rng(seed)
  return (source_value, rng.uniform(0.0, 1.0, NUM), rng.uniform(0.05, 1.0, NUM))


SUPPORT = _data(0.4, 1)
QUERY = _data(0.25, 2)


def _phi():
  return np.concatenate([_omega().ravel(), SAMPLE_X / SCALE - 1.0, SAMPLE_Y / SCALE - 1.0])


def _closed_form(phi, data):
  """(loss, gradient [27], Hessian [27, 27]) of the case in the module docstring."""
  omega, a, b = phi[:NUM], phi[NUM:2 * NUM], phi[2 * NUM:]
  x, y = (a + 1.0) * SCALE, (b + 1.0) * SCALE
  col, row = np.floor(x).astype(int), np.floor(y).astype(int)
  fx, fy = x - col, y - row
  # Corners 00, 01, 10, 11 (row, column offsets) and their bilinear weights.
  corner = np.stack([row * SIZE + col, row * SIZE + col + 1, (row + 1) * SIZE + col,
                     (row + 1) * SIZE + col + 1], axis=1)
  weight = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1)
  weight_x = np.stack([-(1 - fy), 1 - fy, -fy, fy], axis=1)  # d weight / d fx
  weight_y = np.stack([-(1 - fx), -fx, 1 - fx, fx], axis=1)  # d weight / d fy
  weight_xy = np.array([1.0, -1.0, -1.0, 1.0])
  values = omega[corner]  # [9, 4]
  s = np.sum(weight * values, axis=1)

  source_value, h_target, target = data
  total_source = source_value * NUM
  logits = (h_target + total_source * s) / TEMPERATURE
  p = np.exp(logits - logits.max())
  p /= p.sum()
  q = target / target.sum()
  loss = -np.sum(q * np.log(p)) + np.sum(q * np.log(q))
  d_s = total_source * (p - q) / TEMPERATURE
  d2_s = total_source ** 2 * (np.diag(p) - np.outer(p, p)) / TEMPERATURE ** 2

  jacobian = np.zeros((NUM, 3 * NUM))
  second = np.zeros((NUM, 3 * NUM, 3 * NUM))
  for i in range(NUM):
    ia, ib = NUM + i, 2 * NUM + i
    jacobian[i, corner[i]] = weight[i]
    jacobian[i, ia] = SCALE * np.sum(weight_x[i] * values[i])
    jacobian[i, ib] = SCALE * np.sum(weight_y[i] * values[i])
    second[i, corner[i], ia] = second[i, ia, corner[i]] = SCALE * weight_x[i]
    second[i, corner[i], ib] = second[i, ib, corner[i]] = SCALE * weight_y[i]
    second[i, ia, ib] = second[i, ib, ia] = SCALE * SCALE * np.sum(weight_xy * values[i])
  gradient = jacobian.T @ d_s
  hessian = jacobian.T @ d2_s @ jacobian + np.einsum("i,ikl->kl", d_s, second)
  return loss, gradient, hessian


def _task_split(data):
  source_value, h_target, target = data
  heatmaps = np.stack([np.full((SIZE, SIZE), source_value), h_target.reshape(SIZE, SIZE)])
  return maml.TaskSplit(tf.constant(heatmaps[None, None, ..., None]),
                        tf.constant(target.reshape(1, 1, SIZE, SIZE, 1)),
                        tf.ones((1, 1, 1), tf.float64))


def _params(phi):
  theta = np.zeros((NUM, 6))
  theta[:, 2], theta[:, 5] = phi[NUM:2 * NUM], phi[2 * NUM:]
  return maml.MetaParams(tf.constant(phi[:NUM].reshape(SIZE, SIZE)), tf.constant(theta))


def _as_phi(omega, theta):
  """(omega [3, 3], theta [9, 6]) -> phi [27], asserting theta's other columns are 0."""
  theta = np.asarray(theta)
  np.testing.assert_allclose(theta[:, [0, 1, 3, 4]], 0.0, atol=1e-12)
  return np.concatenate([np.asarray(omega).ravel(), theta[:, 2], theta[:, 5]])


KW = dict(inner_lr=ALPHA, inner_steps=1, temperature=TEMPERATURE, loss="ce")


def test_closed_form_derivatives_match_finite_differences():
  phi, eps = _phi(), 1e-6
  _, gradient, hessian = _closed_form(phi, SUPPORT)
  steps = np.eye(phi.size) * eps
  numeric_gradient = np.array([(_closed_form(phi + e, SUPPORT)[0]
                                - _closed_form(phi - e, SUPPORT)[0]) / (2 * eps) for e in steps])
  numeric_hessian = np.array([(_closed_form(phi + e, SUPPORT)[1]
                               - _closed_form(phi - e, SUPPORT)[1]) / (2 * eps) for e in steps])
  np.testing.assert_allclose(gradient, numeric_gradient, atol=1e-8)
  np.testing.assert_allclose(hessian, numeric_hessian, atol=1e-8)


@pytest.mark.parametrize("remat", [True, False])
def test_inner_step_matches_closed_form(remat):
  phi = _phi()
  loss, gradient, _ = _closed_form(phi, SUPPORT)
  adapted, support_loss = maml.adapt(_params(phi), _task_split(SUPPORT), remat=remat, **KW)
  expected = phi - ALPHA * gradient  # A descent step: the support loss goes down.
  assert _closed_form(expected, SUPPORT)[0] < loss
  np.testing.assert_allclose(support_loss.numpy(), [loss], rtol=1e-12)
  np.testing.assert_allclose(_as_phi(adapted.omega_base[0], adapted.theta[0]), expected,
                             rtol=0, atol=1e-12)


@pytest.mark.parametrize("remat", [True, False])
def test_second_order_meta_gradient_matches_closed_form(remat):
  phi = _phi()
  _, gradient, hessian = _closed_form(phi, SUPPORT)
  adapted = phi - ALPHA * gradient
  query_loss, query_gradient, _ = _closed_form(adapted, QUERY)
  expected = (np.eye(phi.size) - ALPHA * hessian) @ query_gradient
  grads, metrics = maml.maml_gradients(_params(phi), _task_split(SUPPORT), _task_split(QUERY),
                                       remat=remat, **KW)
  np.testing.assert_allclose(_as_phi(grads.omega_base, grads.theta), expected, rtol=0,
                             atol=1e-12)
  assert metrics["query_loss_after"].numpy() == pytest.approx(query_loss, rel=1e-12)
  assert metrics["query_loss_before"].numpy() == pytest.approx(_closed_form(phi, QUERY)[0],
                                                               rel=1e-12)
  # The second-order term matters here: a first-order gradient would be far off.
  assert np.abs(expected - query_gradient).max() > 0.1


def test_first_order_meta_gradient_matches_closed_form():
  phi = _phi()
  adapted = phi - ALPHA * _closed_form(phi, SUPPORT)[1]
  _, expected, _ = _closed_form(adapted, QUERY)
  grads, _ = maml.maml_gradients(_params(phi), _task_split(SUPPORT), _task_split(QUERY),
                                 first_order=True, **KW)
  np.testing.assert_allclose(_as_phi(grads.omega_base, grads.theta), expected, rtol=0,
                             atol=1e-12)
