import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from registry.errors import APIError
from serve.duration import DurationError, keep_alive_seconds, env_keep_alive
from serve.settings import Settings, parse_host
from serve.wire import decode_body, encode, go_time

FIELDS = {"model": "string", "prompt": "string", "stream": "bool", "context": "ints",
          "options": "object", "keep_alive": "duration"}


def decode(body):
    return decode_body(body if isinstance(body, bytes) else json.dumps(body).encode(),
                       "GenerateRequest", FIELDS)


def test_empty_body_is_missing_request_body():
    for body in (b"", b"  \n"):
        with pytest.raises(APIError) as err:
            decode(body)
        assert (err.value.status, err.value.message) == (400, "missing request body")


def test_wrong_type_names_go_struct_field():
    with pytest.raises(APIError) as err:
        decode({"model": "m", "prompt": 5})
    assert err.value.status == 400
    assert err.value.message == (
        "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string")
    with pytest.raises(APIError) as err:
        decode({"model": "m", "stream": "yes"})
    assert "GenerateRequest.stream of type bool" in err.value.message
    with pytest.raises(APIError):
        decode({"model": "m", "context": [1, "a"]})


def test_malformed_json_gets_go_syntax_text():
    with pytest.raises(APIError) as err:
        decode(b"{not json")
    assert err.value.status == 400
    assert err.value.message.startswith("invalid character 'n'")
    with pytest.raises(APIError) as err:
        decode(b'{"model": "m"')
    assert err.value.message == "unexpected EOF"
    with pytest.raises(APIError) as err:
        decode(b"[1,2]")
    assert err.value.message == "json: cannot unmarshal array into Go value of type api.GenerateRequest"


def test_null_fields_are_zero_values():
    assert decode({"model": "m", "prompt": None})["prompt"] is None


def test_encode_escapes_html_like_go():
    assert encode({"a": "<b>&"}) == b'{"a":"\\u003cb\\u003e\\u0026"}'
    assert encode({"a": "é"}) == '{"a":"é"}'.encode()


def test_go_time_trims_zeros_and_keeps_offsets():
    dt = datetime(2023, 8, 4, 19, 22, 45, 499100, tzinfo=timezone.utc)
    assert go_time(dt) == "2023-08-04T19:22:45.4991Z"
    assert go_time(dt.replace(microsecond=0)) == "2023-08-04T19:22:45Z"
    pdt = dt.astimezone(timezone(timedelta(hours=-7)))
    assert go_time(pdt).endswith("-07:00")


@pytest.mark.parametrize("value,seconds", [
    (0, 0.0), (300, 300.0), (1.5, 1.5), ("5m", 300.0), ("1h30m", 5400.0), ("300ms", 0.3),
    ("0", 0.0), ("-1m", math.inf), (-1, math.inf),
])
def test_keep_alive_values(value, seconds):
    assert keep_alive_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value,message", [
    ("300", 'time: missing unit in duration "300"'),
    ("-1", 'time: missing unit in duration "-1"'),
    ("abc", 'time: invalid duration "abc"'),
])
def test_keep_alive_strings_need_units(value, message):
    with pytest.raises(DurationError) as err:
        keep_alive_seconds(value)
    assert str(err.value) == message


def test_env_keep_alive_accepts_seconds_and_falls_back():
    assert env_keep_alive("10m") == 600
    assert env_keep_alive("3600") == 3600
    assert env_keep_alive("-1") == math.inf
    assert env_keep_alive("junk") == 300


@pytest.mark.parametrize("raw,url", [
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    (":56789", "http://127.0.0.1:56789"),
    ("0.0.0.0:8080", "http://0.0.0.0:8080"),
    ("http://example.com", "http://example.com:80"),
    ("https://example.com", "https://example.com:443"),
    ("[::1]:9000", "http://[::1]:9000"),
])
def test_ollama_host_parsing(raw, url):
    assert parse_host(raw).url == url


def test_settings_from_env():
    s = Settings.from_env({"HOME": "/h", "OLLAMA_MODELS": " '/m' ", "CORRAL_API_KEY": "a, b",
                           "OLLAMA_NUM_PARALLEL": "x", "OLLAMA_NOPRUNE": "maybe",
                           "CORRAL_NO_DEFAULT_MODELS": "1"})
    assert str(s.models_dir) == "/m"
    assert s.api_keys == ("a", "b")
    assert s.num_parallel == 0  # invalid ints fall back to the default
    assert s.noprune is True  # unparsable booleans count as true, as in Ollama
    assert s.default_models is False
    assert str(s.cache_dir) == "/h/.cache/corral"
