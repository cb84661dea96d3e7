"""Run pytest, treating "no tests collected" (exit 5) as success, so a healthy run never fails for it.

Every tox test environment runs through this; a run that collects tests and fails still fails, and
an empty suite says so in the output rather than passing silently.
"""

from __future__ import annotations

import sys

import pytest

NO_TESTS_COLLECTED = 5

if __name__ == "__main__":
    code = pytest.main(sys.argv[1:])
    if code == NO_TESTS_COLLECTED:
        print("no tests collected in", " ".join(sys.argv[1:]), "(treated as success)")
        raise SystemExit(0)
    raise SystemExit(code)
