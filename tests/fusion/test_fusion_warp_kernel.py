"""Warp kernels: equal to the TensorFlow-op sampler (values, first and second derivatives), errors,
where they run (not under XLA, not in a SavedModel), and the build cache."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import sampler
from mf_tf.fusion import warp_kernel

pytestmark = pytest.mark.usefixtures("kernels")

HEIGHT, WIDTH = 7, 9


@pytest.fixture
def kernels(monkeypatch):
  # Switched on: `backend="auto"` picks the kernels outside XLA on any machine, beside a GPU too.
  monkeypatch.setenv(warp_kernel.ENV_SWITCH, "1")
  assert warp_kernel.available(), warp_kernel.unavailable_reason()


def _case(seed, bases, maps=3, rows=5, scale=0.35, dtype=np.float64):
  """Base [B, H, W] and theta [P, N, 6] whose samples fall off the pixel centres and partly
  outside the base (so the zero padding and every clamp are exercised)."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(bases, HEIGHT, WIDTH)).astype(dtype)
  theta = (np.array([1.1, 0.1, 0.05, -0.1, 0.9, 0.02]) +
           scale * rng.normal(size=(maps, rows, 6))).astype(dtype)
  return tf.constant(base), tf.constant(theta), rng


def _reference_base(base):
  return base[0] if base.shape[0] == 1 else base


@pytest.mark.parametrize("bases", [1, 3])
def test_forward_and_gradients_equal_the_tf_sampler_in_float64(bases):
  base, theta, rng = _case(0, bases)
  upstream = tf.constant(rng.normal(size=(3, 5, HEIGHT * WIDTH)))
  reference = sampler.warp_base(_reference_base(base), theta, backend="tf")
  np.testing.assert_allclose(warp_kernel.warp(base, theta), reference, rtol=0, atol=1e-13)

  results = {}
  for backend in ("tf", "kernel"):
    with tf.GradientTape() as tape:
      tape.watch([base, theta])
      warped = sampler.warp_base(_reference_base(base), theta, backend=backend)
    results[backend] = tape.gradient(warped, [base, theta], output_gradients=upstream)
  for ours, theirs in zip(results["kernel"], results["tf"]):
    assert np.abs(theirs).max() > 1.0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12 * np.abs(theirs).max())


@pytest.mark.parametrize("bases", [1, 3])
def test_second_derivatives_equal_the_tf_sampler_in_float64(bases):
  base, theta, rng = _case(1, bases)
  upstream = tf.constant(rng.normal(size=(3, 5, HEIGHT * WIDTH)))
  up_base = tf.constant(rng.normal(size=base.shape))
  up_theta = tf.constant(rng.normal(size=theta.shape))
  results = {}
  for backend in ("tf", "kernel"):
    with tf.GradientTape() as outer:
      outer.watch([base, theta, upstream])
      with tf.GradientTape() as inner:
        inner.watch([base, theta])
        warped = sampler.warp_base(_reference_base(base), theta, backend=backend)
      grad_base, grad_theta = inner.gradient(warped, [base, theta], output_gradients=upstream)
      directional = (tf.reduce_sum(tf.convert_to_tensor(grad_base) * up_base) +
                     tf.reduce_sum(grad_theta * up_theta))
    results[backend] = outer.gradient(directional, [base, theta, upstream])
  for name, ours, theirs in zip(("base", "theta", "upstream"), results["kernel"], results["tf"]):
    assert np.abs(theirs).max() > 1.0, name
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12 * np.abs(theirs).max(),
                               err_msg=name)


def test_float32_matches_float64_to_float32_rounding():
  base, theta, rng = _case(2, 1, maps=2, rows=64)
  upstream = rng.normal(size=(2, 64, HEIGHT * WIDTH))
  values = {}
  for dtype in (tf.float64, tf.float32):
    b, t, u = tf.cast(base, dtype), tf.cast(theta, dtype), tf.constant(upstream, dtype)
    with tf.GradientTape() as tape:
      tape.watch([b, t])
      warped = warp_kernel.warp(b, t)
    values[dtype] = [warped] + tape.gradient(warped, [b, t], output_gradients=u)
  for ours, exact in zip(values[tf.float32], values[tf.float64]):
    assert ours.dtype == tf.float32
    np.testing.assert_allclose(ours, exact, rtol=0, atol=2e-5 * np.abs(exact).max())


def test_non_finite_theta_gives_nan_rows_and_far_outside_reads_zero():
  base, theta, _ = _case(3, 1, maps=1, rows=4)
  theta = theta.numpy()
  theta[0, 1, 2] = np.nan
  theta[0, 2, 5] = np.inf
  theta[0, 3, 2] = 1e9  # Finite, far outside: zeros.
  out = warp_kernel.warp(base, tf.constant(theta)).numpy()[0]
  reference = sampler.warp_base(base[0], tf.constant(theta), backend="tf").numpy()[0]
  assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
  np.testing.assert_array_equal(out[3], 0.0)
  np.testing.assert_allclose(out[0], reference[0], atol=1e-13)
  np.testing.assert_array_equal(np.isnan(out), np.isnan(reference))


def test_gradients_are_deterministic():
  base, theta, rng = _case(4, 1, maps=4, rows=40, dtype=np.float32)
  upstream = tf.constant(rng.normal(size=(4, 40, HEIGHT * WIDTH)).astype(np.float32))
  library = warp_kernel._library()  # pylint: disable=protected-access
  first = [t.numpy() for t in library.mf_affine_warp_grad(base, theta, upstream)]
  for _ in range(3):
    again = [t.numpy() for t in library.mf_affine_warp_grad(base, theta, upstream)]
    for a, b in zip(first, again):
      np.testing.assert_array_equal(a, b)


def test_bad_shapes_name_what_was_expected():
  base, theta, _ = _case(5, 1)
  library = warp_kernel._library()  # pylint: disable=protected-access
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"theta must be \[P, N, 6\]"):
    library.mf_affine_warp(base, theta[..., :5])
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"leading dimension must be 1 or"):
    library.mf_affine_warp(tf.concat([base, base], 0), theta)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"grad must be \[3, 5, 63\]"):
    library.mf_affine_warp_grad(base, theta, tf.zeros([3, 5, 62], tf.float64))


def test_third_derivative_is_refused_with_a_clear_error():
  base, theta, _ = _case(6, 1, maps=1, rows=2)
  with tf.GradientTape() as third:
    third.watch(theta)
    with tf.GradientTape() as second:
      second.watch(theta)
      with tf.GradientTape() as first:
        first.watch(theta)
        value = tf.reduce_sum(warp_kernel.warp(base, theta) ** 3)
      grad_sum = tf.reduce_sum(first.gradient(value, theta) ** 2)
    second_sum = tf.reduce_sum(second.gradient(grad_sum, theta) ** 2)
  with pytest.raises(warp_kernel.KernelUnavailableError, match="third derivatives"):
    third.gradient(second_sum, theta)


def test_forward_mode_equals_reverse_mode_and_forward_over_a_gradient_is_refused():
  base, theta, rng = _case(9, 1)
  direction = tf.constant(rng.normal(size=theta.shape))
  weights = tf.constant(rng.normal(size=(3, 5, HEIGHT * WIDTH)))
  objective = lambda t: tf.reduce_sum(weights * tf.sin(warp_kernel.warp(base, t)))  # noqa: E731
  with tf.GradientTape() as tape:
    tape.watch(theta)
    value = objective(theta)
  reverse = tf.reduce_sum(tape.gradient(value, theta) * direction)
  with tf.autodiff.ForwardAccumulator(theta, direction) as accumulator:
    forward_value = objective(theta)
  np.testing.assert_allclose(accumulator.jvp(forward_value), reverse, rtol=1e-10)

  with pytest.raises(warp_kernel.KernelUnavailableError, match="third derivatives"):
    with tf.autodiff.ForwardAccumulator(theta, direction):
      with tf.GradientTape() as tape:
        tape.watch(theta)
        value = objective(theta)
      tape.gradient(value, theta)


def test_xla_functions_use_the_tf_ops_and_kernel_backend_is_refused_there():
  base, theta, _ = _case(7, 1)

  @tf.function(jit_compile=True)
  def compiled(b, t):
    return sampler.warp_base(b, t)

  np.testing.assert_allclose(compiled(base[0], theta), warp_kernel.warp(base, theta),
                             atol=1e-13)
  graph = tf.function(lambda b, t: sampler.warp_base(b, t)).get_concrete_function(
      base[0], theta).graph
  assert "MfAffineWarp" in {op.type for op in graph.get_operations()}

  @tf.function(jit_compile=True)
  def forced(b, t):
    return sampler.warp_base(b, t, backend="kernel")

  with pytest.raises(ValueError, match="cannot run inside an XLA-compiled function"):
    forced(base[0], theta)


def test_saved_models_do_not_need_the_library(tmp_path):
  base, theta, _ = _case(8, 1)
  module = tf.Module()
  module.warp = tf.function(lambda t: sampler.warp_base(base[0], t),
                            input_signature=[tf.TensorSpec(theta.shape, tf.float64)])
  tf.saved_model.save(module, str(tmp_path))
  saved = tf.saved_model.load(str(tmp_path))
  graph = saved.warp.get_concrete_function().graph
  assert "MfAffineWarp" not in {op.type for op in graph.get_operations()}
  np.testing.assert_allclose(saved.warp(theta), warp_kernel.warp(base, theta), atol=1e-13)


def test_build_is_cached_and_switch_and_missing_compiler_are_reported(tmp_path, monkeypatch):
  path = warp_kernel.build(str(tmp_path))
  assert os.path.dirname(path) == str(tmp_path) and path.endswith(".so")
  stamp = os.stat(path).st_mtime_ns
  assert warp_kernel.build(str(tmp_path)) == path and os.stat(path).st_mtime_ns == stamp
  assert [name for name in os.listdir(tmp_path) if not name.endswith((".so", ".lock"))] == []

  monkeypatch.setenv("PATH", str(tmp_path))
  monkeypatch.delenv("CXX", raising=False)
  with pytest.raises(warp_kernel.KernelUnavailableError, match="no C\\+\\+ compiler found"):
    warp_kernel.build(str(tmp_path / "other"))

  monkeypatch.setenv(warp_kernel.ENV_SWITCH, "0")
  warp_kernel._load.cache_clear()  # pylint: disable=protected-access
  try:
    assert not warp_kernel.available()
    assert "turns the warp kernels off" in warp_kernel.unavailable_reason()
    assert warp_kernel.xla_for_warps()
  finally:
    monkeypatch.delenv(warp_kernel.ENV_SWITCH)
    warp_kernel._load.cache_clear()  # pylint: disable=protected-access
