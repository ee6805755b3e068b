"""Fixtures of the fusion tests."""

import pytest

from mf_tf.fusion import warp_kernel


@pytest.fixture(params=["kernel", "tf"])
def warp_backend(request, monkeypatch):
  """Runs a test on each warp backend that `sampler.warp_base(backend="auto")` picks: the
  compiled kernels (outside XLA; switched on, so also beside a GPU), and the TensorFlow ops
  (kernels switched off)."""
  monkeypatch.setenv(warp_kernel.ENV_SWITCH, "0" if request.param == "tf" else "1")
  warp_kernel._load.cache_clear()  # pylint: disable=protected-access
  if request.param == "kernel":
    assert warp_kernel.available(), warp_kernel.unavailable_reason()
  yield request.param
  warp_kernel._load.cache_clear()  # pylint: disable=protected-access
