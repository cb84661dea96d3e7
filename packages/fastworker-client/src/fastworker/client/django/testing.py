"""Eager mode for a Django project's tests: every typed call runs its task in the test's process, at once.

::

    from fastworker.client.django.testing import eager_tasks

    def test_checkout(client, django_capture_on_commit_callbacks):
        with eager_tasks() as eager, django_capture_on_commit_callbacks(execute=True):
            client.post("/orders/", {"item": "book"})
        assert [info.name for info in eager.history] == ["shop.fulfil_order"]

Needs fastworker-controlplane (its ``EagerClient``) in the test environment. ``"EAGER": True`` in
the ``FASTWORKER`` setting does the same for a whole test settings module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from fastworker.client.django import clients
from fastworker.client.django.clients import EagerBackend
from fastworker.client.handles import use_client, use_sync_client

__all__ = ["EagerBackend", "eager_client", "eager_tasks"]


@contextlib.contextmanager
def eager_tasks(*, task_modules: Sequence[str] = ()) -> Iterator[EagerBackend]:
    """Run every task in-process while the block lasts, through a fresh ``EagerClient``; yields it (``.history``).

    Typed calls from sync and async code, ``delay_on_commit`` and the task handles all use it,
    in every thread (a view run by Django's test client, a commit callback) while the block lasts;
    in this thread it also wins over a ``with SyncClient()`` block around it. Also a decorator.

    Args:
        task_modules: Run only these modules' tasks (as a worker would); default: every imported task.

    Raises:
        ImproperlyConfigured: fastworker-controlplane is not installed.
    """
    eager = clients.push_eager(task_modules)
    try:
        with use_sync_client(eager.sync), use_client(eager.async_):
            yield eager.client
    finally:
        clients.pop_eager(eager)


def eager_client() -> EagerBackend | None:
    """The ``EagerClient`` typed calls use now (an :func:`eager_tasks` block's, or ``"EAGER": True``'s), else None.

    With ``"EAGER": True`` one EagerClient serves until the setting changes; read its ``history``.
    """
    return clients.eager_client()
