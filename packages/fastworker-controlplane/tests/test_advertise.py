"""Announced addresses are ones that peers on other hosts can dial."""

from __future__ import annotations

import socket

import pytest

from fastworker.controlplane.server import advertised, name_problem


def test_a_loopback_bind_is_announced_as_bound() -> None:
    assert advertised("tcp://127.0.0.1:5551", None) == "tcp://127.0.0.1:5551"


def test_advertise_host_replaces_the_bound_host() -> None:
    assert advertised("tcp://0.0.0.0:5552", "worker-gw.example") == "tcp://worker-gw.example:5552"
    assert advertised("tcp://10.0.0.5:5552", "10.9.9.9") == "tcp://10.9.9.9:5552"


def test_a_wildcard_bind_is_announced_with_this_machines_name() -> None:
    assert advertised("tcp://0.0.0.0:5551", None) == f"tcp://{socket.getfqdn()}:5551"


def test_ipc_and_empty_addresses_are_left_alone() -> None:
    assert advertised("ipc:///tmp/fw.sock", "elsewhere") == "ipc:///tmp/fw.sock"
    assert advertised("", "elsewhere") == ""


def test_a_machine_name_that_resolves_only_to_loopback_or_not_at_all_is_named_as_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    answers = {
        "loopy": [(socket.AF_INET, 0, 0, "", ("127.0.1.1", 0)), (socket.AF_INET6, 0, 0, "", ("::1", 0, 0, 0))],
        "routable": [(socket.AF_INET, 0, 0, "", ("127.0.1.1", 0)), (socket.AF_INET, 0, 0, "", ("10.1.2.3", 0))],
    }

    def getaddrinfo(host: str, port: object) -> list[tuple[object, ...]]:
        if host not in answers:
            raise socket.gaierror("no such name")
        return answers[host]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert name_problem("loopy") == (
        "this machine's name 'loopy', which resolves to 127.0.1.1, ::1 here: peers on other hosts cannot reach it"
    )
    assert name_problem("nowhere") is not None and "does not resolve here" in name_problem("nowhere")  # type: ignore[operator]
    assert name_problem("routable") is None
