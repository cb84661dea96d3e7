"""The control plane's write-ahead journal (``--journal PATH``): what a crash of the control plane must not lose.

Format. One file: a magic line, then batches. A batch is ``<u32 length><u32 crc32>`` followed by a
MessagePack array of records, each an array whose first item is its kind (``ACCEPT``, ``RUN``,
...; see the ``*_FIELDS`` tuples). A batch is written with one ``write`` and made durable with one
``fdatasync``: a batch cut short by a crash (torn tail) is detected by its length or checksum and
ignored, and it was never acknowledged. Measured on the 2-core development VM before choosing
(100,000 tasks, three records each, a producer thread and a group-committing writer): this format
sustained ~220,000 tasks/s with fdatasync per batch at ~4 µs of CPU per task, SQLite in WAL mode
~35,000 tasks/s at ~22-30 µs per task whether ``synchronous`` was NORMAL or FULL; one fdatasync
costs ~0.3 ms (p50). CPU per task is what matters on a machine whose cores the control plane
already uses.

Group commit. The coordinator calls a hook at every state change (on the loop's thread, or a
slot thread for a local start); a hook encodes its record and appends it to a buffer. One writer
thread takes everything buffered, writes it as one batch, fdatasyncs, and then runs the
callbacks registered with :meth:`Journal.after_durable` on the event loop: replies to clients
wait for those, so an acknowledged submission is on disk. While one batch is being synced the
next accumulates, so the batch grows with the load and throughput holds.

Durability. A reply that reports a change (an accepted submission, single or batched; a cancel;
a retry; a purge; a pause or resume; a wait or submit-and-wait reply carrying a final state) is
sent only once the batch holding that change, and everything journaled before it, was written
and fdatasynced. So what a client was told survives ``kill -9`` of the control plane (written
data is the kernel's) and also a power loss or kernel crash, as far as the disk honours flushes
(renames are followed by an fsync of the directory). Not held back: status, listing and event
replies, which may show a state still in the buffer. A crash loses only changes not yet synced,
the last few milliseconds of them: a task that started in that window is found queued again
(delivery is at-least-once for running tasks anyway), and a task whose result was not synced yet
counts as running at the crash. With ``sync=False`` (not offered on the command line) batches
are written but not synced: what was acknowledged survives ``kill -9``, not a power loss.

Torn tail or corruption. A bad batch (length past the end of the file or implausible, checksum
mismatch) is a torn tail only if no valid batch follows it anywhere: the reader resynchronizes by
checking every place where a payload could start. With one after it, the file is corrupt: opening
raises :class:`JournalCorrupted` naming the offset and writes nothing (nothing is written before the
whole file was read), and ``journal salvage PATH NEW_PATH`` copies what is readable to a new file.

Files. The journal path must not be a symbolic link (it is replaced by renames, which would cut
the link); it and the lock are opened with ``O_NOFOLLOW``, and the snapshot's temporary file
``PATH.compact`` is created with ``O_EXCL | O_NOFOLLOW`` (anything already there is unlinked, never
followed). A disk error while writing a snapshot removes the temporary file and names the
journal; while appending, the batch is cut off and written again until the disk takes it, and
replies that wait for it wait as long (they are never sent for data not on disk).

Replay. On start the journal is read and folded into one state per task. Queued and scheduled
tasks are queued or scheduled again; a task that was running on a subworker stays RUNNING
while that worker may come back and adopt it (``fastworker.controlplane.adoption``); one that was
running in the control plane's own slots goes back to the front of its queue if it has retries
left, else fails with ``ControlPlaneLost`` (so does an orphan nobody adopts); a task dispatched
into a worker's prefetch queue that had not started is re-queued without counting the attempt. Finished tasks within their result TTL (their task's ``result_ttl`` as it
was when they finished, else ``result_ttl``; the newest ``result_cache_size`` of them) are readable
again; periodic schedules resume from their last run (the scheduler's misfire
policy decides about slots missed meanwhile); paused priority levels stay paused, and limits an
operator set at run time (``set_limits``) hold again.

Compaction. At start, whenever the file outgrows ``compact_ratio`` times its last snapshot (and
at least ``compact_min_bytes``), and once it has grown by a quarter and its snapshot is ``compact_stale_after``
seconds old (load that stopped would otherwise leave the file at its peak, idle or not), the live
state is written to a new file that replaces the old one: unfinished tasks, unexpired results, periodic last runs, paused levels, run-time limits. Online, a
compactor thread folds the file up to a batch boundary while the writer keeps appending; the
writer then copies the batches written meanwhile after the snapshot and renames it into place.
So the file stays proportional to the live state. ``fastworker-controlplane journal
inspect|compact PATH`` runs the same code offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import struct
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from fastworker.controlplane.adoption import OrphanRun
from fastworker.controlplane.queue import level_name
from fastworker.controlplane.records import (
    CANCELLED,
    CONTROL_PLANE_LOST,
    FAILURE,
    FINAL_STATES,
    LOCAL_WORKER_ID,
    PENDING,
    RETRYING,
    RUNNING,
    SCHEDULED,
    SUCCESS,
    TaskRecord,
)
from fastworker.protocol.queues import DEFAULT_QUEUE
from fastworker.protocol.v1 import task_pb2

logger = logging.getLogger(__name__)

#: The first bytes of every journal file (format version 1).
MAGIC = b"fastworker-journal 1\n"
_MAGIC_NAME = b"fastworker-journal "
_HEADER = struct.Struct("<II")  # batch length, crc32 of the batch
#: Largest batch a reader accepts; anything larger is a corrupt length field.
MAX_BATCH_BYTES = 1 << 30
#: Records per batch in a snapshot.
SNAPSHOT_BATCH = 1024
#: Default size below which the journal is never compacted online, in bytes.
COMPACT_MIN_BYTES = 32 * 1024 * 1024
#: Default growth over the last snapshot that triggers an online compaction.
COMPACT_RATIO = 4.0
#: Default age of the last snapshot after which a smaller growth (STALE_GROWTH) triggers one, in seconds.
COMPACT_STALE_AFTER = 600.0
#: Growth over the last snapshot that triggers a compaction once that snapshot is stale (a burst rewritten while
#: still live leaves a file well short of doubling it, for ever if idle).
STALE_GROWTH = 1.25
#: Seconds between attempts to write a batch after the disk refused one.
WRITE_RETRY_DELAY = 0.5

# Record kinds (the first item of every record) and their fields, in order.
#: A task was accepted: PENDING, or SCHEDULED until ``eta``.
ACCEPT = 1
ACCEPT_FIELDS = ("kind", "task_id", "spec", "priority", "queued_at", "state", "eta")
#: A task started (or was dispatched to a worker; ``held``: into its prefetch queue, not started);
#: ``incarnation``: the worker process it went to ("" locally; absent from records written before it).
RUN = 2
RUN_FIELDS = ("kind", "task_id", "attempts", "worker", "started_at", "held", "retries", "incarnation")
#: A task waits again: PENDING (taken back from a worker) or RETRYING until ``eta``.
WAIT = 3
WAIT_FIELDS = ("kind", "task_id", "state", "attempts", "eta", "error")
#: A task reached a final state; ``result_ttl``: its task's own result TTL (0: the control plane's),
#: absent from records written before per-task TTLs.
FINISH = 4
FINISH_FIELDS = (
    "kind",
    "task_id",
    "state",
    "attempts",
    "worker",
    "started_at",
    "finished_at",
    "result",
    "error",
    "result_ttl",
)
#: A priority level was paused or resumed.
PAUSE = 5
PAUSE_FIELDS = ("kind", "level", "paused")
#: A periodic task fired the slot at ``slot`` (its schedule resumes after it).
LAST_RUN = 6
LAST_RUN_FIELDS = ("kind", "name", "slot")
#: A whole task (snapshots, and a retried task, which may no longer be in the journal).
TASK = 7
TASK_FIELDS = (
    "kind",
    "task_id",
    "spec",
    "priority",
    "state",
    "attempts",
    "worker",
    "queued_at",
    "started_at",
    "finished_at",
    "eta",
    "result",
    "error",
    "held",
    "retries",
    "result_ttl",
    "incarnation",
)
#: An operator set a task name's limits at run time (``rate`` "" and ``concurrency`` 0: none), or
#: cleared them (``cleared``: its definition applies again).
LIMITS = 8
LIMITS_FIELDS = ("kind", "name", "rate", "concurrency", "cleared")
#: Record kinds by name, for inspection.
KIND_NAMES = {
    ACCEPT: "accept",
    RUN: "run",
    WAIT: "wait",
    FINISH: "finish",
    PAUSE: "pause",
    LAST_RUN: "last_run",
    TASK: "task",
    LIMITS: "limits",
}

#: Resolves a task name to its registered default retries, or None when this process does not know it.
RetriesFor = Callable[[str], "int | None"]


class JournalError(Exception):
    """The journal cannot be used: not a journal, corrupt before its end, in use, or unwritable."""


class JournalCorrupted(JournalError):
    """A bad batch with readable batches after it: not a torn tail, so starting would drop acknowledged work.

    Nothing is written to the file; ``fastworker-controlplane journal salvage`` copies what is readable.
    """

    def __init__(self, path: str, offset: int, next_batch: int, problem: str) -> None:
        super().__init__(
            f"journal {path}: corrupt batch at offset {offset} ({problem}); a readable batch follows at offset "
            f"{next_batch}, so this is not an unfinished last write. The file was left untouched: keep what is "
            f"readable with `fastworker-controlplane journal salvage {path} NEW_PATH` and start on NEW_PATH"
        )
        self.path = path
        self.offset = offset
        self.next_batch = next_batch
        self.problem = problem


# ------------------------------------------------------------------------------------------ the file


def _frame(records: list[tuple[Any, ...]]) -> bytes:
    payload: bytes = msgpack.packb(records, use_bin_type=True)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


#: Where a batch's payload may start: a MessagePack array (of records) whose first item is an array
#: (a record) starting with a positive int (its kind). Zero-width, so that overlapping starts are all found.
_PAYLOAD_START = re.compile(rb"(?=(?:[\x91-\x9f]|\xdc..|\xdd....)[\x91-\x9f][\x01-\x7f])", re.DOTALL)
#: The smallest payload a writer produces (``[[kind]]``).
_MIN_PAYLOAD = 3
_RESYNC_CHUNK = 1 << 20


@dataclass
class ScanInfo:
    """What reading a journal file found besides its records."""

    #: Bytes up to the end of the last whole batch (where appending may continue).
    valid_end: int = 0
    batches: int = 0
    records: int = 0
    #: Bytes after the last whole batch: a write cut short by a crash, ignored.
    torn_bytes: int = 0
    #: Records of kinds this version does not know (a newer version wrote them), skipped.
    unknown_records: int = 0


def read_batch(fd: int, offset: int, size: int) -> tuple[list[Any] | None, int, str]:
    """The batch at ``offset`` of a file ending at ``size``: (its records, its end, "") or (None, 0, what is wrong)."""
    header = os.pread(fd, _HEADER.size, offset)
    if len(header) < _HEADER.size or offset + _HEADER.size > size:
        return None, 0, "incomplete batch header"
    length, crc = _HEADER.unpack(header)
    stop = offset + _HEADER.size + length
    if length > MAX_BATCH_BYTES or stop > size:
        return None, 0, f"its length field ({length} bytes) runs past the end of the file"
    if length < _MIN_PAYLOAD:
        return None, 0, f"implausible length field ({length} bytes)"
    payload = os.pread(fd, length, offset + _HEADER.size)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None, 0, "checksum mismatch"
    try:
        records = msgpack.unpackb(payload, use_list=False, raw=False)
    except Exception:  # msgpack raises several types for undecodable input
        return None, 0, "undecodable payload"
    if not isinstance(records, tuple):
        return None, 0, "payload is not a list of records"
    return list(records), stop, ""


def find_next_batch(fd: int, start: int, size: int) -> int | None:
    """The offset of the first whole, valid batch at or after ``start`` (resynchronization), or None.

    Batches have no marker of their own (format 1), so candidates are the places where a payload
    could start; each is then checked like any batch (length, checksum, decoding).
    """
    position = start + _HEADER.size  # where the first candidate's payload would start
    while position < size:
        data = os.pread(fd, min(_RESYNC_CHUNK + 16, size - position), position)
        for match in _PAYLOAD_START.finditer(data):
            if match.start() >= _RESYNC_CHUNK:
                break  # the next chunk's, found again there
            candidate = position + match.start() - _HEADER.size
            if read_batch(fd, candidate, size)[0] is not None:
                return candidate
        position += _RESYNC_CHUNK
    return None


def read_batches(file: BinaryIO, info: ScanInfo, end: int | None = None) -> Iterator[list[Any]]:
    """Yield each whole batch's records from an open journal file, filling ``info`` as it goes.

    Reads up to ``end`` (a batch boundary) or the end of the file. A bad batch (implausible length,
    checksum mismatch) with no valid batch anywhere after it is a torn write, the real end of the
    file: counted in ``info.torn_bytes`` and ignored. With a valid batch after it, it is corruption.

    Raises:
        JournalCorrupted: a bad batch is followed by a readable one (acknowledged work would be dropped).
        JournalError: the file is not a journal.
    """
    fd = file.fileno()
    magic = os.pread(fd, len(MAGIC), 0)
    if magic != MAGIC:
        if not magic:
            return
        if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
            info.torn_bytes = len(magic)  # a header cut short: nothing was ever written after it
            return
        if magic.startswith(_MAGIC_NAME):
            version = magic[len(_MAGIC_NAME) :].split(b"\n")[0].decode(errors="replace")
            raise JournalError(
                f"unsupported journal format version {version} (this control plane reads version 1): "
                "a journal of a newer FastWorker"
            )
        raise JournalError(f"not a FastWorker journal (it starts with {magic[:24]!r})")
    offset = len(MAGIC)
    info.valid_end = offset
    size = os.fstat(fd).st_size if end is None else end
    while offset < size:
        records, stop, problem = read_batch(fd, offset, size)
        if records is None:
            following = find_next_batch(fd, offset + 1, size)
            if following is None:
                info.torn_bytes = size - offset
                return
            name = file.name if isinstance(file.name, str) else str(fd)
            raise JournalCorrupted(name, offset, following, problem)
        offset = stop
        info.valid_end = offset
        info.batches += 1
        info.records += len(records)
        yield records


def open_journal_file(path: Path) -> BinaryIO:
    """Open a journal for reading without following a symbolic link at ``path``.

    Raises:
        FileNotFoundError: there is no such file.
        JournalError: ``path`` is a symbolic link (the journal is replaced by renames, which would cut the link).
    """
    try:
        return open(str(path), "rb", opener=_open_no_follow)  # the caller closes it
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JournalError(
                f"journal {path} is a symbolic link; give the real path (the journal is replaced by renames)"
            ) from None
        raise


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def create_exclusive(path: Path, *, replace_stale: bool) -> int:
    """Create ``path`` as a new file (owner-only, never through a symbolic link); returns a read-write, append descriptor.

    ``replace_stale``: something already at ``path`` (a temporary file a crash left, or a planted
    link) is unlinked first (never followed), for names only the lock holder uses.

    Raises:
        FileExistsError: ``path`` exists (and is not to be replaced, or came back at once).
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        if not replace_stale:
            raise
    logger.warning("removing %s, left over or planted (it is not followed)", path)
    os.unlink(path)
    return os.open(path, flags, 0o600)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in path's directory durable."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------- the state


class JournalTask:
    """One task as the journal knows it: the fold of its records (serialized spec, result and error)."""

    __slots__ = (
        "attempts",
        "error",
        "eta",
        "finished_at",
        "held",
        "incarnation",
        "priority",
        "queued_at",
        "result",
        "result_ttl",
        "retries",
        "spec",
        "started_at",
        "state",
        "task_id",
        "worker",
    )

    def __init__(self, task_id: str, spec: bytes, priority: int, queued_at: float) -> None:
        self.task_id = task_id
        self.spec = spec
        self.priority = priority
        self.queued_at = queued_at
        self.state = PENDING
        self.attempts = 0
        self.worker = ""
        self.started_at = 0.0
        self.finished_at = 0.0
        self.eta = 0.0
        self.result: bytes | None = None
        self.error: bytes | None = None
        self.held = False
        #: Retries the dispatcher resolved for a remote task (from its worker's definition); -1 unknown.
        self.retries = -1
        #: A finished task's own result TTL in seconds (0: the control plane's ``--result-ttl``).
        self.result_ttl = 0.0
        #: The worker process a running task went to ("" when unknown, or run by the control plane).
        self.incarnation = ""

    def as_record(self) -> tuple[Any, ...]:
        """This task as one TASK record."""
        return (
            TASK,
            self.task_id,
            self.spec,
            self.priority,
            self.state,
            self.attempts,
            self.worker,
            self.queued_at,
            self.started_at,
            self.finished_at,
            self.eta,
            self.result,
            self.error,
            self.held,
            self.retries,
            self.result_ttl,
            self.incarnation,
        )

    @classmethod
    def from_record(cls, record: tuple[Any, ...]) -> JournalTask:
        """The task a TASK record describes."""
        task = cls(record[1], record[2], record[3], record[7])
        (
            task.state,
            task.attempts,
            task.worker,
            _,
            task.started_at,
            task.finished_at,
            task.eta,
            task.result,
            task.error,
            task.held,
            task.retries,
        ) = record[4:15]
        if len(record) > 15:  # written since per-task result TTLs
            task.result_ttl = record[15]
        if len(record) > 16:  # written since adoption knew worker processes
            task.incarnation = record[16]
        return task


@dataclass
class JournalState:
    """Everything a journal says, folded: the latest state of every task, paused levels, periodic last runs."""

    tasks: dict[str, JournalTask] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)
    last_runs: dict[str, float] = field(default_factory=dict)
    #: Run-time limits per task name: (rate text or "", concurrency or 0).
    limits: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Records per kind, as read.
    kinds: Counter[int] = field(default_factory=Counter)
    #: Records about tasks the journal no longer has (dropped by a compaction), skipped.
    orphans: int = 0

    def apply(self, record: tuple[Any, ...]) -> None:
        """Fold one record in."""
        kind = record[0]
        self.kinds[kind] += 1
        if kind == RUN:
            task = self.tasks.get(record[1])
            if task is None:
                self.orphans += 1
                return
            task.state = RUNNING
            task.attempts, task.worker, task.started_at, task.held = record[2:6]
            if record[6] >= 0:
                task.retries = record[6]
            task.incarnation = record[7] if len(record) > 7 else ""
        elif kind == FINISH:
            task = self.tasks.get(record[1])
            if task is None:
                self.orphans += 1
                return
            task.state, task.attempts, task.worker, task.started_at, task.finished_at, task.result, task.error = record[
                2:9
            ]
            task.result_ttl = record[9] if len(record) > 9 else 0.0
            task.held = False
        elif kind == ACCEPT:
            task = JournalTask(record[1], record[2], record[3], record[4])
            task.state, task.eta = record[5], record[6]
            self.tasks[task.task_id] = task
        elif kind == WAIT:
            task = self.tasks.get(record[1])
            if task is None:
                self.orphans += 1
                return
            task.state, task.attempts, task.eta, task.error = record[2:6]
            task.held = False
            if task.state == PENDING:
                task.worker = ""
                task.started_at = 0.0
                task.incarnation = ""
        elif kind == TASK:
            task = JournalTask.from_record(record)
            self.tasks.pop(task.task_id, None)  # a retried task goes to the back, as in the queue
            self.tasks[task.task_id] = task
        elif kind == PAUSE:
            if record[2]:
                self.paused.add(record[1])
            else:
                self.paused.discard(record[1])
        elif kind == LIMITS:
            if record[4]:
                self.limits.pop(record[1], None)
            else:
                self.limits[record[1]] = (record[2], record[3])
        elif kind == LAST_RUN:
            name, slot = record[1], record[2]
            if slot > self.last_runs.get(name, float("-inf")):
                self.last_runs[name] = slot
        else:
            self.kinds[kind] -= 1
            raise _UnknownRecord(kind)

    def prune(self, now: float, result_ttl: float, result_cache_size: int) -> int:
        """Drop finished tasks past their result TTL, and all but the newest ``result_cache_size``; returns how many.

        A task's own TTL (``JournalTask.result_ttl``) beats ``result_ttl``, as in the result cache.
        """
        finished = [t for t in self.tasks.values() if t.state in FINAL_STATES]
        keep = {t.task_id for t in finished if now - t.finished_at <= (t.result_ttl or result_ttl)}
        if len(keep) > result_cache_size:
            newest = sorted((t for t in finished if t.task_id in keep), key=lambda t: t.finished_at)
            keep = {t.task_id for t in newest[-result_cache_size:]}
        dropped = 0
        for task in finished:
            if task.task_id not in keep:
                del self.tasks[task.task_id]
                dropped += 1
        return dropped

    def snapshot_records(self) -> Iterator[tuple[Any, ...]]:
        """Every record a snapshot of this state consists of."""
        for task in self.tasks.values():
            yield task.as_record()
        for level in sorted(self.paused):
            yield (PAUSE, level, True)
        for name, slot in sorted(self.last_runs.items()):
            yield (LAST_RUN, name, slot)
        for name, (rate, concurrency) in sorted(self.limits.items()):
            yield (LIMITS, name, rate, concurrency, False)

    def counts(self) -> dict[str, int]:
        """Tasks per state name (PENDING, RUNNING, ...)."""
        names = Counter(task_pb2.TaskState.Name(t.state) for t in self.tasks.values())
        return {name.removeprefix("TASK_STATE_"): count for name, count in sorted(names.items())}


class _UnknownRecord(Exception):
    def __init__(self, kind: int) -> None:
        super().__init__(kind)
        self.kind = kind


def fold(path: Path, end: int | None = None, *, polite: bool = False) -> tuple[JournalState, ScanInfo]:
    """Read a journal file (up to ``end``) into its state; a missing file is an empty journal.

    ``polite``: let other threads run after every batch (an online compaction must not hold the
    GIL for whole switch intervals while the event loop answers requests).

    Raises:
        JournalCorrupted: a bad batch with readable batches after it.
        JournalError: not a journal, or a symbolic link.
    """
    state = JournalState()
    info = ScanInfo()
    try:
        file = open_journal_file(path)  # closed below; a missing file is an empty journal
    except FileNotFoundError:
        return state, info
    with file:
        for records in read_batches(file, info, end):
            fold_batch(state, info, records)
            if polite:
                time.sleep(0)
    return state, info


def fold_batch(state: JournalState, info: ScanInfo, records: list[Any]) -> None:
    """Fold one batch's records into ``state`` (records of unknown kinds are counted in ``info`` and skipped).

    Raises:
        JournalError: a record is malformed.
    """
    apply = state.apply
    for record in records:
        try:
            apply(record)
        except _UnknownRecord:
            info.unknown_records += 1
        except (IndexError, TypeError, ValueError, KeyError) as exc:
            raise JournalError(f"malformed record {record!r:.60}: {exc}") from None


def write_snapshot(fd: int, records: Iterable[tuple[Any, ...]]) -> int:
    """Write a journal holding ``records`` to the new, empty file ``fd`` and make it durable; returns its size."""
    batch: list[tuple[Any, ...]] = []
    chunks = [MAGIC]
    for record in records:
        batch.append(record)
        if len(batch) >= SNAPSHOT_BATCH:
            chunks.append(_frame(batch))
            batch = []
            if len(chunks) >= 16:
                write_all(fd, b"".join(chunks))
                chunks = []
    if batch:
        chunks.append(_frame(batch))
    write_all(fd, b"".join(chunks))
    os.fdatasync(fd)
    return os.fstat(fd).st_size


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_with_snapshot(path: Path, records: Iterable[tuple[Any, ...]]) -> tuple[int, int]:
    """Write ``records`` as a new journal and rename it onto ``path``; returns (its descriptor, its size).

    The temporary file ``PATH.compact`` is created exclusively (a link planted there is removed,
    never followed) and removed again if anything fails. The caller must hold the journal's lock.

    Raises:
        JournalError: the snapshot could not be written (disk full, I/O error, ...), naming the journal.
    """
    temporary = _temporary_path(path)
    fd = -1
    try:
        fd = create_exclusive(temporary, replace_stale=True)
        size = write_snapshot(fd, records)
        os.replace(temporary, path)
        fsync_directory(path)
    except OSError as exc:
        _discard(temporary, fd)
        raise JournalError(f"journal {path}: cannot write its snapshot ({temporary}): {exc}") from exc
    except BaseException:
        _discard(temporary, fd)
        raise
    return fd, size


def _temporary_path(path: Path) -> Path:
    return path.with_name(path.name + ".compact")


def _discard(temporary: Path, fd: int) -> None:
    """Close and remove a temporary file that will not be used (no stray files after a failure)."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            temporary.unlink()


# -------------------------------------------------------------------------------------------- replay


@dataclass
class Recovered:
    """What a replay hands the coordinator: task records to restore, and the scheduler's and queue's state."""

    #: Every task the journal keeps, in journal order (which is queue order within a level); tasks
    #: that were running when the control plane stopped and go back to their queue come first.
    records: list[TaskRecord] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    #: Periodic task name -> the slot time of its latest run (for ``PeriodicScheduler(last_runs=...)``).
    last_runs: dict[str, float] = field(default_factory=dict)
    #: Run-time limits per task name: (rate text or "", concurrency or 0).
    limits: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Finished tasks' own result TTLs by task id (only those journaled with one), for the result cache.
    result_ttls: dict[str, float] = field(default_factory=dict)
    #: Tasks that were running and were re-queued (retries left, or never started from a prefetch queue).
    requeued: int = 0
    #: Ids of those that had started (a retry of theirs runs next): the restoring process counts these
    #: retries as its own (stats, /metrics), as it counts the retries after a lost worker.
    rerun: list[str] = field(default_factory=list)
    #: Ids of the tasks that were running and failed with ControlPlaneLost (no retries left): the
    #: restoring process counts these failures as its own (stats, /metrics), since no one else can.
    lost: list[str] = field(default_factory=list)
    #: The tasks that were running on a subworker, with the retries they are allowed and the worker
    #: process they went to: still RUNNING, for that worker to adopt when it registers with the
    #: restored process (``fastworker.controlplane.adoption``), else settled.
    orphans: dict[str, OrphanRun] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the log."""
        states = Counter(r.state for r in self.records)
        return (
            f"{states[PENDING] - self.requeued} queued, {states[SCHEDULED] + states[RETRYING]} scheduled, "
            f"{self.requeued} re-queued, {len(self.lost)} failed and {len(self.orphans)} left to their subworkers"
            " of those running at the stop, "
            f"{states[SUCCESS] + states[FAILURE] + states[CANCELLED] - len(self.lost)} results"
        )


def _allowed_retries(task: JournalTask, spec: task_pb2.TaskSpec, retries_for: RetriesFor) -> int:
    if spec.HasField("retries"):
        return spec.retries
    if task.retries >= 0:
        return task.retries
    return retries_for(spec.name) or 0


def recover(state: JournalState, now: float, retries_for: RetriesFor) -> Recovered:
    """Decide what becomes of each task after a stop, in ``state`` too, and build the records to restore.

    A task that was running on a subworker stays RUNNING there (an orphan, for that worker to
    adopt). One that was running in the control plane goes back to the front of its queue if it
    has retries left (as does one that never started, from a worker's prefetch queue: that attempt
    does not count), else it fails with ``ControlPlaneLost``. ``state`` is changed to match, so
    that the snapshot written next holds the decisions.
    """
    recovered = Recovered(paused=set(state.paused), last_runs=dict(state.last_runs), limits=dict(state.limits))
    front: dict[str, JournalTask] = {}
    specs: dict[str, task_pb2.TaskSpec] = {}
    for task in state.tasks.values():
        spec = task_pb2.TaskSpec.FromString(task.spec)
        specs[task.task_id] = spec
        slot = spec.headers.get("periodic")
        if slot:
            with contextlib.suppress(ValueError):
                recovered.last_runs[spec.name] = max(recovered.last_runs.get(spec.name, float("-inf")), float(slot))
        if task.state != RUNNING:
            continue
        started = not task.held
        if task.held:
            task.attempts = max(0, task.attempts - 1)
        elif task.worker and task.worker != LOCAL_WORKER_ID:
            # Its worker may still run it: settled only if that worker does not adopt it.
            recovered.orphans[task.task_id] = OrphanRun(_allowed_retries(task, spec, retries_for), task.incarnation)
            continue
        elif task.attempts >= 1 + _allowed_retries(task, spec, retries_for):
            where = "in the control plane" if task.worker == LOCAL_WORKER_ID else f"on worker {task.worker or '?'}"
            task.state = FAILURE
            task.finished_at = now
            task.error = task_pb2.TaskError(
                type=CONTROL_PLANE_LOST,
                message=f"the control plane stopped while the task was running {where} "
                f"(attempt {task.attempts}); it has no retries left",
            ).SerializeToString()
            recovered.lost.append(task.task_id)
            continue
        task.state = PENDING
        task.worker = ""
        task.started_at = 0.0
        task.held = False
        front[task.task_id] = task
        recovered.requeued += 1
        if started:
            recovered.rerun.append(task.task_id)
    if front:
        rest = {task_id: task for task_id, task in state.tasks.items() if task_id not in front}
        state.tasks = front | rest
    for task in state.tasks.values():
        spec = specs[task.task_id]
        queue = sys.intern(spec.queue) if spec.queue else DEFAULT_QUEUE
        record = TaskRecord(spec, task.priority, task.queued_at, encoded=task.spec, queue=queue)
        record.state = task.state
        record.attempts = task.attempts
        record.worker = task.worker
        record.started_at = task.started_at
        record.finished_at = task.finished_at
        record.eta = task.eta
        if task.result is not None:
            record.result = task_pb2.Payload.FromString(task.result)
        if task.error is not None:
            record.error = task_pb2.TaskError.FromString(task.error)
        if task.result_ttl and task.state in FINAL_STATES:
            recovered.result_ttls[task.task_id] = task.result_ttl
        recovered.records.append(record)
    return recovered


# ----------------------------------------------------------------------------------- the live journal


class Journal:
    """An open journal: replays it when opened, then records every state change with group commit.

    Opening takes an exclusive lock (``PATH.lock``), reads and folds the file, decides what
    becomes of the tasks that were running (:func:`recover`; the result is :attr:`recovered`),
    and writes the live state as a fresh snapshot. :meth:`start` starts the writer thread; the
    hooks may be called before that (they buffer). Hooks are cheap and never block on the disk;
    :meth:`after_durable` is how a reply waits for the disk.

    Args:
        path: The journal file (created if missing; its directory must exist).
        result_ttl: Seconds a finished task is kept unless its task has its own (as the result cache).
        result_cache_size: Most finished tasks kept (the newest).
        retries_for: A task name's registered default retries, or None if unknown here.
        sync: fdatasync every batch (power-loss safe); False only writes (survives kill -9, not a power loss).
        compact_min_bytes: No online compaction below this size.
        compact_ratio: Compact online when the file outgrows this many times its last snapshot.
        compact_stale_after: Compact online, even idle, once the file has grown by a quarter and its last snapshot
            is this many seconds old.
        clock: Current POSIX time.

    Raises:
        JournalError: the file is not a journal, is corrupt before its end, or is in use by another process.
        OSError: the file or its directory cannot be read or written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        result_ttl: float = 3600.0,
        result_cache_size: int = 10_000,
        retries_for: RetriesFor = lambda name: None,
        sync: bool = True,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        compact_ratio: float = COMPACT_RATIO,
        compact_stale_after: float = COMPACT_STALE_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.result_ttl = result_ttl
        self.result_cache_size = result_cache_size
        self.sync = sync
        self.compact_min_bytes = compact_min_bytes
        self.compact_ratio = compact_ratio
        self.compact_stale_after = compact_stale_after
        self.clock = clock
        self._lock_fd = _lock(self.path)
        try:
            started = time.monotonic()
            state, info = fold(self.path)
            if info.torn_bytes:
                logger.warning("journal %s: ignored %d bytes of an unfinished last write", self.path, info.torn_bytes)
            if info.unknown_records:
                logger.warning("journal %s: skipped %d records of unknown kinds", self.path, info.unknown_records)
            now = clock()
            state.prune(now, result_ttl, result_cache_size)
            self.recovered = recover(state, now, retries_for)
            # Only now, with the whole file read and found sound, is anything written.
            self._fd, self._base = replace_with_snapshot(self.path, state.snapshot_records())
            self._size = self._base
            self._snapshot_at = time.monotonic()
            if info.batches:
                logger.info(
                    "journal %s replayed in %.2f s (%d records): %s",
                    self.path,
                    time.monotonic() - started,
                    info.records,
                    self.recovered.summary(),
                )
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        #: Notified (under ``_mutex``) as batches become durable, for threads in :meth:`wait_durable`.
        self._durable_now = threading.Condition(self._mutex)
        self._durable_waiters = 0
        self._buffer: list[tuple[Any, ...]] = []
        self._appended = 0  # records appended so far
        self._written = 0  # records written to the file so far (survive a crash of this process)
        self._durable = 0  # records on disk so far (flushed: survive a power loss)
        #: Serializes taking the buffer and writing it (the writer's batches and the slots' write-through),
        #: so that records reach the file in the order they were appended; and the file's replacement.
        self._file_lock = threading.Lock()
        self._callbacks: deque[tuple[int, Callable[[], None]]] = deque()
        self._idle = False
        self._closing = False
        self._writer_done = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._compactor: threading.Thread | None = None
        self._compacted: tuple[Path, int, int, int] | None = None
        self._failed_write = False
        #: A failed write may have left part of a batch after ``_size``: cut it off before writing again.
        self._cut_back = False
        #: Counters for inspection and tests.
        self.batches = 0
        self.compactions = 0

    # --------------------------------------------------------------------------------- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the writer thread; durability callbacks run on ``loop``."""
        self._loop = loop
        self._writer = threading.Thread(target=self._write_loop, name="fastworker-journal", daemon=True)
        self._writer.start()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait (without blocking the loop) until everything appended so far is durable.

        Replies held for the disk before this call go out first. Returns False if that took longer
        than timeout (a full or failing disk, or a writer that died).
        """
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done() -> None:
            if not durable.done():
                durable.set_result(None)

        self.after_durable(done)
        try:
            async with asyncio.timeout(timeout):
                await durable
        except TimeoutError:
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered, stop the writer and any compaction, release the file and its lock."""
        with self._mutex:
            self._closing = True
            self._wake.notify()
        if self._writer is not None:
            self._writer.join(timeout)
        else:
            self._write_loop()  # never started: write what was buffered on this thread
        compactor = self._compactor
        if compactor is not None:
            compactor.join(timeout)
        self._discard_compaction()
        self._run_callbacks()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    @property
    def size(self) -> int:
        """The journal file's size in bytes (what has been written to it)."""
        return self._size

    # ------------------------------------------------------------------------------------- hooks

    def _append(self, record: tuple[Any, ...]) -> None:
        with self._mutex:
            self._buffer.append(record)
            self._appended += 1
            if self._idle:
                self._idle = False
                self._wake.notify()

    def accepted(self, record: TaskRecord) -> None:
        """A task was accepted (PENDING, or SCHEDULED until its eta)."""
        self._append(
            (
                ACCEPT,
                record.task_id,
                record.encoded_spec(),
                record.priority,
                record.queued_at,
                record.state,
                record.eta,
            )
        )

    def running(self, record: TaskRecord, retries: int = -1, incarnation: str = "") -> None:
        """A task started (or went to a worker's prefetch queue: ``record.held``); any thread.

        ``retries``: the re-runs it is allowed, when the caller resolved them from a worker's definition.
        ``incarnation``: the worker process it went to, so that a replay knows whether the worker that
        comes back is the one that got it.
        """
        self._append(
            (RUN, record.task_id, record.attempts, record.worker, record.started_at, record.held, retries, incarnation)
        )

    def waiting(self, record: TaskRecord) -> None:
        """A task waits again: PENDING (taken back from a worker) or RETRYING until its eta."""
        error = record.error.SerializeToString() if record.error is not None else None
        self._append((WAIT, record.task_id, record.state, record.attempts, record.eta, error))

    def finished(self, record: TaskRecord, result_ttl: float = 0.0) -> None:
        """A task reached its final state (result or error set); ``result_ttl``: its task's own (0: none)."""
        result = record.result.SerializeToString() if record.result is not None else None
        error = record.error.SerializeToString() if record.error is not None else None
        self._append(
            (
                FINISH,
                record.task_id,
                record.state,
                record.attempts,
                record.worker,
                record.started_at,
                record.finished_at,
                result,
                error,
                result_ttl,
            )
        )

    def retried(self, record: TaskRecord) -> None:
        """A finished task is queued again under its id (written whole: the journal may have dropped it)."""
        task = JournalTask(record.task_id, record.encoded_spec(), record.priority, record.queued_at)
        task.attempts = record.attempts
        self._append(task.as_record())

    def paused(self, level: int, paused: bool) -> None:
        """A priority level was paused or resumed."""
        self._append((PAUSE, level, paused))

    def limits(self, name: str, rate: str, concurrency: int, cleared: bool) -> None:
        """An operator set a task name's limits (``rate`` "" and ``concurrency`` 0: none), or cleared them."""
        self._append((LIMITS, name, rate, concurrency, cleared))

    def periodic_fired(self, name: str, slot: float) -> None:
        """A periodic task's run for ``slot`` was queued."""
        self._append((LAST_RUN, name, slot))

    def after_durable(self, callback: Callable[[], None]) -> None:
        """Call back (on the loop's thread) once every record appended so far is on disk.

        Called at once when nothing is pending. For replies that must not outrun the journal.
        """
        with self._mutex:
            target = self._appended
            if self._durable >= target and not self._callbacks:
                now = True
            else:
                now = False
                self._callbacks.append((target, callback))
                self._notify()
        if now:
            callback()

    def when_written(self, reply: Callable[[], None]) -> None:
        """Send ``reply`` (on the loop's thread) once every record appended so far survives a crash of this process.

        For replies to subworkers, which act on them: a worker starts what it is given only once
        the start is recorded, and forgets an outcome once it is acknowledged, so the outcome must be
        recorded first (else a crash in between loses a finished run, which its worker no longer
        holds). Sent at once when everything is written, or can be written now on this thread
        (:meth:`write_through`); else once it is on disk.
        """
        if self._written >= self._appended or self.write_through(block=False):
            reply()
        else:
            self.after_durable(reply)

    def wait_durable(self, timeout: float | None = None) -> bool:
        """Block this thread (never the loop's) until every record appended so far is on disk.

        How a task starts only once its start is recorded: a crash can then never replay as
        queued a task that already ran. False if that took longer than ``timeout`` or the journal
        closed first (a full or failing disk holds it meanwhile, as it holds replies).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._mutex:
            target = self._appended
            if self._durable >= target:
                return True
            self._durable_waiters += 1
            self._notify()
            try:
                while self._durable < target:
                    if self._closing and self._writer_done:
                        return False
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._durable_now.wait(0.5 if left is None else min(left, 0.5))
                return True
            finally:
                self._durable_waiters -= 1

    def _notify(self) -> None:
        if self._idle:
            self._idle = False
            self._wake.notify()

    def _run_callbacks(self) -> None:
        durable = self._durable
        callbacks = self._callbacks
        while callbacks and callbacks[0][0] <= durable:
            _, callback = callbacks.popleft()
            try:
                callback()
            except Exception:
                logger.exception("journal durability callback failed")

    # ------------------------------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        try:
            self._write_batches()
        finally:
            with self._mutex:
                self._writer_done = True
                self._durable_now.notify_all()

    def _write_batches(self) -> None:
        while True:
            with self._mutex:
                while (
                    not self._buffer
                    and (self._written == self._durable or not self._callbacks)
                    and not self._closing
                    and self._compacted is None
                ):
                    self._idle = True
                    stale_in = self._stale_in()
                    if stale_in is not None and stale_in <= 0:
                        break  # nothing to write: on to _maybe_compact
                    self._wake.wait(stale_in)
                self._idle = False
                closing = self._closing
                compacted, self._compacted = self._compacted, None
            with self._file_lock:
                if compacted is not None:
                    self._install(*compacted)
                with self._mutex:
                    batch, self._buffer = self._buffer, []
                    target = self._appended
                if batch:
                    if not self._write(_frame(batch)):
                        return  # closing with the disk refusing: what was not written is never acknowledged
                    self.batches += 1
                with self._mutex:
                    self._written = target
            # Outside the file lock: slots write the starts of their tasks meanwhile (write_through).
            # Only this thread replaces the file (_install), so the descriptor stays the one written to.
            if self.sync and target > self._durable and not self._sync():
                return
            with self._mutex:
                self._durable = target
                if self._durable_waiters:
                    self._durable_now.notify_all()
            if self._callbacks and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    self._loop.call_soon_threadsafe(self._run_callbacks)
            if closing and not batch:
                return
            self._maybe_compact()

    def write_through(self, *, block: bool = True) -> bool:
        """Write every record appended so far to the file now, on this thread; False if that cannot be done now.

        How a task starts only once its start is recorded, without waiting for the disk's flush:
        written, it survives a crash of this process (the kernel has it), so the replay never
        takes a task that ran for one still queued; the writer thread makes it durable for the
        replies that wait for that. False while the disk refuses writes (the writer retries them):
        then wait with :meth:`wait_durable`, or, on the loop, :meth:`after_durable`. ``block=False``
        (the loop): also False when the writer is writing at this moment, rather than wait for it.
        """
        if self._failed_write:
            return False  # the writer holds the file while it retries: do not queue up behind it
        wanted = self._appended  # this caller's records: another thread may write them meanwhile
        if not self._file_lock.acquire(blocking=block):
            return False
        try:
            with self._mutex:
                if self._written >= wanted:
                    return True
                if self._failed_write or self._closing:
                    return False
                batch, self._buffer = self._buffer, []
                target = self._appended
            data = _frame(batch)
            try:
                self._write_once(data)
            except OSError:
                with self._mutex:
                    self._buffer[:0] = batch  # the writer writes them, in order, when the disk takes them
                    self._notify()
                return False
            self._size += len(data)
            self.batches += 1
            with self._mutex:
                self._written = target  # made durable by the writer's next flush (not woken for it: one per batch)
                if self._callbacks or self._durable_waiters:
                    # ... unless a reply or a thread waits for the disk: the writer may have looked while
                    # this batch was being written (an empty buffer, nothing written yet) and gone to
                    # sleep; nothing else would wake it until the next record (a reply held for seconds).
                    self._notify()
        finally:
            self._file_lock.release()
        return True

    def ensure_written(self) -> None:
        """:meth:`write_through`, else wait until the writer got everything onto the disk (a thread, never the loop)."""
        if not self.write_through():
            self.wait_durable()

    def _write_once(self, data: bytes) -> None:
        """Append one batch (under the file lock); a part written before a failure is cut off before the next write."""
        if self._cut_back:
            os.ftruncate(self._fd, self._size)  # never append after a part of a batch
            self._cut_back = False
        self._cut_back = True  # until the whole batch is written
        written = 0
        while written < len(data):
            # A short write (a full disk) is written on: the next write raises the cause (ENOSPC).
            step = os.write(self._fd, data[written:])
            if step == 0:
                raise OSError(errno.EIO, f"write made no progress ({written} of {len(data)} bytes)")
            written += step
        self._cut_back = False

    def _write(self, data: bytes) -> bool:
        """Append one batch (under the file lock), retrying while the disk refuses; False if closing meanwhile.

        Replies waiting for the batch wait as long (they are never sent for data not on disk); the
        error is logged with the journal's path once per outage.
        """
        while True:
            try:
                self._write_once(data)
            except OSError as exc:
                self._cut_back = True
                self._write_failed(exc)
                if self._closing:
                    logger.error(
                        "journal %s: closing with %d bytes unwritten (never acknowledged)", self.path, len(data)
                    )
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, self._size)
                    return False
                time.sleep(WRITE_RETRY_DELAY)
                continue
            self._write_recovered()
            self._size += len(data)
            return True

    def _sync(self) -> bool:
        """Make what was written durable, retrying while the disk refuses; False if closing meanwhile."""
        while True:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._write_failed(exc)
                if self._closing:
                    logger.error("journal %s: closing with writes not made durable (never acknowledged)", self.path)
                    return False
                time.sleep(WRITE_RETRY_DELAY)
                continue
            self._write_recovered()
            return True

    def _write_failed(self, exc: OSError) -> None:
        if not self._failed_write:
            logger.error(
                "journal %s: write failed (%s); replies that wait for the disk are held until it succeeds",
                self.path,
                exc,
            )
        self._failed_write = True

    def _write_recovered(self) -> None:
        if self._failed_write:
            logger.warning("journal %s: writing again", self.path)
            self._failed_write = False

    # -------------------------------------------------------------------------------- compaction

    def _stale_in(self) -> float | None:
        """Seconds until a compaction is due by age alone (<= 0: now); None when the file is not large enough."""
        if self._compactor is not None or self._size < max(self.compact_min_bytes, STALE_GROWTH * self._base):
            return None
        return self._snapshot_at + self.compact_stale_after - time.monotonic()

    def _maybe_compact(self) -> None:
        if self._compactor is not None or self._closing:
            return
        if self._size < max(self.compact_min_bytes, self.compact_ratio * self._base):
            stale_in = self._stale_in()
            if stale_in is None or stale_in > 0:
                return
        self._compactor = threading.Thread(
            target=self._compact, args=(self._size,), name="fastworker-journal-compact", daemon=True
        )
        self._compactor.start()

    def _compact(self, end: int) -> None:
        """Fold the file up to ``end`` and write its live state to a temporary file (compactor thread)."""
        temporary = _temporary_path(self.path)
        fd = -1
        try:
            state, _ = fold(self.path, end, polite=True)
            state.prune(self.clock(), self.result_ttl, self.result_cache_size)
            fd = create_exclusive(temporary, replace_stale=True)
            size = write_snapshot(fd, state.snapshot_records())
        except Exception as exc:
            logger.error("journal %s: compaction failed (%s); will try again later", self.path, exc)
            _discard(temporary, fd)
            self._base = max(self._base, end)  # do not retry at once
            self._compactor = None
            return
        with self._mutex:
            self._compacted = (temporary, fd, end, size)
            self._notify()

    def _install(self, temporary: Path, fd: int, end: int, snapshot_size: int) -> None:
        """Append what was written after ``end`` to the snapshot and put it in place (writer thread)."""
        try:
            tail = os.pread(self._fd, self._size - end, end)
            if len(tail) != self._size - end:
                raise OSError(errno.EIO, f"short read of the journal's tail ({len(tail)} of {self._size - end} bytes)")
            write_all(fd, tail)
            os.fdatasync(fd)
            os.replace(temporary, self.path)
            fsync_directory(self.path)
        except OSError as exc:
            logger.error("journal %s: could not install a compaction: %s", self.path, exc)
            _discard(temporary, fd)
            self._base = max(self._base, self._size)
        else:
            before = self._size
            os.close(self._fd)
            self._fd = fd
            self._size = snapshot_size + len(tail)
            self._base = self._size
            self._snapshot_at = time.monotonic()
            self.compactions += 1
            logger.info("journal %s compacted: %d -> %d bytes", self.path, before, self._size)
        self._compactor = None

    def _discard_compaction(self) -> None:
        compacted, self._compacted = self._compacted, None
        if compacted is not None:
            _discard(compacted[0], compacted[1])


def _lock(path: Path) -> int:
    """Take the journal's exclusive lock (``PATH.lock``) or raise JournalError; returns the lock's descriptor.

    The lock is by name; a hard link is another name for the same file, so a journal with more
    than one link is refused (a second control plane could open it under its other name).
    """
    lock_path = path.with_name(path.name + ".lock")
    if not path.parent.is_dir():
        raise JournalError(f"journal {path}: its directory {path.parent} does not exist (or is not a directory)")
    with contextlib.suppress(FileNotFoundError):
        found = os.lstat(path)
        if stat.S_ISDIR(found.st_mode):  # (before the link count: a directory has 2 links or more)
            raise JournalError(
                f"journal {path} is a directory: give the path of a file in it (for example {path}/cp.journal)"
            )
        links = found.st_nlink
        if links > 1:
            raise JournalError(
                f"journal {path} has {links} hard links: another name for it could run a second control plane "
                "on the same tasks; keep one name (remove the other links)"
            )
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JournalError(f"journal {path}: its lock file {lock_path} is a symbolic link; remove it") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"journal {path} is in use by another process (locked: {lock_path})") from None
    return fd


# -------------------------------------------------------------------------------- offline commands


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe a journal file without changing it: size, records by kind, tasks by state, what compaction keeps.

    Raises:
        JournalError: not a journal, or corrupt before its end.
        FileNotFoundError: there is no such file.
    """
    journal = Path(path)
    size = journal.stat().st_size
    state, info = fold(journal)
    live_records = sum(1 for _ in state.snapshot_records())
    return {
        "path": str(journal),
        "size_bytes": size,
        "format": 1,
        "batches": info.batches,
        "records": info.records,
        "records_by_kind": {KIND_NAMES.get(k, str(k)): n for k, n in sorted(state.kinds.items())},
        "torn_bytes": info.torn_bytes,
        "unknown_records": info.unknown_records,
        "orphan_records": state.orphans,
        "tasks": len(state.tasks),
        "tasks_by_state": state.counts(),
        "paused": sorted(level_name(level) for level in state.paused),
        "limits": {
            name: {"rate_limit": rate or None, "max_concurrency": concurrency or None}
            for name, (rate, concurrency) in sorted(state.limits.items())
        },
        "periodic_last_runs": dict(sorted(state.last_runs.items())),
        "snapshot_records": live_records,
        "in_use": _in_use(journal),
    }


def compact(
    path: str | os.PathLike[str], *, result_ttl: float = 3600.0, result_cache_size: int = 10_000
) -> tuple[int, int]:
    """Rewrite a journal that no control plane is using as its live state; returns (bytes before, after).

    Unlike a control plane's start, nothing is decided about running tasks: they stay running.

    Raises:
        JournalError: not a journal, corrupt before its end, or in use.
        FileNotFoundError: there is no such file.
    """
    journal = Path(path)
    before = journal.stat().st_size
    lock_fd = _lock(journal)
    try:
        state, _ = fold(journal)
        state.prune(time.time(), result_ttl, result_cache_size)
        fd, after = replace_with_snapshot(journal, state.snapshot_records())
        os.close(fd)
    finally:
        os.close(lock_fd)
    return before, after


def _in_use(path: Path) -> bool:
    """True while a process holds the journal's lock (checked without creating the lock file)."""
    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
