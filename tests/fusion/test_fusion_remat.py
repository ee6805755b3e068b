"""Rematerializing affine fusion: values and gradients of every order equal the plain path's."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import layers
from mf_tf.fusion import ops
from mf_tf.fusion import sampler
from mf_tf.meta import maml
from fusion_layer_test_helper import random_heatmaps
from fusion_layer_test_helper import run_layer_test

SIZE, VIEWS, BATCH, JOINTS = 8, 3, 2, 2
PAIRS, PIXELS = VIEWS * (VIEWS - 1), SIZE * SIZE
TIGHT = dict(rtol=1e-10, atol=1e-12)

pytestmark = pytest.mark.usefixtures("warp_backend")


def _parameters(rng, pairs=PAIRS, size=SIZE, spread=0.3):
  """float64 omega [H, W] and theta [P, HW, 6]; the spread moves samples off the base too."""
  omega = tf.constant(rng.normal(size=(size, size)))
  theta = tf.constant(ops.translation_theta(size, pairs).astype(np.float64)
                      + spread * rng.normal(size=(pairs, size * size, 6)))
  return omega, theta


def _heatmaps(rng):
  return tf.constant(rng.normal(size=(BATCH, VIEWS, SIZE, SIZE, JOINTS)))


def _loss(heatmaps, omega, theta, remat, chunk_pixels=None):
  """A non-linear scalar of the fused heatmaps (the temperature-softmax fusion loss)."""
  if remat:
    fused = ops.fuse_affine(heatmaps, omega, theta, chunk_pixels=chunk_pixels)
  else:
    fused = ops.fuse(heatmaps, ops.affine_matrices(omega, theta))
  target = tf.cos(tf.reshape(tf.range(tf.size(fused), dtype=fused.dtype), tf.shape(fused))) ** 2
  return ops.fusion_loss(fused, target, None, temperature=0.5)


def _first_order(heatmaps, omega, theta, remat, chunk_pixels=None):
  """(loss, [d/dheatmaps, d/domega, d/dtheta])."""
  inputs = [heatmaps, omega, theta]
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    loss = _loss(*inputs, remat, chunk_pixels)
  return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, inputs)]


def _gradient_norm(heatmaps, omega, theta, remat, chunk_pixels=None):
  """s = ||grad L||^2 (a first-order quantity) and its gradient (second order)."""
  inputs = [heatmaps, omega, theta]
  with tf.GradientTape() as outer:
    outer.watch(inputs)
    _, grads = _first_order(heatmaps, omega, theta, remat, chunk_pixels)
    norm = tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])
  return norm, [tf.convert_to_tensor(g) for g in outer.gradient(norm, inputs)]


def _compiled(fn, mode):
  if mode == "eager":
    return fn
  return tf.function(fn, jit_compile=mode == "xla")


def _assert_all_close(got, expected, **tolerance):
  for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), **tolerance)


@pytest.mark.parametrize("chunk_pixels", [1, 7, 16, PIXELS, None])
@pytest.mark.parametrize("per_map_base", [False, True])
def test_warp_product_equals_product_of_warps(chunk_pixels, per_map_base):
  rng = np.random.default_rng(chunk_pixels or 0)
  omega, theta = _parameters(rng)
  if per_map_base:
    omega = tf.constant(rng.normal(size=(PAIRS, SIZE, SIZE)))
  sources = tf.constant(rng.normal(size=(PAIRS, PIXELS, 5)))
  expected = tf.matmul(sampler.warp_base(omega, theta), sources)
  got = sampler.warp_product(omega, theta, sources, chunk_pixels=chunk_pixels)
  assert got.shape == (PAIRS, PIXELS, 5)
  _assert_all_close(got, expected, **TIGHT)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_fuse_affine_forward_and_gradients_equal_plain(mode):
  rng = np.random.default_rng(1)
  heatmaps, (omega, theta) = _heatmaps(rng), _parameters(rng)
  step = _compiled(_first_order, mode)
  plain_loss, plain_grads = step(heatmaps, omega, theta, False)
  remat_loss, remat_grads = step(heatmaps, omega, theta, True, 5)
  _assert_all_close(ops.fuse_affine(heatmaps, omega, theta, chunk_pixels=5),
                    ops.fuse(heatmaps, ops.affine_matrices(omega, theta)), **TIGHT)
  _assert_all_close(remat_loss, plain_loss, **TIGHT)
  _assert_all_close(remat_grads, plain_grads, rtol=1e-9, atol=1e-11)
  assert all(np.abs(g.numpy()).max() > 1e-3 for g in remat_grads)  # Every input gets a gradient.


def test_fuse_affine_gradients_match_finite_differences():
  rng = np.random.default_rng(2)
  inputs = [_heatmaps(rng), *_parameters(rng)]
  _, grads = _first_order(*inputs, True, 9)
  eps = 1e-6
  for which, grad in enumerate(grads):
    direction = rng.normal(size=inputs[which].shape)
    shifted = [list(inputs), list(inputs)]
    shifted[0][which] = inputs[which] + eps * direction
    shifted[1][which] = inputs[which] - eps * direction
    numeric = (_loss(*shifted[0], True, 9) - _loss(*shifted[1], True, 9)) / (2 * eps)
    np.testing.assert_allclose(np.sum(grad.numpy() * direction), numeric.numpy(), rtol=1e-6)


@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_second_order_equals_plain(mode):
  rng = np.random.default_rng(3)
  heatmaps, (omega, theta) = _heatmaps(rng), _parameters(rng)
  step = _compiled(_gradient_norm, mode)
  plain_norm, plain_grads = step(heatmaps, omega, theta, False)
  remat_norm, remat_grads = step(heatmaps, omega, theta, True, 11)
  _assert_all_close(remat_norm, plain_norm, **TIGHT)
  _assert_all_close(remat_grads, plain_grads, rtol=1e-8, atol=1e-10)
  assert all(np.abs(g.numpy()).max() > 1e-3 for g in remat_grads)


def test_second_order_matches_finite_differences():
  rng = np.random.default_rng(4)
  inputs = [_heatmaps(rng), *_parameters(rng)]
  gradient_norm = tf.function(lambda h, o, t: _gradient_norm(h, o, t, True, 24))
  _, grads = gradient_norm(*inputs)
  eps = 1e-6
  for which, grad in enumerate(grads):
    direction = rng.normal(size=inputs[which].shape)
    shifted = [list(inputs), list(inputs)]
    shifted[0][which] = inputs[which] + eps * direction
    shifted[1][which] = inputs[which] - eps * direction
    numeric = (gradient_norm(*shifted[0])[0] - gradient_norm(*shifted[1])[0]) / (2 * eps)
    np.testing.assert_allclose(np.sum(grad.numpy() * direction), numeric.numpy(), rtol=1e-5)


def _maml_split(rng, tasks=2, frames=2):
  return maml.TaskSplit(tf.constant(rng.random((tasks, frames, 2, SIZE, SIZE, JOINTS))),
                        tf.constant(rng.random((tasks, frames, SIZE, SIZE, JOINTS))),
                        tf.constant(rng.integers(0, 2, (tasks, frames, JOINTS)), tf.float64))


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_step_equals_plain(first_order):
  rng = np.random.default_rng(5)
  support, query = _maml_split(rng), _maml_split(rng)
  params = maml.MetaParams(tf.constant(ops.line_base(SIZE, 1.0, 0.3).astype(np.float64)),
                           tf.constant(ops.translation_theta(SIZE).astype(np.float64) * 0.9))
  kwargs = dict(inner_lr=0.5, inner_steps=2, temperature=1.0, first_order=first_order)
  plain, plain_metrics = maml.maml_gradients(params, support, query, remat=False, **kwargs)
  remat, remat_metrics = maml.maml_gradients(params, support, query, remat=True, **kwargs)
  _assert_all_close(remat, plain, rtol=1e-9, atol=1e-12)
  _assert_all_close(remat_metrics, plain_metrics, **TIGHT)
  assert np.abs(remat.theta.numpy()).max() > 1e-7 and np.abs(remat.omega_base.numpy()).max() > 1e-7


def test_maml_step_compiled_equals_plain():
  rng = np.random.default_rng(6)
  support, query = _maml_split(rng, tasks=1), _maml_split(rng, tasks=1)
  params = maml.MetaParams(tf.constant(ops.line_base(SIZE, 1.0, 0.3).astype(np.float64)),
                           tf.constant(ops.translation_theta(SIZE).astype(np.float64) * 0.9))
  step = tf.function(lambda remat: maml.maml_gradients(
      params, support, query, inner_lr=0.5, inner_steps=1, temperature=1.0, remat=remat)[0],
      jit_compile=True)
  _assert_all_close(step(True), step(False), rtol=1e-9, atol=1e-12)


def _largest_tensor(fn, *args) -> int:
  """Elements of the largest statically shaped tensor in fn's graph, loop bodies included."""
  graph_def = tf.function(fn).get_concrete_function(*args).graph.as_graph_def(add_shapes=True)
  nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
  largest = 0
  for node in nodes:
    for shape in node.attr["_output_shapes"].list.shape:
      if not shape.unknown_rank and all(d.size >= 0 for d in shape.dim):
        largest = max(largest, int(np.prod([d.size for d in shape.dim])))
  return largest


def test_gradients_keep_no_full_warp():
  rng = np.random.default_rng(7)
  heatmaps, (omega, theta) = _heatmaps(rng), _parameters(rng)
  chunk = 8
  full = PAIRS * PIXELS * PIXELS
  for fn in (_first_order, _gradient_norm):
    assert _largest_tensor(lambda h, o, t, fn=fn: fn(h, o, t, False), heatmaps, omega,
                           theta) >= full
    # A chunk's 2x2 patches [P, n, HW, 4] are the largest tensor of every order's graph.
    assert _largest_tensor(lambda h, o, t, fn=fn: fn(h, o, t, True, chunk), heatmaps, omega,
                           theta) <= PAIRS * chunk * PIXELS * 4 < full


def test_remat_chunk_pixels_balances_chunks_within_budget():
  assert sampler.remat_chunk_pixels(12, 4096, 4096, budget=1 << 22) == 84  # 49 chunks of 84.
  assert sampler.remat_chunk_pixels(1, 64, 64, budget=1 << 22) == 64
  assert sampler.remat_chunk_pixels(3, 10, 10, budget=1) == 1
  for pairs, pixels, budget in [(12, 4096, 1 << 22), (2, 100, 700), (6, 64, 2000)]:
    chunk = sampler.remat_chunk_pixels(pairs, pixels, pixels, budget=budget)
    assert pairs * chunk * pixels <= budget
    chunks = -(-pixels // chunk)
    assert chunks * chunk - pixels < chunks  # Padding below one row per chunk.


def test_warp_product_rejects_bad_shapes():
  omega = tf.zeros((4, 4))
  with pytest.raises(ValueError, match=r"sources must be \[P, 16, C\]"):
    sampler.warp_product(omega, tf.zeros((2, 16, 6)), tf.zeros((2, 9, 3)))
  with pytest.raises(ValueError, match=r"theta must be \[P, HW_target, 6\]"):
    sampler.warp_product(omega, tf.zeros((16, 6)), tf.zeros((2, 16, 3)))
  with pytest.raises(ValueError, match="chunk_pixels must be >= 1"):
    sampler.warp_product(omega, tf.zeros((2, 16, 6)), tf.zeros((2, 16, 3)), chunk_pixels=0)
  with pytest.raises(ValueError, match="3 views need 6 theta rows, got 2"):
    ops.fuse_affine(tf.zeros((1, 3, 4, 4, 2)), omega, tf.zeros((2, 16, 6)))


def test_affine_layer_remat_option(tmp_path):
  rng = np.random.default_rng(8)
  inputs = random_heatmaps(rng, batch=2, views=VIEWS, size=SIZE)
  assert layers.AffineFusion(VIEWS, SIZE).remat
  remat, plain = layers.AffineFusion(VIEWS, SIZE), layers.AffineFusion(VIEWS, SIZE, remat=False)
  for layer in (remat, plain):
    layer.build(inputs.shape)
  theta = remat.theta.numpy() + 0.2 * rng.normal(size=remat.theta.shape)
  for layer in (remat, plain):
    layer.assign_parameters(omega_base=ops.line_base(SIZE, 1.0, 0.5), theta=theta)

  def compiled_step(layer):
    @tf.function(jit_compile=True)
    def step():
      with tf.GradientTape() as tape:
        fused = layer(inputs)
        loss = ops.fusion_loss(fused, inputs, None)
      return fused, tape.gradient(loss, [layer.omega_base, layer.theta])
    return step()

  _assert_all_close(compiled_step(remat), compiled_step(plain), rtol=1e-5, atol=1e-6)
  config = plain.get_config()
  assert config["remat"] is False
  assert layers.AffineFusion.from_config(config).remat is False
  run_layer_test(layers.AffineFusion, {"num_views": VIEWS, "heatmap_size": SIZE, "remat": False},
                 inputs, tmp_path=tmp_path)
