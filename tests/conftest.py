"""Shared test set-up; the Kafka broker fixture lives in tests/kafka/conftest.py."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Train the example models into a per-run folder, never the user's cache."""
    os.environ.setdefault("STREAMSERVE_MODEL_DIR", tempfile.mkdtemp(prefix="streamserve-models-"))
