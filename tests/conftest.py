"""Shared test fixtures: where the real benchmark and training images live."""

import os
from pathlib import Path

import pytest

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """The shared data folder: $DRSAN_DATA_DIR, else ../shared/data beside the checkout.

    Missing data skips the tests that need it on a developer's machine, but fails them under CI
    (CI=true), where a skip would hide that nothing was checked.
    """
    path = Path(os.environ.get("DRSAN_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "benchmark").is_dir():
        message = f"shared data not found at {path} (set DRSAN_DATA_DIR)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (see `shared_data_dir`)."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def benchmark_dir(shared_data: Path) -> Path:
    """`<shared data>/benchmark`: HR/<name>/ and x<s>/<name>/ for Set5, Set14, B100."""
    return shared_data / "benchmark"
