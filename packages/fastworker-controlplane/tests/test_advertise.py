"""Announced addresses are ones that peers on other hosts can dial."""

from __future__ import annotations

import socket

from fastworker.controlplane.server import advertised


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
