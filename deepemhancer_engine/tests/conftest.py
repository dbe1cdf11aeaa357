"""Shared fixtures of the engine tests.

``tiny_weights``: a seeded tiny UNet3D (filters 2/4/8, cube 32) saved with its model card in the test's
``tmp_path``; returns the ``.pt`` path (load it with ``weights.load_model(ModelName.TIGHT, path)``); ``tiny``:
the same, made once per test module.
Tests marked ``@pytest.mark.gpu`` are skipped when CUDA is not available. The per-user cache of null
responses (``$DEEPEMHANCER_CACHE``) points into the session's temporary folder, never at ``~/.cache``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from deepemhancer_engine.testing import make_tiny_weights


@pytest.fixture(scope="session", autouse=True)
def _private_null_cache(tmp_path_factory: pytest.TempPathFactory):
    old = os.environ.get("DEEPEMHANCER_CACHE")
    os.environ["DEEPEMHANCER_CACHE"] = str(tmp_path_factory.mktemp("null-cache"))
    yield
    if old is None:
        os.environ.pop("DEEPEMHANCER_CACHE", None)
    else:
        os.environ["DEEPEMHANCER_CACHE"] = old


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """Path of a tiny random network's ``.pt`` (with ``.json`` card beside it)."""
    return make_tiny_weights(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny random network, made once per test module (for CLI runs that only need some weights)."""
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
