"""Which warp backend runs where: `warp_kernel.use_kernels` on device lists and placements, the
`MF_TF_WARP_KERNEL` switch, and the op the fusion layer actually traces on this machine."""

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.fusion import layers
from mf_tf.fusion import warp_kernel

CPU = tf.config.LogicalDevice(name="/device:CPU:0", device_type="CPU")
GPU = tf.config.LogicalDevice(name="/device:GPU:0", device_type="GPU")
GPU_NAME = "/job:localhost/replica:0/task:0/device:GPU:0"


@pytest.fixture
def auto(monkeypatch):
  """No switch (the devices decide), kernels reported buildable without building them."""
  monkeypatch.delenv(warp_kernel.ENV_SWITCH, raising=False)
  monkeypatch.setattr(warp_kernel, "available", lambda: True)


@pytest.mark.usefixtures("auto")
@pytest.mark.parametrize("devices", [[CPU], ["CPU"], ["/device:CPU:0"], []])
def test_cpu_only_uses_the_kernels_without_xla(devices):
  assert warp_kernel.runs_on_cpu(devices, "")
  assert warp_kernel.use_kernels(devices, "")
  assert not warp_kernel.xla_for_warps(devices, "")


@pytest.mark.usefixtures("auto")
@pytest.mark.parametrize("devices", [[CPU, GPU], ["CPU", "GPU"], ["/device:CPU:0", GPU_NAME],
                                     ["cpu", "tpu"]])
def test_a_visible_accelerator_uses_the_tf_ops_under_xla(devices):
  assert not warp_kernel.runs_on_cpu(devices, "")
  assert not warp_kernel.use_kernels(devices, "")
  assert warp_kernel.xla_for_warps(devices, "")


@pytest.mark.usefixtures("auto")
@pytest.mark.parametrize("placement", ["/CPU:0", "cpu:0", "/device:CPU:0",
                                       "/job:localhost/replica:0/task:0/device:CPU:0"])
def test_explicit_cpu_placement_beside_a_gpu_uses_the_kernels(placement):
  assert warp_kernel.use_kernels([CPU, GPU], placement)
  assert not warp_kernel.xla_for_warps([CPU, GPU], placement)


@pytest.mark.usefixtures("auto")
@pytest.mark.parametrize("placement", ["/GPU:0", "gpu:1", GPU_NAME])
@pytest.mark.parametrize("devices", [[CPU, GPU], [CPU]])
def test_gpu_placement_uses_the_tf_ops_under_xla(devices, placement):
  assert not warp_kernel.use_kernels(devices, placement)
  assert warp_kernel.xla_for_warps(devices, placement)


@pytest.mark.usefixtures("auto")
def test_a_placement_without_a_device_type_leaves_the_choice_to_the_devices():
  assert warp_kernel.use_kernels([CPU], "/job:localhost/replica:0/task:0")
  assert not warp_kernel.use_kernels([CPU, GPU], "/job:localhost/replica:0/task:0")


@pytest.mark.usefixtures("auto")
def test_the_current_tf_device_scope_is_the_placement():
  assert warp_kernel.current_placement() == ""
  with tf.device("/GPU:0"):
    assert warp_kernel.current_placement().endswith("device:GPU:0")
    assert not warp_kernel.use_kernels([CPU, GPU])
    assert not warp_kernel.use_kernels([CPU])
    with tf.device("/CPU:0"):
      assert warp_kernel.use_kernels([CPU, GPU])
  assert warp_kernel.use_kernels([CPU])
  assert not warp_kernel.use_kernels([CPU, GPU])

  decisions = []

  @tf.function
  def traced():
    decisions.append(warp_kernel.use_kernels([CPU, GPU]))
    with tf.device("/GPU:0"):
      decisions.append(warp_kernel.use_kernels([CPU]))
    return tf.constant(0)

  with tf.device("/CPU:0"):  # Tracing inside a scope sees it, and the function's own scopes.
    traced.get_concrete_function()
  assert decisions == [True, False]


@pytest.mark.usefixtures("auto")
@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_switch_off_never_uses_the_kernels(monkeypatch, value):
  monkeypatch.setenv(warp_kernel.ENV_SWITCH, value)
  assert warp_kernel.env_switch() is False
  for devices, placement in (([CPU], ""), ([CPU], "/CPU:0"), ([CPU, GPU], "/CPU:0")):
    assert not warp_kernel.use_kernels(devices, placement)
    assert warp_kernel.xla_for_warps(devices, placement)


@pytest.mark.usefixtures("auto")
@pytest.mark.parametrize("value", ["1", "true", "yes", "on"])
def test_switch_on_uses_the_kernels_beside_a_gpu(monkeypatch, value):
  monkeypatch.setenv(warp_kernel.ENV_SWITCH, value)
  assert warp_kernel.env_switch() is True
  for devices, placement in (([CPU], ""), ([CPU, GPU], ""), ([CPU, GPU], "/GPU:0")):
    assert warp_kernel.use_kernels(devices, placement)
    assert not warp_kernel.xla_for_warps(devices, placement)


@pytest.mark.usefixtures("auto")
@pytest.mark.parametrize("value", ["", "  "])
def test_empty_switch_leaves_the_choice_to_the_devices(monkeypatch, value):
  monkeypatch.setenv(warp_kernel.ENV_SWITCH, value)
  assert warp_kernel.env_switch() is None
  assert warp_kernel.use_kernels([CPU], "")
  assert not warp_kernel.use_kernels([CPU, GPU], "")


@pytest.mark.parametrize("value", [None, "1"])
def test_kernels_that_do_not_build_are_never_used(monkeypatch, value):
  if value is None:
    monkeypatch.delenv(warp_kernel.ENV_SWITCH, raising=False)
  else:
    monkeypatch.setenv(warp_kernel.ENV_SWITCH, value)
  monkeypatch.setattr(warp_kernel, "available", lambda: False)
  monkeypatch.setattr(warp_kernel, "unavailable_reason", lambda: "no C++ compiler found")
  for devices, placement in (([CPU], ""), ([CPU, GPU], "/CPU:0"), ([CPU, GPU], "")):
    assert not warp_kernel.use_kernels(devices, placement)
    assert warp_kernel.xla_for_warps(devices, placement)
  assert "no C++ compiler found" in warp_kernel.backend_summary([CPU], "")


def test_a_gpu_machine_does_not_build_the_kernels_unasked(monkeypatch):
  monkeypatch.delenv(warp_kernel.ENV_SWITCH, raising=False)

  def refuse():
    raise AssertionError("the kernels were loaded although the warp runs on a GPU")

  monkeypatch.setattr(warp_kernel, "available", refuse)
  assert not warp_kernel.use_kernels([CPU, GPU], "")
  assert "accelerator" in warp_kernel.backend_summary([CPU, GPU], "")


@pytest.mark.usefixtures("auto")
def test_backend_summary_names_the_backend_and_why(monkeypatch):
  assert warp_kernel.backend_summary([CPU], "") == (
      "warp kernels, no XLA (the warp runs on the CPU)")
  assert warp_kernel.backend_summary([CPU, GPU], "") == (
      "TensorFlow ops under XLA (the warp runs on an accelerator)")
  monkeypatch.setenv(warp_kernel.ENV_SWITCH, "0")
  assert warp_kernel.backend_summary([CPU], "") == (
      f"TensorFlow ops under XLA ({warp_kernel.ENV_SWITCH}='0')")
  monkeypatch.setenv(warp_kernel.ENV_SWITCH, "1")
  assert warp_kernel.backend_summary([CPU, GPU], "") == (
      f"warp kernels, no XLA ({warp_kernel.ENV_SWITCH}='1')")


# ------------------------------------------------------------ the layer on this (CPU-only) machine


def _traced_op_types(layer, heatmaps) -> set[str]:
  graph = tf.function(lambda h: layer(h)).get_concrete_function(heatmaps).graph
  return {op.type for op in graph.get_operations()}


@pytest.fixture
def fusion_case():
  layer = layers.AffineFusion(num_views=2, heatmap_size=8)
  heatmaps = tf.constant(np.random.default_rng(0).random((2, 2, 8, 8, 3)), tf.float32)
  layer.build(heatmaps.shape)
  return layer, heatmaps


@pytest.mark.skipif(bool(tf.config.list_logical_devices("GPU")), reason="needs a CPU-only machine")
def test_the_layer_traces_the_kernels_here_and_the_tf_ops_when_switched_off(
    monkeypatch, fusion_case):
  layer, heatmaps = fusion_case
  monkeypatch.delenv(warp_kernel.ENV_SWITCH, raising=False)
  warp_kernel._load.cache_clear()  # pylint: disable=protected-access
  try:
    assert warp_kernel.available(), warp_kernel.unavailable_reason()
    assert warp_kernel.use_kernels() and not warp_kernel.xla_for_warps()
    assert "MfAffineWarp" in _traced_op_types(layer, heatmaps)

    monkeypatch.setenv(warp_kernel.ENV_SWITCH, "0")
    warp_kernel._load.cache_clear()  # pylint: disable=protected-access
    assert warp_kernel.xla_for_warps()
    assert not {"MfAffineWarp", "MfAffineWarpGrad"} & _traced_op_types(layer, heatmaps)
  finally:
    warp_kernel._load.cache_clear()  # pylint: disable=protected-access


def test_the_layer_traces_the_tf_ops_inside_a_gpu_scope(monkeypatch, fusion_case):
  layer, heatmaps = fusion_case
  monkeypatch.delenv(warp_kernel.ENV_SWITCH, raising=False)
  assert warp_kernel.available(), warp_kernel.unavailable_reason()
  with tf.device("/GPU:0"):  # Tracing only: no GPU is needed to place the graph's ops.
    assert "MfAffineWarp" not in _traced_op_types(layer, heatmaps)
  with tf.device("/CPU:0"):
    assert "MfAffineWarp" in _traced_op_types(layer, heatmaps)


@pytest.mark.parametrize("kernels", [True, False])
def test_materialize_follows_the_decision(monkeypatch, fusion_case, kernels):
  layer, _ = fusion_case
  compiled = []
  original = layers._affine_matrices_compiled  # pylint: disable=protected-access

  def spy(omega_base, theta):
    compiled.append(theta.shape)
    return original(omega_base, theta)

  monkeypatch.setattr(layers, "_affine_matrices_compiled", spy)
  monkeypatch.setattr(warp_kernel, "use_kernels", lambda devices=None, placement=None: kernels)
  matrices = layer.materialize().matrices
  assert matrices.shape == (2, 64, 64)
  np.testing.assert_allclose(matrices, layer.fusion_matrices(), atol=1e-6)
  assert len(compiled) == (0 if kernels else 2)
