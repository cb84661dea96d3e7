"""Answers a request sent again with the answer to its first attempt: actions that must act once.

A client sends a request again when an attempt gets no answer in time (a control plane stalled
for seconds, or busy): both attempts reach the control plane. A submission is safe, as it names
its task id; but a second ``cancel`` found the task cancelled by the first and answered "not
cancelled", a second ``retry`` found it queued again and was refused, a second ``purge`` found
nothing left. The caller acted on the wrong answer. So the answer to such an action is kept under
its request's identity (correlation id, send time, body), which every attempt shares; an attempt
arriving while the first is still being answered waits for that answer.

Kept for ``KEEP_SECONDS`` and within ``BUDGET_BYTES`` (oldest first out). Within one process:
an attempt that reaches a restarted control plane is answered afresh.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fastworker.protocol.v1.envelope_pb2 import Envelope

Reply = Callable[[bytes], None]

#: Requests that change state and whose answer depends on it (a second run would answer otherwise).
ACTS_ONCE = frozenset({"cancel", "retry", "purge"})
#: Seconds an answer is kept: longer than any client waits for one attempt's answer and sends again.
KEEP_SECONDS = 300.0
#: Bytes of answers kept in all (a workflow's answer lists its steps), each counted with ENTRY_BYTES more.
BUDGET_BYTES = 8 * 1024 * 1024
#: What keeping one answer costs besides its frame (its key, its record): bounds how many a flood of
#: small actions keeps.
ENTRY_BYTES = 256


@dataclass
class _Answer:
    frame: bytes | None = None
    at: float = 0.0
    waiting: list[Reply] = field(default_factory=list)


class ResendGuard:
    """The answers to recent actions, by request identity."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._answers: OrderedDict[tuple[int, float, str, bytes], _Answer] = OrderedDict()
        self._bytes = 0
        #: Attempts answered from a kept answer (for tests and inspection).
        self.replayed = 0

    @staticmethod
    def guards(request: Envelope, kind: str) -> bool:
        """Whether a request of this kind is answered once (a workflow request only when it cancels)."""
        return kind in ACTS_ONCE or (kind == "workflow" and request.workflow.cancel)

    def admit(self, request: Envelope, kind: str, reply: Reply) -> Reply | None:
        """The reply to act with for a first attempt (it keeps the answer), or None: answered from the first.

        Requests without a correlation id are not told apart, and get ``reply`` itself.
        """
        if not request.correlation_id:
            return reply
        self._expire()
        key = (request.correlation_id, request.sent_at, kind, getattr(request, kind).SerializeToString())
        answer = self._answers.get(key)
        if answer is not None:
            self.replayed += 1
            if answer.frame is None:
                answer.waiting.append(reply)
            else:
                reply(answer.frame)
            return None
        answer = self._answers[key] = _Answer(at=self._clock())

        def keep_and_reply(frame: bytes) -> None:
            if answer.frame is None:
                answer.frame, answer.at = frame, self._clock()
                if self._answers.get(key) is answer:  # (not dropped meanwhile)
                    self._bytes += len(frame) + ENTRY_BYTES
                    self._answers.move_to_end(key)
            reply(frame)
            waiting, answer.waiting = answer.waiting, []
            for other in waiting:
                other(frame)
            self._expire()

        return keep_and_reply

    def _expire(self) -> None:
        """Drop answers past KEEP_SECONDS, then the oldest beyond BUDGET_BYTES.

        One still being answered is kept while its attempts may wait for it (KEEP_SECONDS).
        """
        horizon = self._clock() - KEEP_SECONDS
        gone: list[tuple[int, float, str, bytes]] = []
        over = self._bytes - BUDGET_BYTES
        for key, answer in self._answers.items():
            if answer.at >= horizon and over <= 0:
                if answer.frame is not None:
                    break  # kept in the order answered: the rest are newer
                continue
            gone.append(key)
            if answer.frame is not None:
                over -= len(answer.frame) + ENTRY_BYTES
        for key in gone:
            answer = self._answers.pop(key)
            if answer.frame is not None:
                self._bytes -= len(answer.frame) + ENTRY_BYTES
