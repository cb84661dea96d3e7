"""The protocol version this code speaks, and the rule for accepting a peer's."""

from __future__ import annotations

from fastworker.protocol.errors import IncompatibleProtocol

#: The version written into every envelope this code sends. Bumped only for wire-incompatible
#: changes; additive fields and messages keep it (protobuf ignores unknown fields).
PROTOCOL_VERSION = 1

#: The versions this code can read.
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1})


def check_compatible(peer_version: int) -> None:
    """Raise IncompatibleProtocol unless frames of peer_version can be read by this code."""
    if peer_version not in SUPPORTED_VERSIONS:
        raise IncompatibleProtocol(peer_version, SUPPORTED_VERSIONS)
