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
