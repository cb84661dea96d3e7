"""Import first in a FastWorker daemon that runs a Django project's tasks: sets up Django, then holds every task.

::

    DJANGO_SETTINGS_MODULE=mysite.settings fastworker-controlplane --task-modules fastworker.client.django.setup
    DJANGO_SETTINGS_MODULE=mysite.settings fastworker-worker --task-modules fastworker.client.django.setup

Importing it runs ``django.setup()`` (once), so that task modules can import models and tasks can
use the ORM; the FastWorker app then imports every installed app's ``tasks`` module and
``FASTWORKER["TASK_MODULES"]``. The module holds each task registered in the process as an
attribute, so ``--task-modules fastworker.client.django.setup`` alone loads all of the project's
tasks, and ``from fastworker.client.django.setup import *`` in a module of your own (one that sets
``DJANGO_SETTINGS_MODULE`` first, as ``manage.py`` and ``wsgi.py`` do) makes that module hold them.
Task modules named after it on the command line load as usual. The child processes that run sync
tasks import the same modules, so each sets up Django the same way.

In a process it set Django up in (a daemon, or one of its child processes) it also does what
Django does around each request, around each task run on a thread: before and after the run, the
thread's database connections that are broken or older than ``CONN_MAX_AGE`` are closed (a
database restart or a dropped connection costs one attempt, not every later task on that thread).
And the daemon keeps its own logging: the project's ``LOGGING`` applies, but the root logger keeps
the daemon's handler and level (``--log-level``, ``--log-format``, the task fields) and
FastWorker's loggers stay enabled, whatever ``disable_existing_loggers`` says.
"""

from __future__ import annotations

import logging
import os
import re

import django
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from fastworker.client import hooks
from fastworker.client.handles import event_loop_running
from fastworker.client.task import TaskFunction, default_registry

APP = "fastworker.client.django"


def _set_up() -> bool:
    """Set Django up unless it is; True when it was set up here (this process is a daemon's)."""
    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise ImproperlyConfigured(
            f"{__name__} sets up Django for a FastWorker daemon and needs its settings: set DJANGO_SETTINGS_MODULE, "
            f"e.g. DJANGO_SETTINGS_MODULE=mysite.settings fastworker-controlplane --task-modules {__name__}"
        )
    set_up_here = False
    if not apps.ready:
        if apps.loading:
            raise ImproperlyConfigured(
                f"{__name__} was imported while Django loads its apps (from a models or tasks module?); "
                f"only daemons import it, as their first task module"
            )
        _setup_keeping_the_daemons_logging()
        set_up_here = True
    if not apps.is_installed(APP):
        raise ImproperlyConfigured(
            f'add "{APP}" to INSTALLED_APPS: it imports each app\'s tasks module, which the daemon runs'
        )
    return set_up_here


def _setup_keeping_the_daemons_logging() -> None:
    """``django.setup()``, then the root logger's handlers and level back, and FastWorker's loggers enabled."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    django.setup()
    if handlers:  # the daemon configured its logging before loading task modules: its root stays
        root.handlers[:] = handlers
        root.setLevel(level)
    for name, item in logging.Logger.manager.loggerDict.items():
        if (name == "fastworker" or name.startswith("fastworker.")) and isinstance(item, logging.Logger):
            item.disabled = False


def close_old_connections(*_: object) -> None:
    """Close this thread's connections that are broken or past ``CONN_MAX_AGE`` (a ``before_task``/``after_task`` hook).

    Django's ``close_old_connections``, which it runs around each request, but never inside a
    transaction (a task's caller may hold one) nor on an event loop's thread (an async task's
    hooks run there, where Django's connections are not used).
    """
    if event_loop_running():
        return
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def _hold(tasks: dict[str, TaskFunction[..., object]]) -> list[str]:
    """Make each task an attribute of this module (``shop.fulfil_order`` -> ``task_shop_fulfil_order``); their names."""
    names: list[str] = []
    for name, task in tasks.items():
        base = "task_" + re.sub(r"\W", "_", name)
        attribute, number = base, 1
        while attribute in names:
            number += 1
            attribute = f"{base}_{number}"
        globals()[attribute] = task
        names.append(attribute)
    return names


if _set_up():
    hooks.before_task(close_old_connections)
    hooks.after_task(close_old_connections)

#: Every task registered once Django is set up, by task name.
TASKS: dict[str, TaskFunction[..., object]] = {task.name: task for task in default_registry}

__all__ = _hold(TASKS)
