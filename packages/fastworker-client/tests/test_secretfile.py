"""Where the shared secret comes from: --secret, --secret-file, FASTWORKER_SECRET_FILE, FASTWORKER_SECRET (in that order)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fastworker.client.envflags import apply_env_defaults
from fastworker.client.secretfile import add_secret_file_flag, resolve_secret, secret_from_env


def resolved(argv: list[str], environ: dict[str, str]) -> str | None:
    parser = argparse.ArgumentParser(prog="fw")
    parser.add_argument("--secret", default=None)
    add_secret_file_flag(parser)
    apply_env_defaults(parser, environ)
    return resolve_secret(parser, parser.parse_args(argv), argv)


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "secret"
    path.write_text("from-file\r\n")
    return str(path)


def test_flags_beat_env_vars_and_the_file_env_var_beats_the_secret_env_var(secret_file: str) -> None:
    both_env = {"FASTWORKER_SECRET_FILE": secret_file, "FASTWORKER_SECRET": "from-env"}
    assert resolved([], both_env) == "from-file"
    assert resolved([], {"FASTWORKER_SECRET": "from-env"}) == "from-env"
    assert resolved(["--secret", "from-flag"], both_env) == "from-flag"
    assert resolved(["--secret=from-flag"], {"FASTWORKER_SECRET_FILE": secret_file}) == "from-flag"
    assert resolved(["--secret-file", secret_file], {"FASTWORKER_SECRET": "from-env"}) == "from-file"
    assert resolved(["--secret-f=" + secret_file], {}) == "from-file"  # an abbreviation argparse accepts
    assert resolved([], {}) is None


def test_both_flags_or_an_unusable_file_are_usage_errors_naming_the_file(
    secret_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as both:
        resolved(["--secret", "x", "--secret-file", secret_file], {})
    assert both.value.code == 2 and "not both" in capsys.readouterr().err
    missing = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as unreadable:
        resolved([], {"FASTWORKER_SECRET_FILE": missing, "FASTWORKER_SECRET": "from-env"})
    assert unreadable.value.code == 2 and missing in capsys.readouterr().err


def test_clients_read_the_file_env_var_before_the_secret_env_var(secret_file: str) -> None:
    assert secret_from_env({"FASTWORKER_SECRET_FILE": secret_file, "FASTWORKER_SECRET": "from-env"}) == "from-file"
    assert secret_from_env({"FASTWORKER_SECRET": "from-env"}) == "from-env"
    assert secret_from_env({}) is None
    with pytest.raises(ValueError, match="missing"):
        secret_from_env({"FASTWORKER_SECRET_FILE": str(Path(secret_file).with_name("missing"))})
