"""The pool and its children agree on the OUTCOME array across one version step either way.

Children are spawned from the code on disk: after an upgrade under a running worker, a new child
serves an old pool (and the other way round, for a downgrade). A frame either side cannot read
makes the pool kill the child, and every task it ran would end WorkerCrashed.
"""

from __future__ import annotations

from fastworker.worker.child import OUTCOME, _encode_outcome, decode, decode_outcome
from fastworker.worker.executor import Outcome, base_type_names, failure


def _failed() -> Outcome:
    return failure("ConnectionResetError", "reset", base_types=base_type_names(ConnectionResetError))


def test_a_pool_that_reads_base_types_gets_them() -> None:
    message = decode(_encode_outcome(_failed(), 0))
    outcome, _ = decode_outcome(message)
    assert outcome.error is not None and list(outcome.error.base_types)[:2] == ["ConnectionError", "OSError"]


def test_a_child_of_an_older_pool_sends_the_eleven_elements_that_pool_unpacks() -> None:
    # An older pool's config has no outcome_base_types: the child sends what that pool's decoder unpacks
    message = decode(_encode_outcome(_failed(), 0, with_bases=False))
    assert message[0] == OUTCOME and len(message) == 11
    _, succeeded, _codec, _data, error_type, *_rest = message  # the older pool's exact unpacking
    assert not succeeded and error_type == "ConnectionResetError"


def test_an_older_child_s_eleven_elements_are_read_without_base_types() -> None:
    outcome, rss = decode_outcome([OUTCOME, False, 0, b"", "ValueError", "bad", "", 1.0, 2.0, 0, -1.0])
    assert outcome.error is not None and outcome.error.type == "ValueError" and list(outcome.error.base_types) == []
    assert rss == 0 and not outcome.succeeded
