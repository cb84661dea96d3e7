"""Run pytest, treating "no tests collected" (exit 5) as success for suites that are still empty.

Used only for suites that later issues fill in; a run that collects tests but fails still fails.
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
