"""Import the task modules a worker was started with and collect the tasks they define."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from fastworker.client.errors import DuplicateTaskName
from fastworker.client.task import TaskFunction, TaskRegistry, default_registry
from fastworker.worker.errors import TaskLoadError

__all__ = ["load_task_modules", "log_load_error"]

logger = logging.getLogger(__name__)


def log_load_error(error: TaskLoadError) -> None:
    """Log why the task modules did not load: through logging, so ``--log-format json`` holds for it too.

    With the import's traceback (the file and line that raised), unless the module is simply not there.
    """
    cause = error.__cause__
    missing = isinstance(cause, ModuleNotFoundError) and cause.name == error.module
    logger.error("%s", error, exc_info=None if missing or cause is None else cause)


def load_task_modules(modules: Sequence[str]) -> TaskRegistry:
    """Import each module and return a new registry of the tasks they define.

    A task belongs to a loaded module when its function's ``__module__`` is that module or one
    of its submodules (a package's ``__init__`` importing ``pkg.emails`` loads ``pkg.emails``'s
    tasks), or when the module holds it as an attribute (``from shared.tasks import cleanup``).
    Tasks that other imports put into :data:`~fastworker.client.task.default_registry` are left out.

    Args:
        modules: Dotted module names, as given to ``--task-modules``; duplicates are ignored.

    Returns:
        A new TaskRegistry holding every task of the loaded modules.

    Raises:
        TaskLoadError: A name is not a dotted module name, a module fails to import (the original
            exception is the ``__cause__``), two different functions claim one task name, or a
            module defines no tasks.
        TypeError: ``modules`` is a single str rather than a sequence of names.
    """
    if isinstance(modules, str):
        raise TypeError(f"modules must be a sequence of module names, not a str (did you mean [{modules!r}]?)")
    names = list(dict.fromkeys(modules))
    for name in names:
        _check_module_name(name)
    loaded = {name: _import(name) for name in names}

    registry = TaskRegistry()
    for name, module in loaded.items():
        found = _tasks_of(name, module)
        if not found:
            raise TaskLoadError(
                f"task module {name!r} defines no tasks: decorate its task functions with @task "
                f"(from fastworker.client.task import task)",
                name,
            )
        for tf in found:  # every one is default_registry's task under its name: names are unique
            registry.register(tf)
    return registry


def _check_module_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"module names must be str, not {type(name).__qualname__}")
    if not name or not all(part.isidentifier() for part in name.split(".")):
        hint = ""
        if name.endswith(".py") or "/" in name or "\\" in name:
            dotted = name.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
            hint = f" (give the dotted import name, e.g. {dotted!r}, with its folder on sys.path)"
        raise TaskLoadError(f"{name!r} is not a dotted module name{hint}", name)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except DuplicateTaskName as exc:
        raise TaskLoadError(f"cannot load task module {name!r}: {exc}", name) from exc
    except ImportError as exc:
        raise TaskLoadError(f"cannot import task module {name!r}: {exc}", name) from exc
    except Exception as exc:  # the module's own code failed: SyntaxError, NameError, ...
        raise TaskLoadError(
            f"importing task module {name!r} failed: {type(exc).__name__}: {exc}",
            name,
        ) from exc


def _tasks_of(name: str, module: ModuleType) -> list[TaskFunction[Any, Any]]:
    """The registered tasks attributed to one loaded module, in registration order."""
    prefix = name + "."
    found = [
        tf
        for tf in default_registry
        if (owner := getattr(tf.fn, "__module__", None)) == name
        or (isinstance(owner, str) and owner.startswith(prefix))
    ]
    for value in vars(module).values():
        if isinstance(value, TaskFunction) and value in default_registry and value not in found:
            found.append(value)
    return found
