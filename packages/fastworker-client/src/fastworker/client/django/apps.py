"""The FastWorker Django app: ``INSTALLED_APPS += ["fastworker.client.django"]``."""

from __future__ import annotations

import importlib
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import autodiscover_modules

from fastworker.client.django import clients
from fastworker.client.django.checks import check_settings
from fastworker.client.django.conf import SETTING, parse_settings
from fastworker.client.handles import set_default_client, set_default_sync_client

__all__ = ["FastWorkerConfig"]


class FastWorkerConfig(AppConfig):
    """Checks the ``FASTWORKER`` setting, imports every app's ``tasks`` module, and installs the default clients.

    Nothing connects at startup: the SyncClient is made on the first submission.
    """

    name = "fastworker.client.django"
    label = "fastworker"
    verbose_name = "FastWorker"

    def ready(self) -> None:
        """Register the check, import the task modules, make the settings' clients the defaults."""
        checks.register(check_settings, "fastworker")
        setting_changed.connect(_setting_changed, dispatch_uid="fastworker.client.django")
        # A bad value is reported by the check (and raised by the first submission), not here:
        # `manage.py check` should list every problem rather than stop at the first traceback.
        parsed, _ = parse_settings(getattr(settings, SETTING, None))
        if parsed.autodiscover:
            autodiscover_modules("tasks")  # each installed app's tasks.py; an error inside one is raised
        for module in parsed.task_modules:
            _import_task_module(module)
        # Unless one was set before Django started: that one was chosen on purpose.
        previous_sync = set_default_sync_client(clients.DEFAULT_SYNC_CLIENT)
        if previous_sync is not None and previous_sync is not clients.DEFAULT_SYNC_CLIENT:
            set_default_sync_client(previous_sync)
        previous = set_default_client(clients.DEFAULT_CLIENT)
        if previous is not None and previous is not clients.DEFAULT_CLIENT:
            set_default_client(previous)


def _import_task_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise  # the module exists and failed to import something else: its own traceback says what
        raise ImproperlyConfigured(
            f'{SETTING}["TASK_MODULES"] names {name!r}, which cannot be imported: {exc}'
        ) from exc


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(FASTWORKER=...)``: the next call reads the new value and makes what it describes."""
    if setting == SETTING:
        clients.reset()
