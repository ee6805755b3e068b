"""Sampler: forward vs the core image op, gradients (first and second order) vs finite differences."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import layers as fusion_layers
from mf_tf.fusion import sampler

_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

pytestmark = pytest.mark.usefixtures("warp_backend")


def _random_case(rng, height=5, width=6, count=4, scale=0.3):
  omega = rng.normal(size=(height, width))
  theta = _IDENTITY + scale * rng.normal(size=(count, 6))
  return omega, theta


def test_identity_theta_reproduces_base():
  rng = np.random.default_rng(0)
  omega = rng.normal(size=(7, 9))
  warped = sampler.warp_maps(tf.constant(omega), tf.constant(_IDENTITY[None])).numpy()
  np.testing.assert_allclose(warped[0], omega, atol=1e-12)


def test_translation_by_one_pixel_shifts_and_fills_zero():
  omega = np.arange(20, dtype=np.float64).reshape(4, 5)
  theta = _IDENTITY.copy()
  theta[2] = 2.0 / (5 - 1)  # +1 pixel in x: output (r, c) reads base (r, c + 1).
  warped = sampler.warp_maps(tf.constant(omega), tf.constant(theta[None])).numpy()[0]
  np.testing.assert_allclose(warped[:, :-1], omega[:, 1:], atol=1e-12)
  np.testing.assert_allclose(warped[:, -1], 0.0, atol=1e-12)


@pytest.mark.parametrize("height,width", [(7, 9), (16, 16)])
def test_forward_matches_image_projective_transform(height, width):
  rng = np.random.default_rng(1)
  omega, theta = _random_case(rng, height, width, count=6, scale=0.4)
  warped = sampler.warp_maps(tf.constant(omega, tf.float32), tf.constant(theta, tf.float32))
  matrix = sampler.normalized_to_pixel_projective(theta, height, width)
  matrix = matrix / matrix[..., 2:3, 2:3]
  transforms = matrix.reshape(-1, 9)[:, :8].astype(np.float32)
  images = np.broadcast_to(omega[None, :, :, None], (6, height, width, 1)).astype(np.float32)
  reference = tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=[height, width], fill_value=0.0,
      interpolation="BILINEAR", fill_mode="CONSTANT")
  np.testing.assert_allclose(warped.numpy(), reference.numpy()[..., 0], atol=1e-5)


def test_far_outside_reads_zero():
  omega = tf.ones([4, 4], tf.float64)
  theta = tf.constant([[1.0, 0, 5.0, 0, 1, 0], [1.0, 0, -7.0, 0, 1, 3.0],
                       [1.0, 0, 1e12, 0, 1, 0]], tf.float64)
  np.testing.assert_allclose(sampler.warp_base(omega, theta).numpy(), 0.0)


def test_non_finite_theta_gives_nan_rows_and_leaves_the_other_rows_exact():
  # The pure sampler does not check its inputs (the layers do, below): a transform with a
  # non-finite parameter yields an all-NaN row, every other row is computed as if it were alone.
  omega = tf.constant(np.random.default_rng(5).normal(size=(4, 4)))
  theta = np.array([[1.0, 0, 0.1, 0, 1, 0], [np.nan, 0, 0, 0, 1, 0], [1.0, 0, 0, 0, 1, np.nan],
                    [0.9, 0.1, 0, 0, 1, 0.2], [np.inf, 0, 0, 0, 1, 0]])
  out = sampler.warp_base(omega, tf.constant(theta)).numpy()
  assert out.shape == (5, 16)
  np.testing.assert_array_equal(np.isnan(out).all(axis=1), [False, True, True, False, True])
  finite_rows = [0, 3]
  assert np.isfinite(out[finite_rows]).all()
  np.testing.assert_array_equal(
      out[finite_rows], sampler.warp_base(omega, tf.constant(theta[finite_rows])).numpy())


def test_fusion_layer_refuses_non_finite_theta():
  layer = fusion_layers.AffineFusion(num_views=2, heatmap_size=4)
  layer.build((None, 2, 4, 4, 1))
  theta = layer.theta.numpy()
  theta[1, 3, 0] = np.nan
  with pytest.raises(ValueError, match="theta holds NaN or Inf"):
    layer.assign_parameters(theta=theta)
  layer.theta.assign(theta)  # Bypassing the check: computing the matrices still refuses.
  with pytest.raises(tf.errors.InvalidArgumentError, match="'theta' holds NaN or Inf"):
    layer.fusion_matrices()


def _objective(omega, theta, weights):
  warped = sampler.warp_base(omega, theta)
  return tf.reduce_sum(weights * tf.sin(2.0 * warped) + 0.5 * warped ** 2)


def test_first_order_gradients_match_finite_differences():
  rng = np.random.default_rng(2)
  omega, theta = _random_case(rng)
  weights = tf.constant(rng.normal(size=(4, 30)))
  omega_t, theta_t = tf.constant(omega), tf.constant(theta)
  with tf.GradientTape() as tape:
    tape.watch([omega_t, theta_t])
    value = _objective(omega_t, theta_t, weights)
  grad_omega, grad_theta = tape.gradient(value, [omega_t, theta_t])
  eps = 1e-6
  for array, grad in ((omega, grad_omega), (theta, grad_theta)):
    direction = rng.normal(size=array.shape)
    plus = array + eps * direction
    minus = array - eps * direction
    args = lambda a: (a, theta) if array is omega else (omega, a)  # noqa: E731
    numeric = (_objective(*map(tf.constant, args(plus)), weights)
               - _objective(*map(tf.constant, args(minus)), weights)) / (2 * eps)
    analytic = np.sum(grad.numpy() * direction)
    assert abs(analytic) > 1e-3
    np.testing.assert_allclose(analytic, numeric.numpy(), rtol=1e-6, atol=1e-8)


def _hessian_vector(omega, theta, weights, v_omega, v_theta):
  with tf.GradientTape() as outer:
    outer.watch([omega, theta])
    with tf.GradientTape() as inner:
      inner.watch([omega, theta])
      value = _objective(omega, theta, weights)
    g_omega, g_theta = inner.gradient(value, [omega, theta])
    directional = tf.reduce_sum(g_omega * v_omega) + tf.reduce_sum(g_theta * v_theta)
  return outer.gradient(directional, [omega, theta])


def test_second_order_gradients_match_finite_differences_and_are_nonzero():
  rng = np.random.default_rng(3)
  omega, theta = _random_case(rng)
  weights = tf.constant(rng.normal(size=(4, 30)))
  v_omega, v_theta = rng.normal(size=omega.shape), rng.normal(size=theta.shape)
  hv_omega, hv_theta = _hessian_vector(tf.constant(omega), tf.constant(theta), weights,
                                       tf.constant(v_omega), tf.constant(v_theta))
  assert hv_omega is not None and hv_theta is not None

  def gradient(omega_value, theta_value):
    o, t = tf.constant(omega_value), tf.constant(theta_value)
    with tf.GradientTape() as tape:
      tape.watch([o, t])
      value = _objective(o, t, weights)
    return [g.numpy() for g in tape.gradient(value, [o, t])]

  eps = 1e-6
  plus = gradient(omega + eps * v_omega, theta + eps * v_theta)
  minus = gradient(omega - eps * v_omega, theta - eps * v_theta)
  for analytic, p, m in ((hv_omega, plus[0], minus[0]), (hv_theta, plus[1], minus[1])):
    numeric = (p - m) / (2 * eps)
    assert np.abs(analytic.numpy()).max() > 1e-2
    np.testing.assert_allclose(analytic.numpy(), numeric, rtol=1e-5, atol=1e-6)
  # The pure theta-theta block alone is nonzero too (bilinear cross terms and the loss curvature).
  hv_theta_only = _hessian_vector(tf.constant(omega), tf.constant(theta), weights,
                                  tf.zeros_like(v_omega), tf.constant(v_theta))[1]
  assert np.abs(hv_theta_only.numpy()).max() > 1e-2


def test_maml_step_gradient_matches_finite_differences_forward_accumulator(warp_backend):
  """d/dtheta L_outer(theta - alpha * grad L_inner(theta)) vs finite differences and forward mode."""
  rng = np.random.default_rng(4)
  omega, theta = _random_case(rng)
  w_inner = tf.constant(rng.normal(size=(4, 30)))
  w_outer = tf.constant(rng.normal(size=(4, 30)))
  alpha = 0.05

  def meta_objective(omega_t, theta_t):
    with tf.GradientTape() as tape:
      tape.watch([omega_t, theta_t])
      inner = _objective(omega_t, theta_t, w_inner)
    g_omega, g_theta = tape.gradient(inner, [omega_t, theta_t])
    return _objective(omega_t - alpha * g_omega, theta_t - alpha * g_theta, w_outer)

  omega_t, theta_t = tf.constant(omega), tf.constant(theta)
  with tf.GradientTape() as tape:
    tape.watch([omega_t, theta_t])
    value = meta_objective(omega_t, theta_t)
  grad_omega, grad_theta = tape.gradient(value, [omega_t, theta_t])
  direction = rng.normal(size=theta.shape)
  eps = 1e-6
  numeric = (meta_objective(omega_t, tf.constant(theta + eps * direction))
             - meta_objective(omega_t, tf.constant(theta - eps * direction))) / (2 * eps)
  analytic = np.sum(grad_theta.numpy() * direction)
  np.testing.assert_allclose(analytic, numeric.numpy(), rtol=1e-5)
  assert np.abs(grad_omega.numpy()).max() > 0
  if warp_backend == "kernel":  # Forward mode over a gradient needs third-order kernels.
    return
  with tf.autodiff.ForwardAccumulator(theta_t, tf.constant(direction)) as accumulator:
    forward_value = meta_objective(omega_t, theta_t)
  np.testing.assert_allclose(accumulator.jvp(forward_value).numpy(), analytic, rtol=1e-8)


def test_batched_base_matches_per_task_calls_and_compiles_with_xla():
  rng = np.random.default_rng(5)
  omegas = rng.normal(size=(3, 5, 6)).astype(np.float32)
  thetas = (_IDENTITY + 0.3 * rng.normal(size=(3, 2, 30, 6))).astype(np.float32)
  batched = sampler.warp_base(tf.constant(omegas), tf.constant(thetas)).numpy()
  for task in range(3):
    np.testing.assert_allclose(batched[task], sampler.warp_base(omegas[task], thetas[task]),
                               atol=1e-6)

  @tf.function(jit_compile=True)
  def second_order(omega, theta):
    with tf.GradientTape() as outer:
      outer.watch(theta)
      with tf.GradientTape() as inner:
        inner.watch(theta)
        value = tf.reduce_sum(tf.sin(sampler.warp_base(omega, theta)))
      grad = inner.gradient(value, theta)
      norm = tf.reduce_sum(grad ** 2)
    return outer.gradient(norm, theta)

  xla = second_order(tf.constant(omegas[0]), tf.constant(thetas[0, 0])).numpy()
  eager = second_order.python_function(tf.constant(omegas[0]), tf.constant(thetas[0, 0])).numpy()
  np.testing.assert_allclose(xla, eager, rtol=1e-4, atol=1e-5)
  assert np.abs(xla).max() > 0
