"""Parsing and formatting of nng endpoint URLs."""

from __future__ import annotations

import pytest

from fastworker.protocol import Address, parse_address


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://127.0.0.1:5550", Address("tcp", "127.0.0.1", 5550)),
        ("tcp://localhost:0", Address("tcp", "localhost", 0)),
        ("tcp://[::1]:5551", Address("tcp", "::1", 5551)),
        ("tls+tcp://host.example:443", Address("tls+tcp", "host.example", 443)),
        ("ipc:///tmp/fw.sock", Address("ipc", "/tmp/fw.sock")),
        ("inproc://fw", Address("inproc", "fw")),
    ],
)
def test_urls_parse_and_format_back_unchanged(url: str, expected: Address) -> None:
    assert parse_address(url) == expected
    assert parse_address(url).url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://x:1",
        "127.0.0.1:5550",
        "tcp://127.0.0.1",
        "tcp://:5",
        "tcp://h:port",
        "tcp://h:70000",
        "ipc://",
        # what int() takes but nng refuses later (with a traceback from the dial)
        "tcp://127.0.0.1:+5550",
        "tcp://127.0.0.1: 5550",
        "tcp://127.0.0.1:\u0665\u0665\u0665\u0660",
        "tcp://bad host:5550",
        "tcp://[::1:5550",
        "tcp://::1]:5550",
        "tcp://::1:5550",
    ],
)
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        parse_address(url)


def test_loopback_detection() -> None:
    assert parse_address("tcp://127.0.0.2:1").is_loopback()
    assert parse_address("tcp://[::1]:1").is_loopback()
    assert parse_address("tcp://localhost:1").is_loopback()
    assert parse_address("ipc:///tmp/x").is_loopback()
    assert not parse_address("tcp://0.0.0.0:1").is_loopback()
    assert not parse_address("tcp://10.0.0.1:1").is_loopback()


def test_with_port_replaces_only_the_port() -> None:
    assert parse_address("tcp://127.0.0.1:0").with_port(4242).url == "tcp://127.0.0.1:4242"


def test_with_host_replaces_only_the_host() -> None:
    assert parse_address("tcp://0.0.0.0:5551").with_host("10.1.2.3").url == "tcp://10.1.2.3:5551"
    assert parse_address("tcp://0.0.0.0:5551").with_host("::1").url == "tcp://[::1]:5551"
