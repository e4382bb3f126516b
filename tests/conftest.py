"""Shared fixtures: the real data under ../shared, found relative to the project root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PACT_SHARED", PROJECT_ROOT.parent / "shared"))
DATA = SHARED / "data"
BUGCASES = SHARED / "bugcases"


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
