"""Shared fixtures: the real data under ../shared, found relative to the project root.

Also a compilation cache for the session: many tests build the same small models and compile
the same XLA programs again, which takes much of their time on a CPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PACT_SHARED", PROJECT_ROOT.parent / "shared"))
DATA = SHARED / "data"
BUGCASES = SHARED / "bugcases"

# JAX's persistent compilation cache, in a folder of this session only, so results never depend
# on an earlier run. Set through the environment, it also serves the pact processes that tests
# start. Every program is cached, however fast it compiled (the defaults skip those under 1 s).
_CACHE_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config):
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # the caller chose a cache
    cache_dir = tempfile.mkdtemp(prefix="pact-tests-xla-cache-")
    config.stash[_CACHE_KEY] = cache_dir
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

    # The environment reaches JAX only if it is imported after this, so set this process too.
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    cache_dir = config.stash.get(_CACHE_KEY, None)
    if cache_dir is None:
        return
    shutil.rmtree(cache_dir, ignore_errors=True)
    for name in _CACHE_VARIABLES:
        os.environ.pop(name, None)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set PACT_SHARED to the shared folder")
    return path


@pytest.fixture(scope="session")
def maestro_root() -> Path:
    """MAESTRO v3 layout: maestro-v3.0.0.csv/.json and YEAR/*.midi."""
    return _require(DATA / "maestro-asap")


@pytest.fixture(scope="session")
def piano_performances() -> Path:
    return _require(DATA / "piano-performances")


@pytest.fixture(scope="session")
def bugcases() -> Path:
    return _require(BUGCASES)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(DATA)


@pytest.fixture(scope="session")
def pg19_mini() -> Path:
    """PG-19 layout: train/, validation/ and test/ folders of Project Gutenberg .txt books."""
    return _require(DATA / "pg19-mini")
