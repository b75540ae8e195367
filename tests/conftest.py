"""Shared fixtures. Tests use the bundled sample; the full shared imagenette only when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "imagenette-sample"
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def shared_imagenette() -> Path:
    path = SHARED_DATA / "imagenette"
    if not path.is_dir():
        pytest.skip(f"{path} not present (tests that need the full imagenette skip without ../shared)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_scan_cache(tmp_path_factory):
    """The pre-scan cache of every test run lives in a fresh folder, never in the user's ~/.cache."""
    os.environ["FASTNAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("fastnas-cache"))
