"""Where the shared secret comes from (--secret, --secret-file, FASTWORKER_SECRET_FILE, FASTWORKER_SECRET, in that
order), and how a secret file and a fallbacks file are read again when they change (rotation without a restart)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest

from fastworker.client.envflags import apply_env_defaults
from fastworker.client.secretfile import (
    SecretFiles,
    add_secret_file_flag,
    read_secret_file,
    resolve_secret,
    secret_from_env,
)
from fastworker.protocol.auth import Secret


def secrets_of(secret: Secret | None) -> tuple[str, ...] | None:
    """What a resolved secret seals and opens with: a value is one secret, a source gives its list."""
    return None if secret is None else (secret,) if isinstance(secret, str) else tuple(secret.secrets())


def resolved(argv: list[str], environ: dict[str, str]) -> tuple[str, ...] | None:
    parser = argparse.ArgumentParser(prog="fw")
    parser.add_argument("--secret", default=None)
    add_secret_file_flag(parser)
    apply_env_defaults(parser, environ)
    return secrets_of(resolve_secret(parser, parser.parse_args(argv), argv))


def rewrite(path: Path, text: str) -> None:
    """Change a file as a Kubernetes Secret volume does: a new file put in place (a new inode)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "secret"
    path.write_text("from-file\r\n")
    return str(path)


def test_flags_beat_env_vars_and_the_file_env_var_beats_the_secret_env_var(secret_file: str) -> None:
    both_env = {"FASTWORKER_SECRET_FILE": secret_file, "FASTWORKER_SECRET": "from-env"}
    assert resolved([], both_env) == ("from-file",)
    assert resolved([], {"FASTWORKER_SECRET": "from-env"}) == ("from-env",)
    assert resolved(["--secret", "from-flag"], both_env) == ("from-flag",)
    assert resolved(["--secret=from-flag"], {"FASTWORKER_SECRET_FILE": secret_file}) == ("from-flag",)
    assert resolved(["--secret-file", secret_file], {"FASTWORKER_SECRET": "from-env"}) == ("from-file",)
    assert resolved(["--secret-fi=" + secret_file], {}) == ("from-file",)  # an abbreviation argparse accepts
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
    from_file = secret_from_env({"FASTWORKER_SECRET_FILE": secret_file, "FASTWORKER_SECRET": "from-env"})
    assert secrets_of(from_file) == ("from-file",)
    assert secret_from_env({"FASTWORKER_SECRET": "from-env"}) == "from-env"
    assert secret_from_env({}) is None
    with pytest.raises(ValueError, match="missing"):
        secret_from_env({"FASTWORKER_SECRET_FILE": str(Path(secret_file).with_name("missing"))})


def test_a_fallbacks_file_adds_secrets_that_open_but_never_seal(secret_file: str, tmp_path: Path) -> None:
    fallbacks = tmp_path / "fallbacks"
    fallbacks.write_text("old-one\r\n\nfrom-file\n  \nnext-one\n")  # blank lines skipped; the secret not twice
    expected = ("from-file", "old-one", "next-one")
    assert resolved(["--secret-fallbacks-file", str(fallbacks)], {"FASTWORKER_SECRET_FILE": secret_file}) == expected
    assert resolved(["--secret", "from-flag"], {"FASTWORKER_SECRET_FALLBACKS_FILE": str(fallbacks)}) == (
        "from-flag",
        "old-one",
        "from-file",
        "next-one",
    )
    env = {"FASTWORKER_SECRET_FILE": secret_file, "FASTWORKER_SECRET_FALLBACKS_FILE": str(fallbacks)}
    assert secrets_of(secret_from_env(env)) == expected
    fallbacks.write_text("")
    assert resolved(["--secret-fallbacks-file", str(fallbacks)], {"FASTWORKER_SECRET": "s"}) == ("s",)  # none: valid


def test_fallbacks_without_a_secret_or_an_unusable_fallbacks_file_are_errors_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fallbacks = tmp_path / "fallbacks"
    fallbacks.write_text("old\n")
    with pytest.raises(SystemExit) as alone:
        resolved(["--secret-fallbacks-file", str(fallbacks)], {})
    assert alone.value.code == 2 and "no shared secret" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no shared secret"):
        secret_from_env({"FASTWORKER_SECRET_FALLBACKS_FILE": str(fallbacks)})
    missing = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as unreadable:
        resolved(["--secret", "s", "--secret-fallbacks-file", missing], {})
    assert unreadable.value.code == 2 and f"cannot read the secret fallbacks file {missing}" in capsys.readouterr().err


def test_a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_good_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret, fallbacks = tmp_path / "secret", tmp_path / "fallbacks"
    secret.write_text("old\n")
    fallbacks.write_text("")
    source = SecretFiles(str(secret), str(fallbacks))
    assert source.secrets() == ("old",)

    rewrite(fallbacks, "new\n")  # step 1 of a rotation: accept the next secret
    assert source.secrets() == ("old", "new")
    rewrite(secret, "new\n")  # step 2: seal with it, still accept the old one
    rewrite(fallbacks, "old\n")
    assert source.secrets() == ("new", "old")

    with caplog.at_level(logging.WARNING, logger="fastworker.client.secretfile"):
        rewrite(secret, "")  # a broken edit: empty
        assert source.secrets() == ("new", "old")
        secret.unlink()  # or gone for a moment
        assert source.secrets() == ("new", "old")
    assert f"the secret file {secret} is empty" in caplog.text and "keeping the secrets in force" in caplog.text

    rewrite(secret, "newest\n")
    rewrite(fallbacks, "")  # step 3: drop the old one
    assert source.secrets() == ("newest",)
    assert "newest" not in repr(source)  # never the secrets


def test_secret_files_refuse_neither_or_both_of_a_file_and_a_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either as a file or as a value"):
        SecretFiles()
    path = tmp_path / "secret"
    path.write_text("x")
    with pytest.raises(ValueError, match="either as a file or as a value"):
        SecretFiles(str(path), secret="y")


def test_a_fallbacks_file_of_more_than_eight_secrets_is_refused_naming_it(tmp_path: Path) -> None:
    # Each secret costs a failing frame one more MAC: a long list would make garbage expensive.
    fallbacks = tmp_path / "fallbacks"
    fallbacks.write_text("".join(f"old-{n}\n" for n in range(8)))
    assert len(SecretFiles(None, str(fallbacks), secret="s").secrets()) == 9
    fallbacks.write_text("".join(f"old-{n}\n" for n in range(9)))
    with pytest.raises(ValueError, match=f"the secret fallbacks file {fallbacks} holds 9 secrets; at most 8"):
        SecretFiles(None, str(fallbacks), secret="s")


def test_a_secret_file_of_white_space_only_is_refused_as_empty(tmp_path: Path) -> None:
    blank = tmp_path / "blank"
    blank.write_text("   \n")
    with pytest.raises(ValueError, match=f"the secret file {blank} is empty \\(only white space\\)"):
        read_secret_file(str(blank))


def test_a_refused_secret_file_from_an_env_var_is_named_with_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "missing")
    monkeypatch.setenv("FASTWORKER_SECRET_FILE", missing)
    with pytest.raises(SystemExit):
        resolved([], {"FASTWORKER_SECRET_FILE": missing})
    assert f"cannot read the secret file {missing}" in (err := capsys.readouterr().err)
    assert "(--secret-file from FASTWORKER_SECRET_FILE)" in err
    with pytest.raises(SystemExit):  # given as a flag: the variable is not named
        resolved(["--secret-file", missing], {"FASTWORKER_SECRET_FILE": missing})
    assert "FASTWORKER_SECRET_FILE" not in capsys.readouterr().err
