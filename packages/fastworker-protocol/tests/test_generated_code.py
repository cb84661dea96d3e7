"""The committed generated code matches proto/, and the package's public surface is stable."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

import fastworker.protocol
from fastworker.protocol.v1 import _proto_digest

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_V1 = REPO_ROOT / "proto" / "fastworker" / "protocol" / "v1"


def _digest_of_proto_sources() -> str:
    # Same algorithm as scripts/codegen.py:proto_digest (kept independent on purpose: a bug in one shows).
    digest = hashlib.sha256()
    for path in sorted(PROTO_V1.glob("*.proto")):
        digest.update(path.relative_to(REPO_ROOT / "proto").as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@pytest.mark.skipif(not PROTO_V1.is_dir(), reason="installed from an sdist/wheel without the repo's proto/ folder")
def test_generated_code_was_built_from_the_current_proto_sources() -> None:
    assert _proto_digest.PROTO_SHA256 == _digest_of_proto_sources(), (
        "proto/ changed without regenerating: run `tox -e codegen` and commit the result"
    )


@pytest.mark.skipif(not PROTO_V1.is_dir(), reason="installed without the repo's proto/ folder")
def test_every_proto_file_has_a_generated_module_and_stub() -> None:
    package_dir = Path(fastworker.protocol.__file__).parent / "v1"
    for proto in PROTO_V1.glob("*.proto"):
        assert (package_dir / f"{proto.stem}_pb2.py").is_file()
        assert (package_dir / f"{proto.stem}_pb2.pyi").is_file()
        importlib.import_module(f"fastworker.protocol.v1.{proto.stem}_pb2")


def test_public_api_is_exactly_what_all_lists() -> None:
    public = {name for name in dir(fastworker.protocol) if not name.startswith("_")} - {
        "addresses",
        "auth",
        "errors",
        "lease",
        "framing",
        "ids",
        "payload",
        "queues",
        "v1",
        "version",
        "versioning",
    }
    assert public | {"__version__"} == set(fastworker.protocol.__all__)
    assert fastworker.protocol.__all__ == sorted(fastworker.protocol.__all__, key=lambda n: (not n.isupper(), n))


def test_error_types_share_the_fastworker_root() -> None:
    from fastworker.protocol import errors

    for name in (
        "ProtocolError",
        "DecodeError",
        "FrameTooLarge",
        "IncompatibleProtocol",
        "PayloadError",
        "AuthenticationError",
    ):
        assert issubclass(getattr(errors, name), errors.FastworkerError)
