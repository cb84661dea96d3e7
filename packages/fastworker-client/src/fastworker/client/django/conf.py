"""The ``FASTWORKER`` setting: one dict, checked key by key, turned into ``SyncClient`` arguments.

Every key is optional. A key that is not given leaves the client to read the environment as it
always does (``FASTWORKER_CONTROL_PLANE``, ``FASTWORKER_SECRET_FILE`` / ``FASTWORKER_SECRET``,
``FASTWORKER_TLS_*``) and keeps the client's own defaults, so that the settings and a plain
``SyncClient()`` never disagree about what an unset option means.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastworker.client.secretfile import SecretFiles
from fastworker.protocol.addresses import parse_address

__all__ = ["SETTING", "FastWorkerSettings", "parse_settings"]

#: The name of the Django setting.
SETTING = "FASTWORKER"


@dataclass(frozen=True, slots=True)
class FastWorkerSettings:
    """The ``FASTWORKER`` setting, checked; None means "not given" (the client's default or the environment).

    Attributes:
        control_plane: ``CONTROL_PLANE``, the control plane's discovery address.
        secret: ``SECRET``, the shared secret.
        secret_file: ``SECRET_FILE``, a file holding the shared secret (excludes ``SECRET``).
        tls_ca: ``TLS_CA``, the CA bundle for a ``tls+tcp://`` control plane.
        tls_cert: ``TLS_CERT``, this side's certificate (mutual TLS; with ``TLS_KEY``).
        tls_key: ``TLS_KEY``, its key.
        connect_timeout: ``CONNECT_TIMEOUT``, seconds to wait for the control plane's announcement.
        request_timeout: ``REQUEST_TIMEOUT``, seconds one request may take.
        allow_pickle: ``ALLOW_PICKLE``, encode payloads with pickle (both sides must opt in).
        eager: ``EAGER``, run every task in this process when it is submitted (tests).
        task_modules: ``TASK_MODULES``, modules to import at startup besides each app's ``tasks``.
        autodiscover: ``AUTODISCOVER``, import the ``tasks`` module of every installed app.
    """

    control_plane: str | None = None
    secret: str | None = None
    secret_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float | None = None
    request_timeout: float | None = None
    allow_pickle: bool | None = None
    eager: bool = False
    task_modules: tuple[str, ...] = ()
    autodiscover: bool = True

    def client_options(self) -> dict[str, Any]:
        """The ``SyncClient`` keyword arguments these settings give (only the given ones).

        Reads the secret file and checks the TLS files now, so that a bad path fails here, named.

        Raises:
            ValueError: the secret file or a TLS file cannot be used; the message names the setting.
        """
        options: dict[str, Any] = {}
        if self.control_plane is not None:
            options["address"] = self.control_plane
        if self.secret is not None:
            options["secret"] = self.secret
        elif self.secret_file is not None:
            try:
                options["secret"] = SecretFiles(self.secret_file)  # read again when it changes
            except ValueError as exc:
                raise ValueError(f"{_key('SECRET_FILE')}: {exc}") from None
        if self.tls_ca is not None or self.tls_cert is not None or self.tls_key is not None:
            from fastworker.client.tls import TlsFiles  # pynng loads with the client, not with Django's startup

            try:
                options["tls"] = TlsFiles(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key)
            except ValueError as exc:
                raise ValueError(f"{_key('TLS_CA')}, {_key('TLS_CERT')}, {_key('TLS_KEY')}: {exc}") from None
        for name in ("connect_timeout", "request_timeout", "allow_pickle"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return options


def _key(name: str) -> str:
    return f'{SETTING}["{name}"]'


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{_key(name)} must be a non-empty string, not {value!r}")
    return value


def _path(name: str, value: object) -> str:
    if hasattr(value, "__fspath__"):  # a pathlib.Path, as settings modules often build them
        value = str(value)
    return _text(name, value)


def _address(name: str, value: object) -> str:
    address = _text(name, value)
    try:
        parse_address(address)
    except ValueError as exc:
        raise ValueError(f"{_key(name)}: {exc}") from None
    return address


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{_key(name)} must be a number of seconds more than 0, not {value!r}")
    return float(value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_key(name)} must be True or False, not {value!r}")
    return value


def _modules(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f'{_key(name)} must be a list of dotted module names, such as ["shop.jobs"], not {value!r}')
    for module in value:
        if not isinstance(module, str) or not module or not all(part.isidentifier() for part in module.split(".")):
            raise ValueError(f"{_key(name)} must hold dotted module names, not {module!r}")
    return tuple(value)


#: Each key of the setting -> (the field it fills, how its value is checked).
_KEYS: dict[str, tuple[str, Callable[[str, object], object]]] = {
    "CONTROL_PLANE": ("control_plane", _address),
    "SECRET": ("secret", _text),
    "SECRET_FILE": ("secret_file", _path),
    "TLS_CA": ("tls_ca", _path),
    "TLS_CERT": ("tls_cert", _path),
    "TLS_KEY": ("tls_key", _path),
    "CONNECT_TIMEOUT": ("connect_timeout", _seconds),
    "REQUEST_TIMEOUT": ("request_timeout", _seconds),
    "ALLOW_PICKLE": ("allow_pickle", _flag),
    "EAGER": ("eager", _flag),
    "TASK_MODULES": ("task_modules", _modules),
    "AUTODISCOVER": ("autodiscover", _flag),
}

#: Every key the setting takes.
KEYS: tuple[str, ...] = tuple(_KEYS)


def parse_settings(raw: object) -> tuple[FastWorkerSettings, list[str]]:
    """Check the setting's value (``None``: not set) key by key; returns what is usable and every problem.

    A key with a bad value is left at its default in the returned settings, so that one typo
    does not hide the problems of the other keys. The check does no I/O (the secret file and TLS
    files are read by :meth:`FastWorkerSettings.client_options`).
    """
    if raw is None:
        return FastWorkerSettings(), []
    if not isinstance(raw, Mapping):
        return FastWorkerSettings(), [
            f'settings.{SETTING} must be a dict such as {{"CONTROL_PLANE": "tcp://127.0.0.1:5550"}}, '
            f"not {type(raw).__name__}"
        ]
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        known = _KEYS.get(key) if isinstance(key, str) else None
        if known is None:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.append(f"{SETTING}[{key!r}] is not a FastWorker setting{hint}; the settings are {', '.join(KEYS)}")
            continue
        field, check = known
        if value is None and field not in ("eager", "task_modules", "autodiscover"):
            continue  # None: not given, as when the key is left out (e.g. os.environ.get(...))
        try:
            values[field] = check(key, value)
        except ValueError as exc:
            problems.append(str(exc))
    if "secret" in values and "secret_file" in values:
        problems.append(f"give {_key('SECRET')} or {_key('SECRET_FILE')}, not both: one of them would be ignored")
        del values["secret_file"]
    return FastWorkerSettings(**values), problems
