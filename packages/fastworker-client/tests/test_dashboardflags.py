"""The web dashboard's flags, shared by the control plane and the standalone dashboard."""

from __future__ import annotations

import argparse

import pytest

from fastworker.client.dashboardflags import add_dashboard_flags, split_host


def test_host_names_split_into_name_and_port_and_malformed_ones_are_none() -> None:
    assert split_host("Dash.Example.") == ("dash.example", None)
    assert split_host("dash.example:8443") == ("dash.example", 8443)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("localhost.:80") == ("localhost", 80)
    for bad in ("b:x", "a/b", "", "host:70000", "[::1", "localhost..", "localhost..:80", "."):
        assert split_host(bad) is None, bad


def test_a_bad_dashboard_host_is_a_usage_error_naming_it_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="daemon")
    add_dashboard_flags(parser)
    assert parser.parse_args(["--dashboard-host", "a.example, b.example:81"]).dashboard_host == [
        "a.example",
        "b.example:81",
    ]
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--dashboard-host", "good.example,b:x"])
    assert exited.value.code == 2
    assert "--dashboard-host: 'b:x' is not a host name" in capsys.readouterr().err
