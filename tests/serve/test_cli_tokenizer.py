"""`corral tokenizer MODEL DIR` reads the local store (no server): a missing model is Ollama's
not-found text with exit status 1. The written tokenizer is exercised by tests/clients/test_guidellm.py."""

from __future__ import annotations

import pytest

from serve.cli.main import main


def test_tokenizer_of_a_missing_model(tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("CORRAL_CACHE", str(tmp_path / "cache"))
    assert main(["tokenizer", "nope:1b", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == "Error: model 'nope:1b' not found"
    assert not (tmp_path / "out").exists()
