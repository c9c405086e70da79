import pytest

from registry.errors import APIError
from registry.modelfile import (
    ERR_INVALID_COMMAND, ERR_INVALID_ROLE, format_params, go_float, modelfile_fields,
    parameters_text, parse_modelfile, quote, show_modelfile,
)

FULL = '''\ufeff# a comment
from llama3.2
PARAMETER temperature 0.6
PARAMETER num_ctx 4096
PARAMETER use_mmap false
PARAMETER stop <|eot_id|>
parameter stop "two words"
PARAMETER mirostat 1
TEMPLATE """{{ if .System }}{{ .System }}{{ end }}
{{ .Prompt }}"""
SYSTEM "You are
helpful"
ADAPTER ./missing-adapter-ignored-by-parse.gguf
LICENSE MIT
LICENSE """Apache "2.0\""""
MESSAGE user Hello there
MESSAGE assistant "Hi!"
REQUIRES 0.14.0
RENDERER qwen3
PARSER qwen3
'''


def test_every_instruction():
    mf = parse_modelfile(FULL)
    got = [(c.name, c.args) for c in mf.commands]
    assert got == [
        ("model", "llama3.2"),
        ("temperature", "0.6"),
        ("num_ctx", "4096"),
        ("use_mmap", "false"),
        ("stop", "<|eot_id|>"),
        ("stop", "two words"),
        ("mirostat", "1"),
        ("template", "{{ if .System }}{{ .System }}{{ end }}\n{{ .Prompt }}"),
        ("system", "You are\nhelpful"),
        ("adapter", "./missing-adapter-ignored-by-parse.gguf"),
        ("license", "MIT"),
        ("license", 'Apache "2.0"'),
        ("message", "user: Hello there"),
        ("message", "assistant: Hi!"),
        ("requires", "0.14.0"),
        ("renderer", "qwen3"),
        ("parser", "qwen3"),
    ]


def test_fields_typed_and_accumulated(tmp_path):
    text = "\n".join(line for line in FULL.splitlines() if not line.startswith("ADAPTER"))
    f = modelfile_fields(parse_modelfile(text), tmp_path)
    assert f.from_ == "llama3.2"
    assert f.parameters == {"temperature": 0.6, "num_ctx": 4096, "use_mmap": False,
                            "stop": ["<|eot_id|>", "two words"]}  # mirostat dropped
    assert f.license == ["MIT", 'Apache "2.0"']
    assert f.messages == [{"role": "user", "content": "Hello there"},
                          {"role": "assistant", "content": "Hi!"}]
    assert (f.requires, f.renderer, f.parser) == ("0.14.0", "qwen3", "qwen3")


@pytest.mark.parametrize(
    "text, message",
    [
        ("FROM x\nFOO bar", f"(line 2): {ERR_INVALID_COMMAND}"),
        ("FROM x\n\nMESSAGE robot hi", f"(line 3): {ERR_INVALID_ROLE}"),
        ("PARAMETER temperature 1", "no FROM line"),
        ("", "no FROM line"),
        ('FROM x\nSYSTEM """never closed', "unexpected EOF"),
        ('FROM x\nSYSTEM "never closed', "unexpected EOF"),
        ("FROM x\nPARAMETER", "unexpected EOF"),
        ("FROM x\nPARAMETER a-b 1", "unexpected EOF: a"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(APIError) as e:
        parse_modelfile(text)
    assert (e.value.status, e.value.message) == (400, message)


def test_lexing_details():
    mf = parse_modelfile('FROM x\n  # indented comment\n\nSYSTEM    padded value   \nTEMPLATE """a\n\nb"""')
    assert [(c.name, c.args) for c in mf.commands][1:] == [("system", "padded value"), ("template", "a\n\nb")]
    mf = parse_modelfile('FROM x\r\nSYSTEM "quoted"\r\n')
    assert mf.commands[1].args == "quoted"
    assert parse_modelfile(b"\xef\xbb\xbfFROM y").commands[0].args == "y"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"temperature": ["hot"]}, "invalid float value [hot]"),
        ({"num_ctx": ["1.5"]}, "invalid int value [1.5]"),
        ({"use_mmap": ["yes"]}, "invalid bool value [yes]"),
        ({"bogus": ["1"]}, "unknown parameter 'bogus'"),
    ],
)
def test_format_params_errors(params, message):
    with pytest.raises(APIError) as e:
        format_params(params)
    assert e.value.message == message


def test_format_params_types():
    assert format_params({"top_k": ["-1"], "top_p": ["1e-1"], "use_mmap": ["T"], "stop": ["a"]}) == {
        "top_k": -1, "top_p": 0.1, "use_mmap": True, "stop": ["a"]}


def test_requires_must_be_semver(tmp_path):
    with pytest.raises(APIError) as e:
        modelfile_fields(parse_modelfile("FROM x\nREQUIRES banana"), tmp_path)
    assert e.value.message == "requires must be a valid semver (e.g. 0.14.0)"
    assert modelfile_fields(parse_modelfile("FROM x\nREQUIRES v1.2.3"), tmp_path).requires == "1.2.3"


def test_from_paths(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    f = modelfile_fields(parse_modelfile("FROM ./m.gguf"), tmp_path)
    assert f.files == {"m.gguf": tmp_path / "m.gguf"} and f.from_ == ""
    d = tmp_path / "hf"
    (d / "sub").mkdir(parents=True)
    for name in ["model.safetensors", "config.json", "sub/config.json", "tokenizer.model", "README.md", "vocab.txt"]:
        (d / name).write_bytes(b"x")
    f = modelfile_fields(parse_modelfile("FROM hf"), tmp_path)
    assert sorted(f.files) == ["config.json", "model.safetensors", "sub/config.json", "tokenizer.model", "vocab.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(APIError) as e:
        modelfile_fields(parse_modelfile("FROM empty"), tmp_path)
    assert e.value.message == "no Modelfile or safetensors files found"
    f = modelfile_fields(parse_modelfile("FROM @sha256:" + "a" * 64), tmp_path)
    assert list(f.blob_files.values()) == ["sha256:" + "a" * 64]


def test_quote_and_go_formatting():
    assert quote("plain") == "plain"
    assert quote(" lead") == '" lead"'
    assert quote('a\n"b"') == '"""a\n"b\""""'
    assert [go_float(x) for x in (0.7, 1.0, 1e6, 1e-5, 123456.0)] == ["0.7", "1", "1e+06", "1e-05", "123456"]
    text = parameters_text({"stop": ["<|eot_id|>", 'q"'], "temperature": 0.6, "num_ctx": 4096})
    assert text.splitlines() == [
        "stop" + " " * 27 + '"<|eot_id|>"',
        "stop" + " " * 27 + '"q\\""',
        "temperature" + " " * 20 + "0.6",
        "num_ctx" + " " * 24 + "4096",
    ]


def test_show_modelfile_round_trip(tmp_path):
    text = show_modelfile(
        "m:latest", "/store/blobs/sha256-x", template="{{ .Prompt }}", system=" spaced system",
        params={"stop": ["a", "b"], "temperature": 0.5}, licenses=["line1\nline2"],
        messages=[{"role": "user", "content": 'say "hi"\nnow'}],
    )
    assert text.startswith('# Modelfile generated by "ollama show"\n'
                           "# To build a new Modelfile based on this, replace FROM with:\n"
                           "# FROM m:latest\n\nFROM /store/blobs/sha256-x\nTEMPLATE {{ .Prompt }}\n")
    f = modelfile_fields(parse_modelfile(text), tmp_path)
    assert f.system == " spaced system"
    assert f.parameters == {"stop": ["a", "b"], "temperature": 0.5}
    assert f.license == ["line1\nline2"]
    assert f.messages == [{"role": "user", "content": 'say "hi"\nnow'}]
