"""Kill the process groups of a pool's children when the process that owns the pool dies, however it dies.

Each :class:`~fastworker.worker.pool.ProcessPool` child leads its own process group, and on Linux
dies with the process that started it (``PR_SET_PDEATHSIG``). What its task started (a
``subprocess``) is in that group but would outlive both: the pool kills the group on a hard time
limit, a cancel and the drain timeout, but a SIGKILLed worker (``kill -9``, the OOM killer, a
supervisor's stop timeout) kills nothing, and the control plane fails or re-runs the task while
its side work goes on.

So each pool starts one tiny reaper process that runs no task code and imports nothing but two
built-in modules (``python -I -S``: no site-packages). Its stdin is a pipe whose write end only
the pool's process holds (non-inheritable, and closed in a child that forks without exec), and
the pool writes a line there per child: ``+PGID`` when it spawns one, ``-PGID`` once it has reaped
the child and killed or given up its group. A group id is a pid that the kernel does not reuse
while the child is unreaped or its group has members, so the reaper never kills a stranger. When
the pipe reaches end of file (the owner died, or closed the pool after it handled its children
itself) the reaper SIGKILLs every group still listed, and exits; it does so too on any error.

It runs in a process group of its own and ignores SIGINT, SIGTERM and SIGHUP: a Ctrl-C in a
terminal or a supervisor's ``kill -TERM -PGID`` drains the worker, and only end of file makes the
reaper act. The pool reaps it; if it dies unexpectedly, a warning is logged and another one is
started, told every group listed (at most one start per :data:`RESTART_INTERVAL`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

__all__ = ["RESTART_INTERVAL", "GroupReaper"]

_log = logging.getLogger(__name__)

#: Least seconds between two starts of a pool's reaper, so that one that cannot run does not spin.
RESTART_INTERVAL = 5.0
#: How long close() waits for the reaper to exit once its pipe is closed.
_EXIT_WAIT = 5.0

#: The reaper's whole program. ``posix`` and ``_signal`` are built in: nothing is read from disk.
_PROGRAM = """\
import posix, _signal
for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
    _signal.signal(signum, _signal.SIG_IGN)
groups = set()
pending = b""
try:
    while chunk := posix.read(0, 4096):
        *lines, pending = (pending + chunk).split(b"\\n")
        for line in lines:
            pgid = int(line[1:])
            if pgid < 2 or line[:1] not in (b"+", b"-"):
                raise ValueError(f"bad line {line!r}")
            (groups.add if line[:1] == b"+" else groups.discard)(pgid)
finally:
    for pgid in groups:
        try:
            posix.killpg(pgid, _signal.SIGKILL)
        except OSError:
            pass
"""

#: Write ends of every live reaper's pipe in this process: a child that forks without exec closes them.
_PIPES: set[int] = set()


def _close_pipes_after_fork() -> None:
    for fd in _PIPES:
        try:
            os.close(fd)
        except OSError:
            pass
    _PIPES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_pipes_after_fork)


class GroupReaper:
    """The reaper process of one pool: lists process groups, and kills them if this process dies.

    Call every method from the thread that runs the pool's event loop. Nothing is sent per task:
    one line per child spawned and one per child reaped.
    """

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe = -1  # the write end of its stdin
        self._exit_fd = -1  # a pidfd that becomes readable when it exits (Linux >= 5.3)
        self._started_at = -RESTART_INTERVAL
        self._restart: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running reaper's pid (None: none runs now)."""
        return self._process.pid if self._process is not None else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the reaper process (a failure is logged, and tried again later)."""
        self._loop = loop
        self._launch()

    def watch(self, pgid: int) -> None:
        """List the process group ``pgid``: killed if this process dies before :meth:`forget`."""
        self._groups.add(pgid)
        self._send(b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        """Unlist ``pgid``: its child is reaped and the pool killed or gave up its group."""
        self._groups.discard(pgid)
        self._send(b"-%d\n" % pgid)

    async def close(self) -> None:
        """Close the reaper's pipe (it kills the groups still listed) and reap it."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        process = self._process
        if process is None:
            return
        self._unwatch_exit()
        self._close_pipe()
        self._process = None
        deadline = asyncio.get_running_loop().time() + _EXIT_WAIT
        while process.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                _log.error(
                    "the pool's reaper process (pid %d) did not exit within %g s; killing it", process.pid, _EXIT_WAIT
                )
                process.kill()
                process.wait()
                break
            await asyncio.sleep(0.005)

    # -- the process ------------------------------------------------------------------------

    def _launch(self) -> None:
        self._restart = None
        loop = self._loop
        if self._closed or loop is None:
            return
        self._started_at = loop.time()
        read_end, write_end = os.pipe()  # both non-inheritable; Popen makes read_end the child's stdin
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _PROGRAM],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                process_group=0,  # a Ctrl-C or a kill -TERM -PGID meant for the worker never reaches it
            )
        except (OSError, ValueError) as exc:
            os.close(write_end)
            _log.warning(
                "cannot start the process that kills what tasks started if this process dies (%s); trying again in %g s",
                exc,
                RESTART_INTERVAL,
            )
            self._launch_later()
            return
        finally:
            os.close(read_end)
        self._pipe = write_end
        _PIPES.add(write_end)
        os.set_blocking(write_end, False)  # a stopped reaper must never block the loop
        try:
            self._exit_fd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: its death is seen at the next write
            self._exit_fd = -1
        else:
            loop.add_reader(self._exit_fd, self._on_exit)
        if self._groups:
            self._send(b"".join(b"+%d\n" % pgid for pgid in self._groups))

    def _launch_later(self) -> None:
        assert self._loop is not None
        if self._closed or self._restart is not None:
            return
        delay = max(0.0, self._started_at + RESTART_INTERVAL - self._loop.time())
        self._restart = self._loop.call_later(delay, self._launch)

    def _send(self, line: bytes) -> None:
        if self._pipe < 0:
            return  # none runs: the next one is told every group listed
        try:
            written = os.write(self._pipe, line)
        except OSError as exc:  # it died (EPIPE), or stopped reading and its pipe is full
            self._replace(f"writing to it failed: {exc}")
            return
        if written < len(line):
            self._replace("its pipe is full")

    def _on_exit(self) -> None:
        process = self._process
        assert process is not None
        self._replace(f"it exited with code {process.wait()}")

    def _replace(self, why: str) -> None:
        """Stop the reaper without letting it kill anything, and start another."""
        process = self._process
        if process is None:
            return
        self._process = None
        self._unwatch_exit()
        process.kill()  # before its pipe closes: it must not take end of file for this process's death
        process.wait()
        self._close_pipe()
        if not self._closed:
            _log.warning("the pool's reaper process (pid %d) stopped: %s; starting another", process.pid, why)
            self._launch_later()

    def _unwatch_exit(self) -> None:
        if self._exit_fd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = -1

    def _close_pipe(self) -> None:
        if self._pipe >= 0:
            _PIPES.discard(self._pipe)
            os.close(self._pipe)
            self._pipe = -1
