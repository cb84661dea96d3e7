"""A client on another host: one ``Client`` object in a process the test drives with JSON lines.

The multi-host tests need the client in its own network namespace, and the very same client
object before and after a control-plane restart, so the client lives in this long-running process
(``python fwsec_agent.py DISCOVERY``, started with ``ip netns exec``; secret and TLS come from the
``FASTWORKER_*`` environment, as for any application). Each request line ``{"id": N, "op": ...}``
is handled concurrently and answered with ``{"id": N, "result": ...}`` or ``{"id": N, "error": ...}``.
``Agent`` is the test's side.

Operations: ``submit`` (tasks as ``[id, name, args]``, each re-sent under its id until accepted or
``give_up`` seconds passed), ``status`` (task ids -> final info, polled until final or ``wait`` seconds passed),
``workers`` (ids listed by the control plane), ``tasks`` (a worker's tasks as the control plane
shows them, ``[id, state]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastworker.client import Client, FastworkerError, TaskInfo, TaskNotFound, TaskState

FINAL = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED})


# ------------------------------------------------------------------------------ the agent process


async def submit(client: Client, tasks: list[list[Any]], give_up: float) -> dict[str, Any]:
    async def one(task_id: str, name: str, args: list[Any]) -> tuple[str, float | str]:
        deadline = time.monotonic() + give_up
        while True:
            try:
                await client.send(name, args, task_id=task_id)
                return task_id, time.time()
            except FastworkerError as exc:
                if time.monotonic() > deadline:
                    return task_id, f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.1)

    answers = await asyncio.gather(*(one(*task) for task in tasks))
    return {
        "accepted": {t: at for t, at in answers if isinstance(at, float)},
        "failed": {t: why for t, why in answers if isinstance(why, str)},
    }


def describe(info: TaskInfo) -> dict[str, Any]:
    return {
        "state": info.state.value,
        "attempts": info.attempts,
        "worker": info.worker,
        "error": f"{info.error.type}: {info.error.message}" if info.error is not None else None,
    }


async def status(client: Client, task_ids: list[str], timeout: float) -> dict[str, Any]:
    """Each task's info once final (None: unknown to the control plane), or as last seen at the deadline."""
    seen: dict[str, TaskInfo | None] = {}
    pending = list(task_ids)
    deadline = time.monotonic() + timeout
    while pending:
        for start in range(0, len(pending), 200):
            chunk = pending[start : start + 200]
            answers = await asyncio.gather(*(client.status(t) for t in chunk), return_exceptions=True)
            for task_id, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, TaskNotFound):
                    seen[task_id] = None
                elif isinstance(answer, TaskInfo):
                    seen[task_id] = answer
                elif not isinstance(answer, FastworkerError | TimeoutError):
                    raise answer
        pending = [t for t in pending if t not in seen or (i := seen[t]) is not None and i.state not in FINAL]
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    return {t: (describe(i) if i is not None else None) for t, i in seen.items()} | {
        t: {"state": "UNANSWERED"} for t in task_ids if t not in seen
    }


async def handle(client: Client, request: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "submit":
        return await submit(client, request["tasks"], request.get("give_up", 60.0))
    if op == "status":
        return await status(client, request["ids"], request.get("wait", 60.0))
    if op == "workers":
        async with asyncio.timeout(3):
            return sorted(str(w["worker_id"]) for w in await client.workers())
    if op == "tasks":
        page = await client.list_tasks(worker=request["worker"], limit=500)
        return [[info.id, info.state.value] for info in page.tasks]
    raise ValueError(f"unknown op {op!r}")


async def serve(discovery: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    running: set[asyncio.Task[None]] = set()

    def answer(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def one(request: dict[str, Any]) -> None:
        try:
            answer({"id": request["id"], "result": await handle(client, request)})
        except Exception as exc:  # reported to the test, which decides
            answer({"id": request["id"], "error": f"{type(exc).__name__}: {exc}"})

    async with Client(discovery, connect_timeout=30, request_timeout=5) as client:
        answer({"id": 0, "result": "ready"})
        while line := await reader.readline():
            task = loop.create_task(one(json.loads(line)))
            running.add(task)
            task.add_done_callback(running.discard)
        for task in list(running):
            task.cancel()


# ---------------------------------------------------------------------------------- the test side


class AgentError(RuntimeError):
    """The agent answered a request with an error, or died."""


class Agent:
    """Drives one agent process (started inside a namespace); ``await agent.call(op, **fields)``."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[0] = self._ready
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(
        cls, namespace: str, discovery: str, env: dict[str, str], log_path: Path, timeout: float = 30
    ) -> Agent:
        argv = ["ip", "netns", "exec", namespace, sys.executable, str(Path(__file__).resolve()), discovery]
        with open(log_path, "ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, env=env
            )
        agent = cls(process, log_path)
        try:
            async with asyncio.timeout(timeout):
                await agent._ready
        except BaseException:
            await agent.stop()
            raise
        return agent

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            future = self._waiting.pop(message["id"], None)
            if future is None or future.done():
                continue
            if "error" in message:
                future.set_exception(AgentError(message["error"]))
            else:
                future.set_result(message["result"])
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(AgentError(f"the agent exited: {self.log_path.read_text()[-3000:]}"))

    async def call(self, op: str, timeout: float = 120, **fields: Any) -> Any:
        """Send one request and wait (bounded) for its answer."""
        assert self.process.stdin is not None
        self._next += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        self.process.stdin.write((json.dumps({"id": self._next, "op": op, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        async with asyncio.timeout(timeout):
            return await future

    async def submit(self, tasks: Sequence[tuple[str, str, list[Any]]], give_up: float = 60) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("submit", timeout=give_up + 30, tasks=tasks, give_up=give_up)
        return result

    async def stop(self) -> None:
        """Close its input (it exits), or kill it by pid after a bounded wait."""
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
