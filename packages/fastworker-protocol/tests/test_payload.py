"""Round trips and refusals of the payload codec."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import pickle
import uuid
from collections import OrderedDict, namedtuple
from typing import Any

import pytest

from fastworker.protocol import PayloadError, decode_arguments, decode_value, encode_arguments, encode_value
from fastworker.protocol.v1.task_pb2 import CODEC_MSGPACK, CODEC_PICKLE, CODEC_UNSPECIFIED, Payload

ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**40,
    -(10**40),
    1.5,
    -0.0,
    math.inf,
    "",
    "héllo ✓",
    b"",
    b"\x00\xffbytes",
    [],
    [1, "a", None],
    (),
    (1,),
    (1, (2, (3, "x"))),
    {},
    {"a": 1, "b": [1, 2]},
    {1: "int key", (1, 2): "tuple key", None: "none key"},
    {1, 2, 3},
    frozenset({"a", "b"}),
    dt.datetime(2026, 11, 27, 12, 30, 45, 123456),
    dt.datetime(2026, 11, 27, 12, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 27, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.date(1999, 12, 31),
    dt.time(23, 59, 59, 999999),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("3.14159265358979323846264338327950288"),
    decimal.Decimal("-0.00"),
    [{"nested": (dt.date(2020, 1, 1), {uuid.UUID(int=1)})}],
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=lambda v: type(v).__name__)
def test_supported_values_round_trip_with_their_types(value: Any) -> None:
    decoded = decode_value(encode_value(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_tuples_inside_lists_stay_tuples_and_lists_stay_lists() -> None:
    decoded = decode_value(encode_value([(1, 2), [3, 4]]))
    assert decoded == [(1, 2), [3, 4]]
    assert type(decoded[0]) is tuple
    assert type(decoded[1]) is list


def test_nan_round_trips_as_nan() -> None:
    assert math.isnan(decode_value(encode_value(math.nan)))


def test_decimal_keeps_its_exponent() -> None:
    assert str(decode_value(encode_value(decimal.Decimal("1.10")))) == "1.10"


def test_enums_namedtuples_and_dict_subclasses_travel_as_their_plain_values() -> None:
    class Color(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 2

    Point = namedtuple("Point", "x y")
    decoded = decode_value(encode_value([Color.RED, Level.HIGH, Point(1, 2), OrderedDict(a=1)]))
    assert decoded == ["red", 2, (1, 2), {"a": 1}]
    assert [type(v) for v in decoded] == [str, int, tuple, dict]


def test_bytearray_and_memoryview_are_sent_as_bytes() -> None:
    assert decode_value(encode_value([bytearray(b"ab"), memoryview(b"cd")])) == [b"ab", b"cd"]


class _Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [_Opaque(), [1, {"deep": _Opaque()}], print, lambda: 1, object(), complex(1, 2), Ellipsis],
    ids=["object", "nested", "builtin", "lambda", "plain-object", "complex", "ellipsis"],
)
def test_values_the_codec_cannot_encode_raise_payload_error_naming_the_type(value: Any) -> None:
    with pytest.raises(PayloadError, match="cannot encode"):
        encode_value(value)


def test_unencodable_values_are_never_silently_turned_into_strings() -> None:
    with pytest.raises(PayloadError):
        encode_arguments((_Opaque(),), {})


def test_an_argument_that_cannot_be_encoded_is_named_by_its_position_or_keyword() -> None:
    with pytest.raises(PayloadError, match=r"^positional argument 2: cannot encode list: values of type .*_Opaque"):
        encode_arguments((1, [2, _Opaque()]), {"fine": 3})
    with pytest.raises(PayloadError, match=r"^keyword argument 'callback': cannot encode function"):
        encode_arguments((1, 2), {"callback": lambda: 1})
    # Over the size limit, no one argument is to blame: the size is what the message says
    with pytest.raises(PayloadError, match="exceeds the limit"):
        encode_arguments((b"x" * 2048,), {}, max_size=1024)


def test_arguments_round_trip_as_tuple_and_dict() -> None:
    args, kwargs = decode_arguments(encode_arguments([1, "two", (3,)], {"four": 4.0, "when": dt.date(2020, 2, 2)}))
    assert args == (1, "two", (3,))
    assert kwargs == {"four": 4.0, "when": dt.date(2020, 2, 2)}


def test_keyword_names_must_be_strings() -> None:
    with pytest.raises(PayloadError, match="keyword argument names must be str"):
        encode_arguments((), {1: "x"})  # type: ignore[dict-item]


def test_arguments_payload_with_the_wrong_shape_is_refused() -> None:
    for bad in [1, [1], [[], []], [{}, {}], [[], {1: 2}]]:
        with pytest.raises(PayloadError, match="not an \\[args, kwargs\\] pair"):
            decode_arguments(encode_value(bad))


@pytest.mark.parametrize(
    "data", [b"\xc1", b"\x92\x01", b"\xd4\x63\x00", b"\xc7\x05\x02bad!!", b"\x93\x01", b"\x01\x02"]
)
def test_corrupt_msgpack_data_raises_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_value(Payload(codec=CODEC_MSGPACK, data=data))


def test_oversize_values_are_refused_on_encode_and_decode() -> None:
    with pytest.raises(PayloadError, match="exceeds the limit of 100 bytes"):
        encode_value(b"x" * 200, max_size=100)
    payload = encode_value(b"x" * 200)
    with pytest.raises(PayloadError, match="exceeds the limit of 100 bytes"):
        decode_value(payload, max_size=100)


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(PayloadError, match="unknown payload codec"):
        decode_value(Payload(codec=CODEC_UNSPECIFIED, data=b"\x01"))


class _Exploding:
    def __reduce__(self) -> Any:
        raise AssertionError("pickle must not be touched unless enabled")


def test_default_codec_never_uses_pickle() -> None:
    payload = encode_value([1, 2])
    assert payload.codec == CODEC_MSGPACK
    with pytest.raises(PayloadError):
        encode_value(_Exploding())


def test_pickle_payloads_are_refused_unless_enabled_on_the_decoding_side() -> None:
    payload = Payload(codec=CODEC_PICKLE, data=pickle.dumps({"x": 1}))
    with pytest.raises(PayloadError, match="pickle payloads are refused"):
        decode_value(payload)
    with pytest.raises(PayloadError, match="pickle payloads are refused"):
        decode_arguments(payload)
    assert decode_value(payload, allow_pickle=True) == {"x": 1}


def test_pickle_round_trips_arbitrary_objects_when_enabled_on_both_sides() -> None:
    value = {"complex": complex(1, 2)}
    payload = encode_value(value, allow_pickle=True)
    assert payload.codec == CODEC_PICKLE
    assert decode_value(payload, allow_pickle=True) == value


def test_a_side_that_allows_pickle_sends_plain_values_with_the_safe_codec() -> None:
    # A peer that did not opt in must still read them (an int result, plain arguments).
    for value in ROUND_TRIP_VALUES:
        payload = encode_value(value, allow_pickle=True)
        assert payload.codec == CODEC_MSGPACK, value
        decoded = decode_value(payload)
        assert decoded == value or (decoded != decoded and value != value)
        assert type(decoded) is type(value)
    arguments = encode_arguments((1, 2), {"when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)}, allow_pickle=True)
    assert arguments.codec == CODEC_MSGPACK
    assert decode_arguments(arguments) == ((1, 2), {"when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)})


class _Colour(enum.IntEnum):
    RED = 1


_Point = namedtuple("_Point", "x y")  # at module level: pickle finds a class by its name


def _zoned() -> dt.datetime:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        zone = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        zone = dt.timezone(dt.timedelta(hours=1), "CET")  # no tz database: a named fixed zone is lossy too
    return dt.datetime(2026, 7, 1, 12, tzinfo=zone)


@pytest.mark.parametrize(
    "value",
    [
        complex(1, 2),
        bytearray(b"ab"),
        _Colour.RED,
        _Point(1, 2),
        OrderedDict(a=1),
        [1, (2, bytearray(b"nested"))],
        {"at": _zoned()},
    ],
    ids=["complex", "bytearray", "int-enum", "namedtuple", "ordereddict", "nested-bytearray", "zoned-datetime"],
)
def test_a_side_that_allows_pickle_pickles_what_the_safe_codec_would_change(value: Any) -> None:
    payload = encode_value(value, allow_pickle=True)
    assert payload.codec == CODEC_PICKLE
    decoded = decode_value(payload, allow_pickle=True)
    assert decoded == value
    assert type(decoded) is type(value)


def test_payload_problem_judges_size_and_codec_without_decoding() -> None:
    from fastworker.protocol.payload import payload_problem
    from fastworker.protocol.v1.task_pb2 import CODEC_PICKLE, Payload

    assert payload_problem(encode_value([1, "x"])) is None
    pickled = Payload(codec=CODEC_PICKLE, data=b"not even pickle")  # never decoded: that would run code
    assert payload_problem(pickled, allow_pickle=True) is None
    assert "pickle" in (payload_problem(pickled, what="its result") or "")
    assert (payload_problem(pickled, what="its result") or "").startswith("its result uses pickle")
    assert payload_problem(Payload(codec=42, data=b"")) == "payload uses unknown payload codec 42"  # type: ignore[arg-type]
    big = encode_value("x" * 100)
    assert payload_problem(big, max_size=10) == f"payload of {len(big.data)} bytes exceeds the limit of 10 bytes"
