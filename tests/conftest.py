"""Shared pytest fixtures."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real calibrations and poses the tests read (tests/fixtures/real_data, see SOURCES.md)."""
  return _REPO_ROOT / "tests" / "fixtures" / "real_data"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return _REPO_ROOT


# Session fixtures that take seconds to build (the serving tests' backbone and the SavedModels
# exported with it): under `pytest -n`, every test that uses one runs on the same worker.
_SHARED_SESSION_FIXTURES = ("small_backbone",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """Work units of `pytest -n` (setup.cfg: `--dist loadgroup`): one per test file, as with
  `--dist loadfile` (module fixtures are built once), except that the tests using a fixture of
  `_SHARED_SESSION_FIXTURES` form one unit, so that it is built once too."""
  for item in items:
    if any(item.iter_markers("xdist_group")):
      continue
    shared = [name for name in _SHARED_SESSION_FIXTURES if name in item.fixturenames]
    item.add_marker(pytest.mark.xdist_group(shared[0] if shared else item.path.stem))
