"""Fixtures of the training tests."""

import importlib.util

import pytest


@pytest.fixture
def default_config(repo_root):
  """get_config(arg) of configs/default.py, loaded by path (configs/ is not a package)."""
  spec = importlib.util.spec_from_file_location("mf_tf_default_config",
                                                repo_root / "configs" / "default.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config
