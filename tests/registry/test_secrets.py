import base64
import json
import logging

import pytest

from registry.oci.auth import SigningKey, ensure_keypair, load_docker_auths
from registry.secrets import UnsafePermissions, check_private


def test_signing_key_refused_when_group_or_others_have_access(tmp_path):
    key = tmp_path / "id_ed25519"
    assert ensure_keypair(key)
    assert check_private(key) is None
    SigningKey.load(key)  # 0600, as created
    for mode in (0o640, 0o604, 0o620, 0o644):
        key.chmod(mode)
        with pytest.raises(UnsafePermissions, match="too open"):
            SigningKey.load(key)
        assert "chmod 600" in check_private(key)
    key.chmod(0o400)
    SigningKey.load(key)


def test_docker_credentials_read_with_a_warning_when_readable_by_others(tmp_path, caplog):
    config = tmp_path / "config.json"
    auth = base64.b64encode(b"user:pw").decode()
    config.write_text(json.dumps({"auths": {"reg.example": {"auth": auth}}}))
    config.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="corral.registry"):
        assert load_docker_auths(config) == {"reg.example": ("user", "pw")}
    assert "too open" not in caplog.text
    config.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="corral.registry"):
        assert load_docker_auths(config) == {"reg.example": ("user", "pw")}
    assert "too open" in caplog.text and "reading it anyway" in caplog.text
