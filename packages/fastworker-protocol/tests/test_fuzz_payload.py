"""Fuzzing the payload decoder: hostile payloads raise PayloadError and nothing else, and never run code.

``decode_value`` / ``decode_arguments`` get arbitrary bytes under every codec number, valid
MessagePack with random structure, and MessagePack built to hurt: FastWorker's extension types
around garbage, extension types nested a hundred thousand deep, length headers that lie, huge
big-integer and Decimal strings, unhashable set members and map keys. Pickle payloads are refused
unless pickle is enabled (arbitrary bytes are never unpickled here: that would be code execution).
Bounded for CI by the ``FUZZ`` settings below (a few seconds per test).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastworker.protocol import PayloadError, decode_arguments, decode_value, encode_arguments, encode_value
from fastworker.protocol.v1.task_pb2 import CODEC_MSGPACK, CODEC_PICKLE, Payload

#: Bounded fuzzing for CI (see test_fuzz_framing.py): no example database, reproducing blob on failure.
FUZZ = settings(
    max_examples=int(os.environ.get("FWFUZZ_EXAMPLES", "400")),  # e.g. FWFUZZ_EXAMPLES=50000 for a long local run
    deadline=timedelta(seconds=1),  # typical examples take 1-40 ms; generous for a noisy CI machine
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

#: The extension type codes the codec defines (1..10), and some it does not.
KNOWN_EXT = list(range(1, 11))
CODECS = st.one_of(st.sampled_from([CODEC_MSGPACK, CODEC_PICKLE, 0, 3, 99, -1]), st.integers(-(2**31), 2**31 - 1))


def assert_decodes_or_refuses(payload: Payload, *, fuzzing: bool = True) -> None:
    """decode_value and decode_arguments each return a value or raise PayloadError, nothing else."""
    for decode in (decode_value, decode_arguments):
        try:
            decode(payload)
        except PayloadError as exc:
            assert str(exc)
            if fuzzing:
                event(f"{decode.__name__}: refused")
        else:
            if fuzzing:
                event(f"{decode.__name__}: decoded")


def ext(code: int, data: bytes) -> bytes:
    """A MessagePack ext32 of any type code (-128..127; msgpack.ExtType allows only 0..127)."""
    return b"\xc9" + struct.pack(">Ib", len(data), code) + data


msgpack_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)


@st.composite
def hostile_ext(draw: Any, depth: int = 3) -> msgpack.ExtType:
    """One of the codec's extension types (or an unknown one) around garbage, MessagePack, or another ext."""
    code = draw(st.one_of(st.sampled_from(KNOWN_EXT), st.integers(0, 127)))
    inner = draw(
        st.one_of(
            st.binary(max_size=40),
            st.text(max_size=40).map(str.encode),
            st.sampled_from(
                [
                    b"9" * 5000,  # a big integer beyond Python's int-from-string limit
                    b"1e999999999",
                    b"NaN",
                    b"sNaN",
                    b"-Infinity",
                    b"9999-99-99T99:99:99",
                    b"\xff\xfe",
                    b"",
                ]
            ),
            st.recursive(msgpack_leaves, lambda kids: st.lists(kids, max_size=4), max_leaves=8).map(
                lambda value: msgpack.packb(value, use_bin_type=True)
            ),
            *([hostile_ext(depth - 1).map(msgpack.packb)] if depth > 0 else []),
        )
    )
    return msgpack.ExtType(code, inner)


def structures() -> st.SearchStrategy[Any]:
    leaves = st.one_of(msgpack_leaves, hostile_ext())
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, max_size=4),
            st.dictionaries(
                st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=4)),
                kids,
                max_size=4,
            ),
        ),
        max_leaves=16,
    )


@FUZZ
@given(st.binary(max_size=1024), CODECS)
def test_arbitrary_bytes_under_any_codec_decode_or_raise_only_payload_error(data: bytes, codec: int) -> None:
    assert_decodes_or_refuses(Payload(codec=codec, data=data))


@FUZZ
@given(structures())
def test_msgpack_with_hostile_extension_types_decodes_or_raises_only_payload_error(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    assert_decodes_or_refuses(Payload(codec=CODEC_MSGPACK, data=data))
    # The same value as a call's [args, kwargs] pair, to get past decode_arguments' shape check.
    pair = msgpack.packb([[value], {"key": value}], use_bin_type=True)
    assert_decodes_or_refuses(Payload(codec=CODEC_MSGPACK, data=pair))


@FUZZ
@given(structures(), st.data())
def test_mutated_msgpack_decodes_or_raises_only_payload_error(value: Any, data: st.DataObject) -> None:
    packed = bytearray(msgpack.packb([[value], {}], use_bin_type=True))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, max(0, len(packed) - 1)))
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "lying length"]))
        if kind == "flip" and packed:
            packed[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del packed[at:]
        elif kind == "insert":
            packed[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:  # an array32/map32/bin32/str32/ext32 header claiming up to 4 GiB
            header = data.draw(st.sampled_from([0xDD, 0xDF, 0xC6, 0xDB, 0xC9]))
            packed[at:at] = bytes([header]) + struct.pack(">I", data.draw(st.sampled_from([2**32 - 1, 2**31, 10**6])))
    assert_decodes_or_refuses(Payload(codec=CODEC_MSGPACK, data=bytes(packed)))


@FUZZ
@given(st.lists(st.one_of(msgpack_leaves, st.lists(msgpack_leaves, max_size=3)), max_size=5))
def test_arguments_that_are_not_an_args_kwargs_pair_raise_payload_error(value: list[Any]) -> None:
    payload = Payload(codec=CODEC_MSGPACK, data=msgpack.packb(value, use_bin_type=True))
    shaped = len(value) == 2 and isinstance(value[0], list) and isinstance(value[1], dict)
    if not shaped:
        with pytest.raises(PayloadError):
            decode_arguments(payload)


@FUZZ
@given(st.binary(max_size=256))
def test_pickle_payloads_are_refused_unless_pickle_is_enabled(data: bytes) -> None:
    with pytest.raises(PayloadError, match="pickle"):
        decode_value(Payload(codec=CODEC_PICKLE, data=data))
    with pytest.raises(PayloadError, match="pickle"):
        decode_arguments(Payload(codec=CODEC_PICKLE, data=data))


@FUZZ
@given(st.binary(min_size=1, max_size=64), st.integers(0, 63))
def test_payloads_over_the_limit_are_refused_before_decoding(data: bytes, limit: int) -> None:
    assume_over = data + b"\xc1" * (limit + 1)  # 0xc1 is never valid MessagePack: decoding would fail otherwise
    with pytest.raises(PayloadError, match="exceeds the limit"):
        decode_value(Payload(codec=CODEC_MSGPACK, data=assume_over), max_size=limit)


#: Decodes stdin as a MessagePack payload in a child process and prints the outcome: a crash there
#: (a segmentation fault from C-stack exhaustion) fails one test instead of killing the test run.
DECODE_IN_CHILD = """
import sys
from fastworker.protocol import PayloadError, decode_arguments, decode_value
from fastworker.protocol.v1.task_pb2 import CODEC_MSGPACK, Payload
payload = Payload(codec=CODEC_MSGPACK, data=sys.stdin.buffer.read())
for decode in (decode_value, decode_arguments):
    try:
        decode(payload)
        print(decode.__name__, "decoded")
    except PayloadError:
        print(decode.__name__, "refused")
"""


def decode_in_child(data: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DECODE_IN_CHILD],
        input=data.decode("latin-1"),
        encoding="latin-1",
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONFAULTHANDLER": ""},
    )


def deep_ext(depth: int, code: int) -> bytes:
    data = msgpack.packb([])
    for _ in range(depth):
        data = ext(code, data)
    return data


@pytest.mark.parametrize("code", [1, 9])  # tuple, set (frozenset likewise): each level decodes the next
@pytest.mark.parametrize("depth", [150, 250, 100_000])
def test_extension_types_nested_deep_raise_payload_error_and_never_crash_the_process(depth: int, code: int) -> None:
    # 250 nested tuples is a 1.5 KB payload. Each level re-enters msgpack's C unpacker (through the
    # ext hook), whose unpack context lives on the C stack, so ~200 levels overflow an 8 MB stack
    # before Python's recursion limit stops them (unless the caller's own stack is already deep):
    # the decoding process dies with SIGSEGV. Decoders of arguments are every task runner, and
    # `fastworker inspect` and the dashboard's task page (inside the control plane).
    done = decode_in_child(deep_ext(depth, code))
    assert done.returncode == 0, f"the decoding process died with {done.returncode}: {done.stderr[-300:]}"
    if depth > 150:  # shallower nesting may decode (it is a legal value); deeper must be refused
        assert done.stdout.split() == ["decode_value", "refused", "decode_arguments", "refused"]


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_arrays_nested_deep_raise_payload_error(depth: int) -> None:
    data = b"\x91" * depth + b"\xc0"  # fixarray of one element, depth times, around nil
    assert_decodes_or_refuses(Payload(codec=CODEC_MSGPACK, data=data), fuzzing=False)


@pytest.mark.parametrize(
    "data",
    [
        ext(7, b"9" * 1_000_000),  # Decimal with a million digits (legal: decodes)
        ext(7, b"1e999999999999999999"),
        ext(7, b"sNaN"),
        ext(-1, b"\x00" * 12),  # msgpack's own timestamp extension
        ext(-1, b"bad length"),
        ext(-128, b""),
        ext(11, b"unknown to the codec"),
    ],
)
def test_legal_but_odd_msgpack_decodes_or_raises_only_payload_error(data: bytes) -> None:
    assert_decodes_or_refuses(Payload(codec=CODEC_MSGPACK, data=data), fuzzing=False)


@pytest.mark.parametrize(
    "data",
    [
        ext(8, b"9" * 100_000),  # big int: 100,000 digits, over Python's int-from-string limit
        ext(5, msgpack.packb([10**10, 0, 0])),  # timedelta overflow
        ext(5, msgpack.packb([1, 2])),  # timedelta of the wrong shape
        ext(5, msgpack.packb("abc")),
        ext(6, b"short"),  # a UUID must be 16 bytes
        ext(9, msgpack.packb([[1], [2]])),  # a set of lists: unhashable
        ext(10, msgpack.packb([{}])),
        ext(9, msgpack.packb(5)),  # a set of a non-iterable
        ext(2, b"2024-13-45T25:61:61"),
        ext(3, b"\xff"),  # not UTF-8
        ext(-1, b"msgpack timestamp ext"),
        b"\x81\x91\x01\x01",  # a map with a list as its key (unhashable)
        b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion elements with none present
        b"\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
        b"\xc1",  # never-used byte
        b"",
    ],
)
def test_hand_made_hostile_msgpack_raises_payload_error(data: bytes) -> None:
    for decode in (decode_value, decode_arguments):
        with pytest.raises(PayloadError):
            decode(Payload(codec=CODEC_MSGPACK, data=data))


def test_everything_the_codec_encodes_still_round_trips_after_fuzzing() -> None:
    # A sanity anchor for the fuzzers above: they exercise the real decoder, not a broken one.
    args, kwargs = decode_arguments(encode_arguments((1, (2, 3), {4}, b"x"), {"k": 10**30}))
    assert args == (1, (2, 3), {4}, b"x") and kwargs == {"k": 10**30}
    assert decode_value(encode_value(frozenset({1}))) == frozenset({1})


def test_the_nesting_bound_is_where_its_error_says() -> None:
    from fastworker.protocol.payload import MAX_EXT_NESTING

    def nested(levels: int) -> Any:
        value: Any = ()
        for _ in range(levels - 1):
            value = (value,)
        return value

    deepest = nested(MAX_EXT_NESTING - 1)
    assert decode_value(encode_value(deepest)) == deepest
    with pytest.raises(
        PayloadError,
        match=f"nested {MAX_EXT_NESTING} levels deep or more cannot be encoded .at most {MAX_EXT_NESTING - 1}",
    ):
        encode_value(nested(MAX_EXT_NESTING))
