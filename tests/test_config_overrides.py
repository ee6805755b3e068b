"""Every leaf of the experiment configs can be overridden from the command line.

ml_collections overrides only the types it can parse from a flag (str, bool, int, float, tuple);
a list or a dict leaf fails at parse time ("Type <class 'list'> ... is not supported for
overriding"). Each case below parses `--config=FILE --config.KEY=VALUE` the way mf_tf.main does
(locked config) with a value of the field's own type that differs from the default.
"""

import functools
import importlib.util
import pathlib

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
_FILES = ("default.py", "benchmark.py")


def _load_config(name: str) -> ml_collections.ConfigDict:
  path = _CONFIGS / name
  spec = importlib.util.spec_from_file_location(f"config_under_test_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(None)


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
  """(dotted key, value) of every non-ConfigDict field, depth first."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _new_value(value):
  """(command-line text, expected parsed value): same type as `value`, different from it."""
  if isinstance(value, bool):  # Before int: bool is an int.
    return str(not value), not value
  if isinstance(value, int):
    return str(value + 7), value + 7
  if isinstance(value, float):
    return repr(value + 1.5), value + 1.5
  if isinstance(value, str):
    new = "x" if value != "x" else "y"
    return new, new
  if isinstance(value, tuple):  # Element by element, so the parsed tuple differs from `value`.
    new = tuple(_new_value(item)[1] for item in value)
    return repr(new), new
  raise TypeError(f"type {type(value).__name__} of value {value!r} cannot be set from a flag")


_CASES = [pytest.param(name, key, value, id=f"{name}:{key}")
          for name in _FILES for key, value in _leaves(_load_config(name))]


def test_both_configs_have_leaves():
  names = {name for name, _, _ in (case.values for case in _CASES)}
  assert names == set(_FILES)
  assert len(_CASES) > 100


@pytest.mark.parametrize("name,key,value", _CASES)
def test_every_leaf_overrides_from_the_command_line(name, key, value):
  text, expected = _new_value(value)
  argv = ["prog", f"--config={_CONFIGS / name}", f"--config.{key}={text}"]
  flag_values = flags.FlagValues()
  # The override flags are defined from the argv given here, as mf_tf.main does from sys.argv.
  config_flags.DEFINE_config_file("config", None, "config under test", flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  parsed = functools.reduce(getattr, key.split("."), flag_values.config)
  assert type(parsed) is type(value), (key, parsed)
  assert parsed == expected, (key, parsed, expected)
