import json

from registry.manifest import MEDIA_TYPE_MODEL, ConfigV2, Layer, Manifest


def test_manifest_bytes_like_go():
    m = Manifest(
        config=Layer("application/vnd.docker.container.image.v1+json", "sha256:" + "a" * 64, 10),
        layers=[
            Layer(MEDIA_TYPE_MODEL, "sha256:" + "b" * 64, 5, from_="x:latest"),
            Layer("application/vnd.ollama.image.json", "sha256:" + "c" * 64, 3, name="config.json"),
        ],
    )
    data = m.to_bytes()
    assert data.endswith(b"}\n") and b" " not in data
    assert data.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType"')
    obj = json.loads(data)
    assert "from" not in obj["config"] and "name" not in obj["config"]
    assert obj["layers"][0]["from"] == "x:latest" and "name" not in obj["layers"][0]
    assert Manifest.from_bytes(data) == m


def test_tolerant_reading():
    raw = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "c", "digest": "sha256:" + "a" * 64, "size": 1, "urls": []},
        "layers": [{"mediaType": "m", "digest": "sha256:" + "b" * 64, "size": 2, "annotations": {}}],
        "extra": 1,
    }
    m = Manifest.from_bytes(json.dumps(raw).encode())
    assert m.size() == 3 and m.layers[0].media_type == "m"
    cfg = ConfigV2.from_bytes(b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],'
                              b'"model_type":"8.0B","file_type":"Q4_0","rootfs":{"type":"layers","diff_ids":[]},"x":1}')
    assert cfg.model_family == "llama" and cfg.extra == {"x": 1}
    assert "rootfs" not in cfg.to_dict()


def test_config_omitempty():
    d = json.loads(ConfigV2(model_format="gguf").to_bytes())
    assert d == {"model_format": "gguf", "model_family": "", "model_families": None, "model_type": "",
                 "file_type": "", "architecture": "amd64", "os": "linux"}
    d = json.loads(ConfigV2(renderer="r", context_length=5).to_bytes())
    assert d["renderer"] == "r" and d["context_length"] == 5
