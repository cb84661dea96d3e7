"""A daemon started as a container's PID 1 splits in two: a minimal init, and the daemon under it.

Private, shared by the daemons (see ``SHARED_INTERNALS`` in ``scripts/check_layout.py``). PID 1
inherits every process orphaned in its container: a task's subprocess left running when its pool
child exits, or killed with the child's process group at a hard time limit. Unless PID 1 waits for
them they stay zombies for the container's life, each holding one of its pids. The daemon itself
cannot safely wait for "any child": it runs task code in its own threads (local slots, ``--pool
threads``), and a ``subprocess`` call there would lose its child's exit status to such a wait.

So, as tini or ``docker run --init`` would, the process at PID 1 forks at start: the child runs
the daemon, and PID 1 only reaps (its own children are the daemon and orphans), forwards the
signals an orchestrator or a terminal sends, and exits with the daemon's code (128 + N if signal N
ended it). Nothing else changes for the orchestrator: SIGTERM to PID 1 drains and stops the daemon
as before.

The kernel drops a signal sent to a PID namespace's init that has no handler for it: a SIGTERM
during the daemon's imports (a pod deleted right after it started) would be lost, and the pod
would run until SIGKILL. So the daemons' command modules call :func:`hold_stop_signals_if_pid1`
before any other import: PID 1 keeps what it gets until the fork, then passes it on to the
daemon, which a stop signal ends at once if its own handlers are not installed yet (nothing
started, nothing to drain).
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["FORWARDED_SIGNALS", "become_init_if_pid1", "exit_code", "hold_stop_signals_if_pid1"]

#: What PID 1 passes on to the daemon.
FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


#: Signals PID 1 received before the fork, in order, for the daemon.
_held: list[int] = []


def hold_stop_signals_if_pid1() -> None:
    """If this process is PID 1, keep the signals it gets until :func:`become_init_if_pid1` passes them on."""
    if os.getpid() != 1 or sys.platform == "win32":
        return
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, _hold)


def _hold(signum: int, _frame: object) -> None:
    _held.append(signum)


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + N for a process ended by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def become_init_if_pid1() -> None:
    """If this process is PID 1, fork: return in the child (the daemon); never return in PID 1.

    Call it early, before any thread starts (task modules are imported after it).
    """
    if os.getpid() != 1 or sys.platform == "win32":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # Blocked across the fork: a signal passed on at once must find the daemon's handlers reset.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    daemon = os.fork()
    if daemon == 0:
        # The daemon: on with the start-up, with the signals' usual meaning until it installs its own
        # (what PID 1 held is PID 1's to pass on).
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        # What PID 1 held during the imports is the daemon's: raised here while blocked, it is
        # delivered by the unblock below, before the start-up goes any further.
        for held in _held:
            os.kill(os.getpid(), held)
        _held.clear()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        return
    _serve_as_init(daemon)


def _serve_as_init(daemon: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(daemon, signum)
        except ProcessLookupError:
            pass  # it has just exited; its status is on the way

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    _held.clear()  # received during the imports: the daemon raised them in itself
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    while True:
        try:
            pid, status = os.wait()  # the daemon, or an orphan (resumed after a forwarded signal)
        except ChildProcessError:
            os._exit(1)  # cannot happen while the daemon lives
        if pid == daemon:
            # os._exit: nothing of the daemon's (buffers, atexit handlers) belongs to this process.
            os._exit(exit_code(status))
