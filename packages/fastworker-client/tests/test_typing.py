"""Typed task handles, checked by mypy: correct ``delay``/``submit`` calls pass, every incorrect one is reported.

Runs ``python -m mypy --strict`` over ``typing/typed_calls.py`` and compares the lines mypy reports
with the lines marked ``# expect-error`` there. Needs mypy in the environment (tox: the client env).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import fastworker

TYPED_CALLS = Path(__file__).resolve().parent / "typing" / "typed_calls.py"
ERROR_LINE = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: ", re.MULTILINE)


def _source_roots() -> list[str]:
    """The folders holding ``fastworker/`` when it is imported from source checkouts (not site-packages)."""
    roots = {str(Path(entry).parent) for entry in fastworker.__path__}
    return sorted(root for root in roots if Path(root).name not in ("site-packages", "dist-packages"))


def test_mypy_reports_exactly_the_incorrect_typed_calls(tmp_path: Path) -> None:
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\nnamespace_packages = True\nexplicit_package_bases = True\n"
        "[mypy-pynng.*,msgpack.*]\nignore_missing_imports = True\n"
    )
    env = {**os.environ, "MYPYPATH": os.pathsep.join(_source_roots())}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--python-executable",
            sys.executable,
            "--show-error-codes",
            "--no-pretty",
            str(TYPED_CALLS),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=110,
    )
    output = result.stdout + result.stderr
    assert "No module named mypy" not in output, "mypy must be installed in this environment (tox: client deps)"
    reported = {int(match["line"]) for match in ERROR_LINE.finditer(output) if match["path"].endswith("typed_calls.py")}
    other_errors = [
        match.group(0) for match in ERROR_LINE.finditer(output) if not match["path"].endswith("typed_calls.py")
    ]
    expected = {
        number
        for number, line in enumerate(TYPED_CALLS.read_text().splitlines(), start=1)
        if line.rstrip().endswith("# expect-error")
    }
    assert len(expected) >= 10
    assert not other_errors, output
    assert reported == expected, f"mypy reported lines {sorted(reported)}, expected {sorted(expected)}:\n{output}"
    assert result.returncode == 1, output
