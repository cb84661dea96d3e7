"""Acme's task modules. Importing the package imports them all, so ``--task-modules acme.tasks`` loads every task.

Workers load a task when its function's module is ``acme.tasks`` or a submodule of it; naming
the modules one by one works too (``--task-modules acme.tasks.emails acme.tasks.reports``).
"""

from acme.tasks import emails, reports

__all__ = ["emails", "reports"]
