"""Django system checks for the ``FASTWORKER`` setting (``manage.py check``, and before runserver, migrate, test).

Every problem is reported at once, each naming its key; ids ``fastworker.E001`` (a key or value),
``fastworker.E002`` (a secret or TLS file that cannot be used) and ``fastworker.E003`` (eager mode
without fastworker-controlplane).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error

from fastworker.client.django.conf import SETTING, parse_settings

__all__ = ["check_settings"]

_DOCS = "see docs/django.md, Settings"


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Check the ``FASTWORKER`` setting: its keys and values, the files it names, eager mode's package."""
    parsed, problems = parse_settings(getattr(settings, SETTING, None))
    errors: list[CheckMessage] = [Error(problem, hint=_DOCS, id="fastworker.E001") for problem in problems]
    if problems:
        return errors
    try:
        parsed.client_options()
    except ValueError as exc:
        errors.append(Error(str(exc), id="fastworker.E002"))
    if parsed.eager and importlib.util.find_spec("fastworker.controlplane") is None:
        errors.append(
            Error(
                f'{SETTING}["EAGER"] runs tasks in this process with the EagerClient of fastworker-controlplane, '
                f"which is not installed",
                hint="pip install fastworker-controlplane (a test dependency), or set EAGER to False",
                id="fastworker.E003",
            )
        )
    return errors
