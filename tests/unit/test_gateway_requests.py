"""The query gateway's request form and `metering query --gateway`'s URL and token rules (no storage, no HTTP).

The attacks over real HTTP and chDB are in tests/integration/test_gateway_access.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from clickhouse.gateway import MAX_BODY_BYTES, GatewayReader, parse_request
from clickhouse.queries import QueryError
from jobs.cli.query import gateway_url
from jobs.config import ConfigError, load_config


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"name": "finals"}', ("finals", {})),
        (b'{"name": "finals", "parameters": null}', ("finals", {})),
        (b'{"name": "finals", "parameters": {"customer": "acme"}}', ("finals", {"customer": "acme"})),
        (
            b'{"name": "check_recompute", "parameters": {"sample": 0.5, "meter_dims": [["a"], []], "revision": 2, "on": true}}',
            ("check_recompute", {"sample": 0.5, "meter_dims": [["a"], []], "revision": 2, "on": True}),
        ),
    ],
)
def test_a_request_is_a_name_and_plain_parameters(body: bytes, expected: tuple[str, dict[str, Any]]) -> None:
    assert parse_request(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'{"name": ["finals"]}',
        b'{"name": "finals", "parameters": []}',
        b'{"name": "finals", "parameters": "x"}',
        b'{"name": "finals", "sql": "SELECT 1"}',
        b'{"name": "finals", "parameters": {"customer": {"a": 1}}}',
        b'{"name": "finals", "parameters": {"customer": [[[["deep"]]]]}}',
        b'{"name": "finals", "parameters": {"1customer": "a"}}',
        b'{"name": "finals", "parameters": {"customer:String": "a"}}',
        b'{"name": "finals", "parameters": {"customer": Infinity}}',
        b'{"name": "' + b"x" * 200 + b'"}',
        b'{"name": "finals", "parameters": {' + b",".join(b'"p%d": 1' % i for i in range(65)) + b"}}",
        b"\xc3\x28",
    ],
)
def test_anything_else_is_refused(body: bytes) -> None:
    with pytest.raises(Exception) as refused:
        parse_request(body)
    assert getattr(refused.value, "status", None) == 400


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8750", "http://localhost:8750/", "http://[::1]:8750", "https://metering.example.com/gateway"]
)
def test_gateway_urls_a_token_may_be_sent_to(url: str) -> None:
    assert gateway_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://metering.example.com:8750", "clear text"),
        ("http://10.0.0.5:8750", "clear text"),
        ("http://127.0.0.1.example.com:8750", "clear text"),
        ("ftp://127.0.0.1:21", r"give http\(s\)://"),
        ("127.0.0.1:8750", r"give http\(s\)://"),
        ("http://127.0.0.1:8750/?token=x", r"give http\(s\)://"),
        ("http://127.0.0.1:99999", "not a URL"),
        ("https://user:secret@metering.example.com", "without a user or password"),
    ],
)
def test_gateway_urls_that_would_expose_the_token_are_refused(url: str, message: str) -> None:
    with pytest.raises(QueryError, match=message) as refused:
        gateway_url(url)
    assert "secret" not in str(refused.value)


def test_the_token_comes_from_the_environment_and_is_never_shown() -> None:
    token = "mt1.eyJ2IjoxfQ.c2lnbmF0dXJl"
    config = load_config(None, {"METERING__ACCESS__TOKEN": f" {token} "}, require_meters=False)
    assert config.access.token == token
    assert token not in repr(config) and token not in repr(config.access)
    assert token not in repr(GatewayReader("http://127.0.0.1:1", credential=token))
    with pytest.raises(ConfigError, match=r"access\.token: must be the text of a token") as error:
        load_config(None, {"METERING__ACCESS__TOKEN": "x" * 5000}, require_meters=False)
    assert "xxxx" not in str(error.value)


def test_the_body_limit_leaves_room_for_every_real_request() -> None:
    assert 16 * 1024 <= MAX_BODY_BYTES <= 1024 * 1024
