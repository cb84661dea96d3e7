"""The trivial task for the reference implementation (PyPI fastworker 0.3.0), loaded by its control plane."""

from fastworker.tasks.registry import task  # the reference package, in its own venv


@task
def add(x: int, y: int) -> int:
    """Return ``x + y`` (lets the benchmark check every result)."""
    return x + y
