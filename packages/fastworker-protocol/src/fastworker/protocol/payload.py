"""Payload codecs: how task arguments and results become bytes, safely by default.

The default codec is MessagePack with extension types, so that decoding never executes code and
values round-trip with their Python types: JSON types plus bytes, tuples, sets, datetimes, dates,
times, timedeltas, UUIDs, Decimals and integers beyond 64 bits. Pickle exists only as an explicit
opt-in (``allow_pickle=True``) on the side that encodes and on the side that decodes; a side that
opted in still sends MessagePack for every value it gives back exactly (so plain values stay
readable by sides that did not), and pickle for the rest (a ``complex``, an application's class,
an enum, a ``bytearray``, a ``zoneinfo`` datetime, subclasses of the native types).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import pickle
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from fastworker.protocol.errors import PayloadError
from fastworker.protocol.v1.task_pb2 import CODEC_MSGPACK, CODEC_PICKLE, Codec, Payload

#: Default upper bound for one encoded payload (arguments or result), in bytes (8 MiB).
DEFAULT_MAX_PAYLOAD_SIZE = 8 * 1024 * 1024

# Extension type codes. Never renumber: they are part of the wire format.
_EXT_TUPLE = 1
_EXT_DATETIME = 2
_EXT_DATE = 3
_EXT_TIME = 4
_EXT_TIMEDELTA = 5
_EXT_UUID = 6
_EXT_DECIMAL = 7
_EXT_BIGINT = 8
_EXT_SET = 9
_EXT_FROZENSET = 10

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


#: Bound on extension values nested inside one another (tuples in tuples...), the encoded value itself
#: counted: ``MAX_EXT_NESTING - 1`` (31) tuples deep is the most. Each level re-enters
#: msgpack's C unpacker on the C stack, so without a bound a payload of a kilobyte or two could
#: overflow that stack and kill the decoding process before Python's recursion limit applies.
MAX_EXT_NESTING = 32

_nesting = threading.local()


def _pack(value: Any) -> bytes:
    depth = getattr(_nesting, "depth", 0)
    if depth >= MAX_EXT_NESTING:
        raise TypeError(
            f"tuples, sets and frozensets nested {MAX_EXT_NESTING} levels deep or more cannot be encoded"
            f" (at most {MAX_EXT_NESTING - 1})"
        )
    _nesting.depth = depth + 1
    try:
        packed: bytes = msgpack.packb(value, default=_encode_ext, strict_types=True, use_bin_type=True, datetime=False)
        return packed
    finally:
        _nesting.depth = depth


def _encode_ext(value: Any) -> Any:
    """Msgpack's fallback for every value that is not exactly a msgpack-native type."""
    if isinstance(value, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(value)))
    if isinstance(value, _dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, value.isoformat().encode())
    if isinstance(value, _dt.date):
        return msgpack.ExtType(_EXT_DATE, value.isoformat().encode())
    if isinstance(value, _dt.time):
        return msgpack.ExtType(_EXT_TIME, value.isoformat().encode())
    if isinstance(value, _dt.timedelta):
        return msgpack.ExtType(_EXT_TIMEDELTA, _pack([value.days, value.seconds, value.microseconds]))
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, value.bytes)
    if isinstance(value, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(value).encode())
    if isinstance(value, frozenset):
        return msgpack.ExtType(_EXT_FROZENSET, _pack(list(value)))
    if isinstance(value, set):
        return msgpack.ExtType(_EXT_SET, _pack(list(value)))
    if isinstance(value, enum.Enum):
        # Enums travel as their value, as in JSON: the receiver may not have the enum class.
        return value.value
    if isinstance(value, bool):  # a bool subclass cannot exist, but be explicit before int
        return bool(value)
    if isinstance(value, int):
        if type(value) is not int:
            return int(value)
        if _INT64_MIN <= value <= _UINT64_MAX:  # pragma: no cover - msgpack packs these natively
            return value
        return msgpack.ExtType(_EXT_BIGINT, str(value).encode())
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    raise TypeError(f"values of type {type(value).__module__}.{type(value).__qualname__} cannot be encoded")


def _decode_ext(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code == _EXT_DATETIME:
        return _dt.datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return _dt.time.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        days, seconds, micros = _unpack(data)
        return _dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == _EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    if code == _EXT_BIGINT:
        return int(data.decode())
    if code == _EXT_SET:
        return set(_unpack(data))
    if code == _EXT_FROZENSET:
        return frozenset(_unpack(data))
    raise ValueError(f"unknown extension type {code}")


def _unpack(data: bytes) -> Any:
    depth = getattr(_nesting, "depth", 0)
    if depth >= MAX_EXT_NESTING:
        raise ValueError(
            f"extension values nested {MAX_EXT_NESTING} levels deep or more (at most {MAX_EXT_NESTING - 1})"
        )
    _nesting.depth = depth + 1
    try:
        # timestamp=3: msgpack's own timestamp extension decodes to a datetime, a documented type.
        return msgpack.unpackb(data, ext_hook=_decode_ext, raw=False, strict_map_key=False, use_list=True, timestamp=3)
    finally:
        _nesting.depth = depth


#: Types the safe codec gives back as they were, whatever their value.
_EXACT_SCALARS = frozenset(
    {type(None), bool, int, float, str, bytes, _dt.date, _dt.timedelta, uuid.UUID, decimal.Decimal}
)
_CONTAINERS = frozenset({list, tuple, set, frozenset})


def _round_trips(value: Any, depth: int) -> bool:
    """True if the safe codec decodes ``value`` to an equal value of the very same types, nested ones too.

    Not so: subclasses of the native types (enums, namedtuples, OrderedDicts), bytearrays and
    memoryviews (sent as bytes), times in a zone other than a fixed offset (a ``zoneinfo`` zone
    would come back as its offset), and everything the codec refuses.
    """
    kind = type(value)
    if kind in _EXACT_SCALARS:
        return True
    if kind is _dt.datetime or kind is _dt.time:
        return value.tzinfo is None or type(value.tzinfo) is _dt.timezone
    if depth >= MAX_EXT_NESTING:
        return False
    if kind in _CONTAINERS:
        return all(_round_trips(item, depth + 1) for item in value)
    if kind is dict:
        return all(_round_trips(k, depth + 1) and _round_trips(v, depth + 1) for k, v in value.items())
    return False


def encode_value(value: Any, *, allow_pickle: bool = False, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> Payload:
    """Encode one value (a task result) into a Payload.

    Raises:
        PayloadError: the value holds a type the codec cannot encode, or the result is over max_size.
    """
    codec: Codec.ValueType = CODEC_MSGPACK
    if allow_pickle and not _round_trips(value, 0):
        data, codec = _pickle_dumps(value), CODEC_PICKLE
    else:
        # With pickle allowed too, the safe codec whenever it gives the value back as it was: a
        # side that did not opt in reads it (plain values work across a partly opted-in fleet).
        try:
            data = _pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            if allow_pickle:
                data, codec = _pickle_dumps(value), CODEC_PICKLE
            else:
                raise PayloadError(f"cannot encode {type(value).__qualname__}: {exc}") from exc
    if len(data) > max_size:
        raise PayloadError(f"encoded payload of {len(data)} bytes exceeds the limit of {max_size} bytes")
    return Payload(codec=codec, data=data)


def decode_value(payload: Payload, *, allow_pickle: bool = False, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> Any:
    """Decode a Payload made by encode_value.

    Raises:
        PayloadError: the data is corrupt, over max_size, or uses a codec that is not enabled here.
    """
    if len(payload.data) > max_size:
        raise PayloadError(f"payload of {len(payload.data)} bytes exceeds the limit of {max_size} bytes")
    if payload.codec == CODEC_MSGPACK:
        try:
            return _unpack(payload.data)
        except Exception as exc:  # msgpack raises several unrelated types on corrupt input
            raise PayloadError(f"corrupt payload: {exc}") from exc
    if payload.codec == CODEC_PICKLE:
        if not allow_pickle:
            raise PayloadError("pickle payloads are refused: enable pickle explicitly on this side to accept them")
        try:
            return pickle.loads(payload.data)
        except Exception as exc:
            raise PayloadError(f"corrupt pickle payload: {exc}") from exc
    raise PayloadError(f"unknown payload codec {payload.codec}")


def payload_problem(
    payload: Payload,
    *,
    allow_pickle: bool = False,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    what: str = "payload",
    decode: bool = False,
) -> str | None:
    """Why ``decode_value`` here would refuse a payload, or None.

    Judged by its size and codec, and with ``decode`` also by decoding a safe-codec payload (never
    a pickle one: that would run its code). For a process that passes payloads on (the control plane): one it could not decode must not be
    kept and handed to others. ``what`` names the payload in the message.
    """
    size = len(payload.data)
    if size > max_size:
        return f"{what} of {size} bytes exceeds the limit of {max_size} bytes"
    codec = payload.codec
    if codec == CODEC_MSGPACK:
        if decode:
            try:
                _unpack(payload.data)
            except Exception as exc:  # msgpack raises several unrelated types on corrupt input
                return f"{what} is a corrupt payload: {exc or type(exc).__name__}"
        return None
    if codec == CODEC_PICKLE and allow_pickle:
        return None
    if codec == CODEC_PICKLE:
        return (
            f"{what} uses pickle, which is not enabled here (it needs --allow-pickle / allow_pickle=True on every side)"
        )
    return f"{what} uses unknown payload codec {codec}"


def encode_arguments(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    allow_pickle: bool = False,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
) -> Payload:
    """Encode a call's positional and keyword arguments into one Payload.

    Raises:
        PayloadError: an argument cannot be encoded, or the whole is over max_size.
    """
    for key in kwargs:
        if not isinstance(key, str):
            raise PayloadError(f"keyword argument names must be str, not {type(key).__qualname__}")
    try:
        return encode_value([list(args), dict(kwargs)], allow_pickle=allow_pickle, max_size=max_size)
    except PayloadError as exc:
        named = _name_the_argument(args, kwargs, allow_pickle)
        if named is None:
            raise  # (the whole is over the size limit)
        raise PayloadError(named) from exc


def _name_the_argument(args: Sequence[Any], kwargs: Mapping[str, Any], allow_pickle: bool) -> str | None:
    """Why the first argument that cannot be encoded cannot, naming it; None if each alone can be.

    Only on the failure path: the message then says which argument it is, not "cannot encode list".
    """
    named = [(f"positional argument {index}", value) for index, value in enumerate(args, 1)]
    named += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    for name, value in named:
        try:
            encode_value(value, allow_pickle=allow_pickle, max_size=sys.maxsize)
        except PayloadError as exc:
            return f"{name}: {exc}"
    return None


def decode_arguments(
    payload: Payload, *, allow_pickle: bool = False, max_size: int = DEFAULT_MAX_PAYLOAD_SIZE
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode a Payload made by encode_arguments into (args, kwargs).

    Raises:
        PayloadError: the payload is corrupt or not an [args, kwargs] pair.
    """
    value = decode_value(payload, allow_pickle=allow_pickle, max_size=max_size)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], list)
        or not isinstance(value[1], dict)
        or not all(isinstance(k, str) for k in value[1])
    ):
        raise PayloadError("arguments payload is not an [args, kwargs] pair")
    return tuple(value[0]), value[1]


def _pickle_dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise PayloadError(f"cannot pickle {type(value).__qualname__}: {exc}") from exc
