"""The settings dataclasses of the tests, built from configs/default.py as the modes build them.

`MamlSettings`, `FusionSettings` and `BatchingSettings` have no defaults of their own: a test
takes the config's values and names what it changes, e.g. `maml_settings(num_steps=4)`.
Imported as `from config_settings import ...` (tests/ is on sys.path: it holds the root
conftest.py).
"""

import dataclasses
import functools
import importlib.util
import pathlib

from mf_tf.modes import common
from mf_tf.modes import export as export_mode

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "default.py"


@functools.lru_cache(maxsize=None)
def _default_module():
  # Loaded by path: configs/ is a folder of config files, not a package.
  spec = importlib.util.spec_from_file_location("mf_tf_default_config", _DEFAULT_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def default_config(arg=None):
  """A fresh `get_config(arg)` of configs/default.py."""
  return _default_module().get_config(arg)


def maml_settings(**changes):
  """`MamlSettings` of config.metatrain (as --mode=metatrain builds it), with `changes`."""
  config = default_config()
  settings = common.maml_settings(config.metatrain, config, common.target_sigma(config))
  return dataclasses.replace(settings, **changes)


def fusion_settings(**changes):
  """`FusionSettings` of config.fusion and the recipe's loss, with `changes`."""
  return dataclasses.replace(common.fusion_settings(default_config()), **changes)


def batching_settings(**changes):
  """`BatchingSettings` of config.export.batching (as --mode=export builds it), with `changes`."""
  return dataclasses.replace(export_mode.batching_settings(default_config()), **changes)
