import pytest

from registry.errors import APIError
from registry.names import ModelName, parse_name, parse_ref


@pytest.mark.parametrize(
    "raw, parts",
    [
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest")),
        ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b")),
        ("user/m", ("registry.ollama.ai", "user", "m", "latest")),
        ("example.com:5000/ns/m", ("example.com:5000", "ns", "m", "latest")),
        ("example.com:5000/ns/m:v1", ("example.com:5000", "ns", "m", "v1")),
        ("http://localhost:5000/ns/m:t", ("localhost:5000", "ns", "m", "t")),
        ("_x/Y_1-2:T.3", ("registry.ollama.ai", "_x", "Y_1-2", "T.3")),
    ],
)
def test_valid_names(raw, parts):
    n = parse_name(raw)
    assert n.parts() == parts
    assert n.is_valid()


def test_scheme():
    assert ModelName.parse("http://h/ns/m").scheme == "http"
    assert ModelName.parse("m").scheme == "https"


@pytest.mark.parametrize(
    "raw",
    [
        "", ":", "m:", "ns/", "m@sha256:abc", "../../etc/passwd", "a/b/c/d/e", ".", "..",
        "ns/..", "../m", "m:..", "a\\b", "m\x00", "ns.x/m", "-m", "m:-t", "a" * 81,
        "m:" + "t" * 81, "h/ns/m:t:x", "m m", ".hidden",
    ],
)
def test_invalid_names(raw):
    assert not ModelName.parse(raw).is_valid()
    with pytest.raises(APIError) as e:
        parse_name(raw)
    assert (e.value.status, e.value.message) == (400, "invalid model name")


def test_length_limits():
    assert ModelName.parse("a" * 80).is_valid()
    assert ModelName.parse("h" * 350 + "/ns/m").is_valid()
    assert not ModelName.parse("h" * 351 + "/ns/m").is_valid()


def test_display_shortest():
    assert parse_name("llama3.2").display_shortest() == "llama3.2:latest"
    assert parse_name("user/m").display_shortest() == "user/m:latest"
    assert parse_name("example.com:5000/ns/m").display_shortest() == "example.com:5000/ns/m:latest"
    assert parse_name("example.com/library/m").display_shortest() == "example.com/library/m:latest"
    assert parse_name("REGISTRY.ollama.ai/LIBRARY/m:t").display_shortest() == "m:t"
    assert str(parse_name("m")) == "registry.ollama.ai/library/m:latest"


def test_filepath_and_case_insensitive_equality():
    n = parse_name("Foo/Bar:Baz")
    assert n.filepath() == "registry.ollama.ai/Foo/Bar/Baz"
    assert n.equal_fold(parse_name("foo/bar:baz"))
    assert not n.equal_fold(parse_name("foo/bar:other"))


def test_source_suffixes():
    assert parse_ref("m:local") == (parse_name("m"), "local")
    assert parse_ref("m:cloud") == (parse_name("m"), "cloud")
    assert parse_ref("m:7b-cloud") == (parse_name("m:7b"), "cloud")
    assert parse_ref("m:7b") == (parse_name("m:7b"), "")
    with pytest.raises(APIError) as e:
        parse_ref("m:local:cloud")
    assert e.value.status == 400
    assert e.value.message == 'use either :local or :cloud, not both: "m:local:cloud"'
