"""Django integration: settings, autodiscovery of ``tasks.py``, submitting after commit, eager tests.

::

    # settings.py
    INSTALLED_APPS = [..., "fastworker.client.django"]
    FASTWORKER = {"CONTROL_PLANE": "tcp://127.0.0.1:5550", "SECRET_FILE": "/run/secrets/fastworker"}

    # shop/views.py
    from django.db import transaction
    from fastworker.client.django import delay_on_commit

    def checkout(request):
        with transaction.atomic():
            order = Order.objects.create(...)
            task_id = delay_on_commit(fulfil_order, order.pk)  # submitted once the transaction commits
        ...

The app (:mod:`fastworker.client.django.apps`) checks the ``FASTWORKER`` setting, imports every
installed app's ``tasks`` module, and makes a SyncClient made from the settings the default of sync
typed calls (``add.delay_sync(...)``), and of async ones in async views; see
:mod:`fastworker.client.django.clients`. Daemons that run the project's tasks load
:mod:`fastworker.client.django.setup` first; tests run tasks in-process with ``"EAGER": True`` or
:func:`fastworker.client.django.testing.eager_tasks`.

Needs Django: ``pip install 'fastworker-client[django]'``. ``import fastworker.client`` never imports it.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

try:
    import django  # noqa: F401  # only to fail here, with the way to install it
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastworker.client.django needs Django: pip install 'fastworker-client[django]'") from exc

from fastworker.client.django import clients
from fastworker.client.errors import PayloadError
from fastworker.client.handles import current_sync_client
from fastworker.client.task import BoundTask, TaskFunction
from fastworker.protocol.ids import new_task_id
from fastworker.protocol.payload import encode_arguments

_log = logging.getLogger(__name__)

__all__ = ["AfterCommit", "after_commit", "delay_on_commit"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class AfterCommit:
    """Submits tasks once a transaction of one database commits (made by :func:`after_commit`).

    Attributes:
        using: The database alias whose transaction counts (None: ``default``).
        robust: When the submission fails at commit (the control plane is down), log it with
            Django's ``on_commit`` logging instead of raising from the commit.
    """

    using: str | None = None
    robust: bool = False

    def delay(self, task: TaskFunction[P, R] | BoundTask[P, R], /, *args: P.args, **kwargs: P.kwargs) -> str:
        """Submit task with these arguments once the current transaction commits; returns its id now.

        The id is chosen now (``with_options(task_id=...)`` chooses it yourself), so a view can
        store it in the row it saves or return it at once. Inside ``transaction.atomic()`` the task
        is submitted when the outermost block commits, and never if it rolls back; outside one it
        is submitted at once, as Django's ``on_commit`` does, and the id returned is the one the
        control plane answered. It is submitted by ``delay_sync`` through the sync client current
        here (an explicit ``with_options(client=...)``, a ``with SyncClient()`` block, else the
        settings' client).

        A unique task (``@task(unique=True)``, or ``with_options(unique_key=...)``) whose key a live
        task holds at the commit is answered with that task's id, and nothing new is queued: the id
        returned inside a transaction then names no task, and a warning says so, naming both ids.
        Outside a transaction the id returned is the one answered (the live holder's).

        Raises:
            PayloadError: an argument cannot be encoded (checked now, while the transaction can still roll back).
            TypeError: the task was given an async client with ``with_options(client=...)``.
            ImproperlyConfigured: the ``FASTWORKER`` setting is invalid.
        """
        from django.db import transaction

        bound = task if isinstance(task, BoundTask) else task.with_options()
        client = bound.client if bound.client is not None else current_sync_client()
        if inspect.iscoroutinefunction(getattr(client, "send", None)):
            raise TypeError(
                f"delay_on_commit({bound.task.name!r}, ...): the client given with with_options(client=...) is an "
                f"async {type(client).__name__}; give a SyncClient (nothing was submitted)"
            )
        if client is clients.DEFAULT_SYNC_CLIENT:
            clients.current_settings()  # a bad setting fails now, while the transaction can roll back
        _check_arguments(bound.task.name, args, kwargs)
        task_id = bound.options.task_id if bound.options.task_id is not None else new_task_id()
        submission = _Submission(bound.with_options(client=client), task_id, args, kwargs)
        transaction.on_commit(submission, using=self.using, robust=self.robust)
        submission.returned = True  # (outside a transaction it ran already: the id returned is the answered one)
        return submission.task_id


class _Submission:
    """The commit callback: ``delay_sync`` with the chosen id; its ``__qualname__`` names the task in Django's logs."""

    def __init__(self, bound: BoundTask[Any, Any], task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.bound = bound.with_options(task_id=task_id)
        self.args = args
        self.kwargs = kwargs
        #: The chosen id, then the one the control plane answered (a unique task's live holder's).
        self.task_id = task_id
        #: Whether the caller has the id already (submitted at a later commit, not at the call).
        self.returned = False
        # Django's robust on_commit logs "Error calling {func.__qualname__} in on_commit()".
        self.__qualname__ = f"delay_on_commit of task {bound.task.name!r} (id {task_id})"

    def __call__(self) -> None:
        answered = self.bound.delay_sync(*self.args, **self.kwargs).id
        if answered != self.task_id and self.returned:
            _log.warning(
                "delay_on_commit of task %r: a live task (%s) held its uniqueness key at the commit, so nothing new"
                " was queued and the id returned at the call (%s) names no task",
                self.bound.task.name,
                answered,
                self.task_id,
            )
        self.task_id = answered

    def __repr__(self) -> str:
        return f"<{self.__qualname__}>"


def _check_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse arguments no client could send, before the transaction commits without the task."""
    try:
        encode_arguments(args, kwargs)
    except PayloadError as exc:
        try:
            encode_arguments(args, kwargs, allow_pickle=True)  # a client that allows pickle may still send them
        except PayloadError:
            raise PayloadError(f"delay_on_commit({name!r}, ...): {exc} (nothing will be submitted)") from exc


def after_commit(*, using: str | None = None, robust: bool = False) -> AfterCommit:
    """Submit after the commit of another database's transaction, or log a failed submission instead of raising.

    ``after_commit(using="billing").delay(charge, invoice.pk)``; see :meth:`AfterCommit.delay`.
    """
    return AfterCommit(using=using, robust=robust)


_DEFAULT = AfterCommit()


def delay_on_commit(task: TaskFunction[P, R] | BoundTask[P, R], /, *args: P.args, **kwargs: P.kwargs) -> str:
    """Submit task with these arguments once the current transaction (``default`` database) commits; returns its id now.

    Typed by the task: mypy checks the arguments against its signature. Nothing is submitted if the
    transaction rolls back; outside ``transaction.atomic()`` the task is submitted at once. Options
    go through ``with_options``: ``delay_on_commit(send.with_options(priority="high"), user.pk)``.
    Another database, or logging instead of raising when the submission fails at commit:
    :func:`after_commit`. See :meth:`AfterCommit.delay`.

    Raises:
        PayloadError: an argument cannot be encoded (now, while the transaction can still roll back).
        ImproperlyConfigured: the ``FASTWORKER`` setting is invalid.
    """
    return _DEFAULT.delay(task, *args, **kwargs)
