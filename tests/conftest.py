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
