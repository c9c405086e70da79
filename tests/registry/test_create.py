import hashlib
import json

import pytest

from registry.create import (
    CreateRequest, copy_model, create_model, delete_model, list_models, request_from_body, run_create,
)
from registry.errors import APIError
from registry.manifest import MEDIA_TYPE_MODEL, MEDIA_TYPE_PARAMS
from registry.model import ModelNotFoundError, get_model
from registry.names import parse_name
from registry.show import show_model
from registry.store import Store
from tests.tiny import tiny_gguf as shared_tiny_gguf


def tiny_gguf(path, file_type=1, arch="llama", extra=None):
    return shared_tiny_gguf(path, file_type, arch, extra, chat_template="{{ messages }}")


def upload(store, path):
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.put_blob(digest, iter([data]))
    return digest


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "models")


@pytest.fixture
def base(store, tmp_path):
    digest = upload(store, tiny_gguf(tmp_path / "t.gguf"))
    req = CreateRequest(model="base", files={"t.gguf": digest}, template="{{ .Prompt }}{{ .Tools }}",
                        system="sys", parameters={"temperature": 0.5, "stop": ["a"]}, license="L1")
    events = run_create(store, req)
    return digest, events


def test_create_from_files(store, base):
    digest, events = base
    statuses = [e["status"] for e in events]
    assert statuses[0] == "parsing GGUF"
    assert statuses[1] == f"using existing layer {digest}"
    assert all(s.startswith("creating new layer sha256:") for s in statuses[2:6])
    assert statuses[-2:] == ["writing manifest", "success"]
    m = get_model(store, "BASE")
    assert m.weights_path == store.blob_path(digest)
    assert (m.template, m.system, m.licenses) == ("{{ .Prompt }}{{ .Tools }}", "sys", ["L1"])
    assert m.params == {"stop": ["a"], "temperature": 0.5}
    assert m.config.model_format == "gguf" and m.config.model_family == "llama"
    assert m.config.file_type == "F16" and m.config.model_type == "32"
    assert m.capabilities == ["completion", "tools"]


def test_create_from_model_inherits_and_overrides(store, base):
    events = run_create(store, CreateRequest(model="derived", from_="base", system="new",
                                             parameters={"temperature": 0.9, "top_k": 3}, license=["L2"],
                                             messages=[{"role": "user", "content": "hi"}]))
    assert events[-1] == {"status": "success"}
    m = get_model(store, "derived")
    assert m.parent_model == "base:latest"
    assert m.system == "new" and m.template == "{{ .Prompt }}{{ .Tools }}"
    assert m.params == {"stop": ["a"], "temperature": 0.9, "top_k": 3}
    assert m.licenses == ["L1", "L2"]
    assert m.messages == [{"role": "user", "content": "hi"}]
    assert m.manifest.layers_of(MEDIA_TYPE_MODEL)[0].from_ == "base:latest"
    assert len(m.manifest.layers_of(MEDIA_TYPE_PARAMS)) == 1
    assert json.loads(store.read_blob(m.manifest.layers_of(MEDIA_TYPE_PARAMS)[0].digest)) == m.params


def test_recreate_prunes_unused_layers(store, base):
    old = get_model(store, "base")
    old_system = [x for x in old.manifest.layers if x.media_type.endswith("system")][0].digest
    run_create(store, CreateRequest(model="base", from_="base", system="replaced"))
    assert not store.has_blob(old_system)
    assert get_model(store, "base").system == "replaced"


@pytest.mark.parametrize(
    "req, status, message",
    [
        (CreateRequest(model="", from_="base"), 400, "invalid model name"),
        (CreateRequest(model="x@y", from_="base"), 400, "invalid model name"),
        (CreateRequest(model="x"), 400, "neither 'from' or 'files' was specified"),
        (CreateRequest(model="x", files={"../a.gguf": "sha256:" + "a" * 64}), 400, "file path must be relative"),
        (CreateRequest(model="x", files={"a.gguf": ""}), 400, "invalid digest format"),
        (CreateRequest(model="x", files={"a.gguf": "md5:1"}), 400, "invalid digest format"),
        (CreateRequest(model="x", from_="nope"), 404, "model 'nope' not found"),
        (CreateRequest(model="x", from_="base", adapters={"a": "sha256:" + "a" * 64, "b": "sha256:" + "b" * 64}),
         400, "only one adapter is currently supported"),
    ],
)
def test_create_validation_before_progress(store, base, req, status, message):
    with pytest.raises(APIError) as e:
        create_model(store, req)
    assert (e.value.status, e.value.message) == (status, message)


def test_quantize_rules(store, tmp_path):
    q4 = upload(store, tiny_gguf(tmp_path / "q.gguf", file_type=15))
    with pytest.raises(APIError) as e:
        run_create(store, CreateRequest(model="q", files={"q.gguf": q4}, quantize="q8_0"))
    assert e.value.message == "quantization is only supported for F16, BF16 and F32 models"
    assert store.resolve(parse_name("q")) is None


def test_sniff_gguf_without_extension_and_unknown(store, tmp_path):
    digest = upload(store, tiny_gguf(tmp_path / "noext"))
    run_create(store, CreateRequest(model="sniffed", files={"weights": digest}))
    assert get_model(store, "sniffed").weights_path is not None
    (tmp_path / "txt").write_bytes(b"hello")
    with pytest.raises(APIError) as e:
        run_create(store, CreateRequest(model="bad", files={"weights": upload(store, tmp_path / "txt")}))
    assert e.value.message == "unknown type"


def test_autodetected_template(store, tmp_path):
    digest = upload(store, tiny_gguf(tmp_path / "t.gguf"))
    seen = []

    def detect(chat_template):
        seen.append(chat_template)
        return ("llama3-instruct", "{{ .Messages }}{{ .Tools }}", {"stop": ["<|eot_id|>"]})

    events = run_create(store, CreateRequest(model="auto", files={"t.gguf": digest}), detect_template=detect)
    assert seen == ["{{ messages }}"]
    assert {"status": "using autodetected template llama3-instruct"} in events
    m = get_model(store, "auto")
    assert m.template == "{{ .Messages }}{{ .Tools }}" and m.params == {"stop": ["<|eot_id|>"]}


def test_template_validation_hook(store, base):
    def bad(_):
        raise APIError(400, "template error: unexpected")

    with pytest.raises(APIError) as e:
        create_model(store, CreateRequest(model="t", from_="base", template="{{"), validate_template=bad)
    assert e.value.message == "template error: unexpected"


def test_missing_from_uses_pull(store, base):
    calls = []

    def pull(name):
        calls.append(name)
        copy_model(store, "base", name)
        yield {"status": "pulling manifest"}

    events = run_create(store, CreateRequest(model="x", from_="remote/thing"), pull=pull)
    assert calls == ["remote/thing"] and events[0] == {"status": "pulling manifest"}


def test_legacy_modelfile_form(store, tmp_path, base):
    digest, _ = base
    req = request_from_body(store, {"name": "legacy", "modelfile": "FROM base\nSYSTEM old api\nPARAMETER top_k 7"})
    run_create(store, req)
    m = get_model(store, "legacy")
    assert m.system == "old api" and m.params["top_k"] == 7 and m.parent_model == "base:latest"

    req = request_from_body(store, {"model": "blobref", "modelfile": f"FROM @{digest}"})
    run_create(store, req)
    assert get_model(store, "blobref").weights_path == store.blob_path(digest)

    mdir = tmp_path / "mf"
    mdir.mkdir()
    tiny_gguf(mdir / "w.gguf")
    (mdir / "Modelfile").write_text("FROM ./w.gguf\nTEMPLATE {{ .Prompt }}")
    run_create(store, request_from_body(store, {"model": "frompath", "path": str(mdir / "Modelfile")}))
    assert get_model(store, "frompath").template == "{{ .Prompt }}"

    with pytest.raises(APIError) as e:
        request_from_body(store, {"model": "x", "modelfile": ""})
    assert (e.value.status, e.value.message) == (400, "path or Modelfile are required")


def test_copy_delete_list(store, base):
    copy_model(store, "base", "Other/Copy:v1")
    assert store.read_manifest_bytes(parse_name("Other/Copy:v1")) == store.read_manifest_bytes(parse_name("base"))
    copy_model(store, "BASE", "other/copy:v2")  # destination canonicalized to on-disk case
    assert store.resolve(parse_name("other/copy:v2")).namespace == "Other"
    names = [e["name"] for e in list_models(store)]
    assert set(names) == {"base:latest", "Other/Copy:v1", "Other/Copy:v2"}
    entry = list_models(store)[0]
    assert len(entry["digest"]) == 64 and entry["size"] > 0
    assert entry["details"]["format"] == "gguf" and entry["capabilities"] == ["completion", "tools"]
    with pytest.raises(APIError) as e:
        copy_model(store, "nope", "x")
    assert (e.value.status, e.value.message) == (404, 'model "nope" not found')
    with pytest.raises(APIError) as e:
        copy_model(store, "base", "../x")
    assert e.value.message == 'destination "../x" is invalid'
    with pytest.raises(APIError) as e:
        copy_model(store, "a@b", "x")
    assert e.value.message == 'source "a@b" is invalid'
    delete_model(store, "other/copy:v1")
    delete_model(store, "Other/Copy:v2")
    with pytest.raises(ModelNotFoundError) as e:
        delete_model(store, "other/copy:v1")
    assert (e.value.status, e.value.message, e.value.name) == (404, "model 'other/copy:v1' not found", "other/copy:v1")
    with pytest.raises(APIError) as e:
        delete_model(store, "a/b/c/d/e")
    assert e.value.message == 'name "a/b/c/d/e" is invalid'
    assert get_model(store, "base").weights_path.is_file()


def test_show_small_model(store, base):
    r = show_model(store, "base", options={"num_ctx": 1024}, system="override")
    assert r["system"] == "override" and r["license"] == "L1"
    assert "num_ctx                        1024" in r["parameters"]
    assert "PARAMETER num_ctx 1024" in r["modelfile"] and "SYSTEM override" in r["modelfile"]
    assert r["details"]["parent_model"] == "" and r["details"]["family"] == "llama"
    assert r["model_info"]["general.architecture"] == "llama"
    assert "tokenizer.chat_template" not in r["model_info"]
    assert r["tensors"] == [{"name": "token_embd.weight", "type": "F16", "shape": [8, 4]}]
    with pytest.raises(ModelNotFoundError) as e:
        show_model(store, "missing")
    assert e.value.message == "model 'missing:latest' not found"


def test_concurrent_creates_one_name(store, base):
    import threading

    errors = []

    def worker(i):
        try:
            run_create(store, CreateRequest(model="race", from_="base", system=f"s{i}"))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    m = get_model(store, "race")
    assert m.system.startswith("s")
    for layer in m.manifest.all_layers():
        assert store.has_blob(layer.digest)
