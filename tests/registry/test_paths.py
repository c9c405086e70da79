import os

import pytest

from registry.create import request_from_body
from registry.errors import APIError
from registry.modelfile import modelfile_fields, parse_modelfile
from registry.paths import PATH_REFUSED, UNRESTRICTED, PathPolicy
from registry.store import Store


@pytest.fixture
def tree(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "sub" / "m.gguf").write_bytes(b"GGUF")
    (outside / "s.gguf").write_bytes(b"GGUF")
    os.symlink(outside / "s.gguf", allowed / "out.gguf")
    os.symlink(allowed / "sub" / "m.gguf", allowed / "in.gguf")
    return allowed, outside


def test_policy_resolves_before_it_decides(tree):
    allowed, outside = tree
    policy = PathPolicy.under((allowed,))
    assert policy.allows(allowed / "sub" / "m.gguf") and policy.allows(allowed / "in.gguf")
    assert policy.allows(allowed / "missing.gguf")  # inside: create may say it is missing
    for path in (outside / "s.gguf", allowed / "out.gguf", f"{allowed}/../outside/s.gguf",
                 f"{allowed}/sub/../../outside/x", "/etc/passwd", f"{allowed}-sibling/x"):
        assert not policy.allows(path), path
        with pytest.raises(APIError) as err:
            policy.check(path)
        assert (err.value.status, err.value.message) == (403, PATH_REFUSED)
    assert policy.check(allowed / "in.gguf") == (allowed / "sub" / "m.gguf").resolve()
    assert not PathPolicy(()).allows(allowed / "sub" / "m.gguf")
    assert UNRESTRICTED.allows("/etc/passwd")


def test_modelfile_names_stay_names_and_paths_are_checked(tree, tmp_path):
    allowed, outside = tree
    policy = PathPolicy.under((allowed,))
    fields = modelfile_fields(parse_modelfile("FROM gemma3:270m\n"), tmp_path, policy)
    assert fields.from_ == "gemma3:270m" and not fields.files
    fields = modelfile_fields(parse_modelfile("FROM ./sub/m.gguf\n"), allowed, policy)
    assert list(fields.files) == ["m.gguf"]
    for text in ("FROM ../outside/s.gguf\n", f"FROM {outside}/nothing\n", "FROM ./out.gguf\n",
                 "FROM gemma3\nADAPTER ./out.gguf\n", "FROM gemma3\nADAPTER /nope\n"):
        with pytest.raises(APIError) as err:
            modelfile_fields(parse_modelfile(text), allowed, policy)
        assert err.value.status == 403, text
    with pytest.raises(APIError) as err:
        request_from_body(Store(tmp_path / "models"), {"model": "m", "path": str(outside / "s.gguf")},
                          policy)
    assert err.value.message == PATH_REFUSED
