"""``fastworker-controlplane journal salvage PATH NEW_PATH``: keep what is readable of a corrupt journal.

A control plane refuses to start on a journal with a bad batch in its middle (``JournalCorrupted``)
rather than drop the acknowledged work after it. Salvage copies every readable batch, as written,
into a new file (never over an existing one) and says what it skipped, so that an operator
decides to start on the copy; the original stays as it is, for a closer look.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastworker.controlplane.journal import (
    MAGIC,
    JournalError,
    JournalState,
    ScanInfo,
    create_exclusive,
    find_next_batch,
    fold_batch,
    fsync_directory,
    open_journal_file,
    read_batch,
    write_all,
)


@dataclass
class Skipped:
    """A stretch of the original file that held no readable batch."""

    offset: int
    length: int
    problem: str


@dataclass
class SalvageReport:
    """What ``salvage`` kept and skipped."""

    path: str
    new_path: str
    kept_batches: int = 0
    kept_records: int = 0
    #: Tasks the kept records describe (records about tasks whose acceptance was skipped do not count).
    tasks: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    size: int = 0

    def lines(self) -> list[str]:
        """The report for people."""
        skipped_bytes = sum(s.length for s in self.skipped)
        lines = [
            f"salvaged {self.path} into {self.new_path} ({self.size:,} bytes)",
            f"  kept: {self.kept_batches:,} batches, {self.kept_records:,} records, {self.tasks:,} tasks",
            f"  unreadable stretches skipped: {len(self.skipped):,} ({skipped_bytes:,} bytes)",
        ]
        lines += [f"    offset {s.offset}: {s.length:,} bytes ({s.problem})" for s in self.skipped]
        return lines


def salvage(path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> SalvageReport:
    """Copy every readable batch of the journal ``path`` into the new file ``new_path``; ``path`` is not changed.

    Raises:
        JournalError: ``path`` is not a journal, or ``new_path`` exists or cannot be written (nothing is left there).
        FileNotFoundError: there is no journal at ``path``.
    """
    source, target = Path(path), Path(new_path)
    report = SalvageReport(str(source), str(target))
    state = JournalState()
    with open_journal_file(source) as file:
        fd = file.fileno()
        if os.pread(fd, len(MAGIC), 0) != MAGIC:
            raise JournalError(f"{source} is not a FastWorker journal")
        try:
            out = create_exclusive(target, replace_stale=False)
        except FileExistsError:
            raise JournalError(f"{target} exists; salvage writes a new file and never overwrites one") from None
        except OSError as exc:
            raise JournalError(f"cannot create {target}: {exc}") from None
        try:
            _copy_readable(fd, out, report, state)
            os.fdatasync(out)
            report.size = os.fstat(out).st_size
            fsync_directory(target)
        except BaseException as exc:
            os.close(out)
            with contextlib.suppress(OSError):
                target.unlink()
            if isinstance(exc, OSError):
                raise JournalError(f"cannot write {target}: {exc}") from exc
            raise
        os.close(out)
    report.tasks = len(state.tasks)
    return report


def _copy_readable(fd: int, out: int, report: SalvageReport, state: JournalState) -> None:
    """Walk the batches, resynchronizing after each bad stretch; write the good ones to ``out`` as they are."""
    write_all(out, MAGIC)
    size = os.fstat(fd).st_size
    offset = len(MAGIC)
    while offset < size:
        records, stop, problem = read_batch(fd, offset, size)
        if records is None or not _foldable(records, state):
            following = find_next_batch(fd, offset + 1, size)
            resume = size if following is None else following
            if records is not None:
                problem = "malformed records"
            report.skipped.append(Skipped(offset, resume - offset, problem))
            offset = resume
            continue
        write_all(out, os.pread(fd, stop - offset, offset))
        report.kept_batches += 1
        report.kept_records += len(records)
        offset = stop


def _foldable(records: list[Any], state: JournalState) -> bool:
    """Fold the batch into ``state``; False if a control plane could not read it (``state`` may be partly changed)."""
    try:
        fold_batch(state, ScanInfo(), records)
    except JournalError:
        return False
    return True
