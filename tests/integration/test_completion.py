"""``--completion bash|zsh|fish`` of the five console scripts: what each prints, and what its parser offers.

How a printed script completes in real bash, zsh and fish (subcommands, flags after the subcommand,
choices, files, a command dispatched by hand like ``journal``) is the generator's work, tested in
each shell by the client package on small parsers with every one of those features and on
``fastworker`` (packages/fastworker-client/tests/test_completion.py, the only shell harness). With
every package installed, this checks:

- the wiring: ``SCRIPT --completion SHELL`` prints exactly ``completion_script`` of the script's own
  parser (and of ``journal``'s, for the control plane), and another shell is a usage error;
- that ``bash -n``, ``zsh -n`` and ``fish --no-execute`` accept each printed script;
- what the four daemons' parsers offer: flags, choices, file arguments, ``journal``. These are facts
  of a parser, the same in its three scripts, so one shell is asked: fish, whose ``complete -C`` is
  its own completer, all of a script's lines in one process;
- a smoke in bash (the function registered for the command answers) and zsh (``compinit`` finds the
  script on ``fpath`` and registers it) on fastworker-controlplane's script.

zsh and fish come from Debian's ``zsh`` and ``fish`` packages (``bash scripts/test`` installs them).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fastworker.client import cli as client_cli
from fastworker.client.completion import SHELLS, completion_script
from fastworker.controlplane import cli as controlplane_cli
from fastworker.dashboard.tui import cli as top_cli
from fastworker.dashboard.web import cli as dashboard_cli
from fastworker.worker import cli as worker_cli

MakeParser = Callable[[], argparse.ArgumentParser]

#: Each console script: the function making its parser, and the commands its main() dispatches by hand.
SCRIPTS: dict[str, tuple[MakeParser, dict[str, MakeParser]]] = {
    "fastworker": (client_cli.make_parser, {}),
    "fastworker-controlplane": (controlplane_cli.make_parser, {"journal": controlplane_cli.make_journal_parser}),
    "fastworker-worker": (worker_cli.make_parser, {}),
    "fastworker-dashboard": (dashboard_cli.make_parser, {}),
    "fastworker-top": (top_cli.make_parser, {}),
}
#: How each shell checks a script's syntax without running it.
SYNTAX = {"bash": ["-n"], "zsh": ["-n"], "fish": ["--no-execute"]}

FILES = {"ready.json", "cert.pem", "certs"}
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}

#: Per daemon: (command line, candidates, "==" exactly these or ">=" at least these), asked of fish.
#: ``fastworker``'s own are asked of all three shells by the client package.
OFFERS: dict[str, list[tuple[str, set[str], str]]] = {
    "fastworker-controlplane": [
        ("fastworker-controlplane ", {"journal"}, "=="),
        (
            "fastworker-controlplane --",
            {"--task-modules", "--journal", "--ready-file", "--tls-cert", "--completion"},
            ">=",
        ),
        ("fastworker-controlplane --misfire-policy ", {"run_once", "skip", "run_all"}, "=="),
        ("fastworker-controlplane --log-level ", LEVELS, "=="),
        ("fastworker-controlplane --journal ", FILES, "=="),
        ("fastworker-controlplane --ready-file ", FILES, "=="),
        ("fastworker-controlplane --tls-cert ", FILES, "=="),
        ("fastworker-controlplane --tls-key ", FILES, "=="),
        ("fastworker-controlplane --tls-ca ", FILES, "=="),
        ("fastworker-controlplane --secret-file ", FILES, "=="),
        ("fastworker-controlplane --dashboard-password-file ", FILES, "=="),
        ("fastworker-controlplane --client-address ", set(), "=="),
        ("fastworker-controlplane journal ", {"inspect", "compact", "salvage"}, "=="),
        ("fastworker-controlplane journal inspect ", FILES, "=="),
        ("fastworker-controlplane journal salvage cert.pem ", FILES, "=="),
        ("fastworker-controlplane journal compact --", {"--help", "--result-ttl", "--result-cache-size"}, "=="),
        # journal is a command only as the first word, as main() dispatches it
        ("fastworker-controlplane --task-modules app ", set(), "=="),
        ("fastworker-controlplane --log-level INFO ", set(), "=="),
    ],
    "fastworker-worker": [
        ("fastworker-worker --", {"--task-modules", "--concurrency", "--ready-file", "--completion"}, ">="),
        ("fastworker-worker --ready-file ", FILES, "=="),
        ("fastworker-worker --pool ", {"processes", "threads"}, "=="),
        ("fastworker-worker --tls-key ", FILES, "=="),
        ("fastworker-worker --log-level ", LEVELS, "=="),
        ("fastworker-worker --worker-id ", set(), "=="),
    ],
    "fastworker-dashboard": [
        ("fastworker-dashboard --", {"--read-only", "--dashboard-host", "--dashboard-password-file"}, ">="),
        ("fastworker-dashboard --dashboard-password-file ", FILES, "=="),
        ("fastworker-dashboard --ready-file ", FILES, "=="),
        ("fastworker-dashboard --log-format ", {"text", "json"}, "=="),
        ("fastworker-dashboard --dashboard-address ", set(), "=="),
    ],
    "fastworker-top": [
        (
            "fastworker-top --",
            {
                "--help",
                "--version",
                "--completion",
                "--control-plane",
                "--secret",
                "--secret-file",
                "--secret-fallbacks-file",
                "--refresh",
                "--log-level",
                "--log-format",
            },
            "==",
        ),
        ("fastworker-top --completion ", set(SHELLS), "=="),
        ("fastworker-top --secret-file ", FILES, "=="),
        ("fastworker-top --secret-fallbacks-file ", FILES, "=="),
    ],
}


def console_script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), f"{name} is not installed next to {sys.executable}"
    return str(path)


def shell(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not on PATH: `bash scripts/test` installs it (Debian's {name} package)"
    return found


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(script, shell): the file holding what ``SCRIPT --completion SHELL`` printed."""
    folder = tmp_path_factory.mktemp("completion-scripts")
    paths = {}
    for script in SCRIPTS:
        running = {
            name: subprocess.Popen(
                [console_script(script), "--completion", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for name in SHELLS
        }
        for name, process in running.items():
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0 and not err, (script, name, err)
            paths[script, name] = folder / f"{script}.{name}"
            paths[script, name].write_bytes(out)
    return paths


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder holding only the files to complete: ready.json, cert.pem and certs/."""
    (tmp_path / "ready.json").write_text("{}")
    (tmp_path / "cert.pem").write_text("")
    (tmp_path / "certs").mkdir()
    return tmp_path


# ------------------------------------------------------------------------------------------ wiring


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_script_prints_what_the_generator_makes_of_its_parser(
    scripts: dict[tuple[str, str], Path], script: str
) -> None:
    make_parser, commands = SCRIPTS[script]
    for name in SHELLS:
        expected = completion_script(make_parser(), name, commands={c: make() for c, make in commands.items()})
        assert scripts[script, name].read_text() == expected, (script, name)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_shell_accepts_the_syntax(scripts: dict[tuple[str, str], Path], script: str) -> None:
    for name in SHELLS:
        done = subprocess.run(
            [shell(name), *SYNTAX[name], str(scripts[script, name])], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0 and not done.stderr, (name, done.stderr)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_another_shell_is_a_usage_error_naming_it(script: str) -> None:
    done = subprocess.run([console_script(script), "--completion", "tcsh"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "tcsh" in done.stderr and not done.stdout


# ------------------------------------------------------------------------------- in the real shells


@pytest.mark.parametrize("script", sorted(OFFERS))
def test_fish_offers_what_each_parser_says(scripts: dict[tuple[str, str], Path], workdir: Path, script: str) -> None:
    """Every line in one fish: ``complete -C`` for each, after a separator; descriptions and fish's ``/`` dropped."""
    cases = OFFERS[script]
    program = 'source $argv[1]; for line in $argv[2..]; echo "@@"; complete -C $line; end'
    done = subprocess.run(
        [shell("fish"), "--no-config", "-c", program, str(scripts[script, "fish"]), *(line for line, _, _ in cases)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    answers = done.stdout.split("@@\n")[1:]
    offered = [{row.split("\t")[0].rstrip("/") for row in answer.splitlines()} for answer in answers]
    wrong = [
        (line, sorted(got))
        for (line, expected, mode), got in zip(cases, offered, strict=True)
        if not (got == expected if mode == "==" else expected <= got)
    ]
    assert not wrong


def test_bash_runs_the_function_registered_for_the_command(scripts: dict[tuple[str, str], Path], workdir: Path) -> None:
    """``fastworker-controlplane journal <TAB>``, called as readline calls the function ``complete -p`` names."""
    program = """
source "$1"
set -- $(complete -p fastworker-controlplane)  # complete -F FUNCTION fastworker-controlplane
COMP_LINE='fastworker-controlplane journal ' COMP_WORDS=(fastworker-controlplane journal '') COMP_CWORD=2
COMP_POINT=${#COMP_LINE}
"$3" fastworker-controlplane '' journal
printf '%s\\n' "${COMPREPLY[@]}"
"""
    done = subprocess.run(
        [shell("bash"), "--norc", "--noprofile", "-c", program, "bash", scripts["fastworker-controlplane", "bash"]],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert sorted(done.stdout.split()) == ["compact", "inspect", "salvage"]


def test_zsh_compinit_registers_the_script_installed_on_fpath(
    scripts: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """As the install line says: the file ``_fastworker-controlplane`` on ``fpath``, then compinit."""
    (tmp_path / "_fastworker-controlplane").write_text(scripts["fastworker-controlplane", "zsh"].read_text())
    program = """
fpath=($1 $fpath)
autoload -Uz compinit && compinit -D -u
print -r -- $_comps[fastworker-controlplane]
autoload +X _fastworker-controlplane && print -r -- ${+functions[_fastworker-controlplane]}
"""
    done = subprocess.run(
        [shell("zsh"), "-f", "-c", program, "zsh", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert done.stdout.split() == ["_fastworker-controlplane", "1"]
