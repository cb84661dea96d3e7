"""``--completion bash|zsh|fish`` of all five console scripts, loaded into real shells and asked what they offer.

The generator's own tests (small parsers, ``=`` and ``:`` in bash words) live in the client
package (packages/fastworker-client/tests/test_completion.py); this checks what each installed
script prints: its subcommands, flags, choices and file arguments.

- bash: the script is sourced, COMP_WORDS/COMP_CWORD/COMP_LINE/COMP_POINT are set as bash's
  readline sets them, the registered function is called and COMPREPLY is read;
- fish: ``complete -C LINE`` after sourcing the script (what fish itself runs on TAB);
- zsh: ``zsh -n`` on the script, then an interactive ``zsh -f`` on a pseudo-terminal with
  ``compinit`` and the script on ``fpath`` as installed, a TAB typed after each line; ``compadd``
  is wrapped to record the matches the completion system really adds.

zsh and fish come from Debian's ``zsh`` and ``fish`` packages (``bash scripts/test`` installs them).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastworker.client.cli import COMMANDS

SHELLS = ("bash", "zsh", "fish")
FILES = {"ready.json", "cert.pem", "certs"}
PRIORITIES = {"critical", "high", "normal", "low"}
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}

#: Per script: (command line, candidates, how they must be offered: see check()), for every shell.
CASES: dict[str, list[tuple[str, set[str], str]]] = {
    "fastworker": [
        ("fastworker ", set(COMMANDS), "=="),
        ("fastworker submit --", {"--priority", "--wait", "--kwargs", "--json", "--control-plane"}, ">="),
        ("fastworker submit --priority ", PRIORITIES, "=="),
        ("fastworker --log-format ", {"text", "json"}, "=="),
        ("fastworker workers --js", {"--json"}, "=="),
        ("fastworker --secret-file ", FILES, ">="),
        ("fastworker pause ", PRIORITIES, "=="),
    ],
    "fastworker-controlplane": [
        ("fastworker-controlplane ", {"journal"}, "=="),
        (
            "fastworker-controlplane --",
            {"--task-modules", "--journal", "--ready-file", "--tls-cert", "--completion"},
            ">=",
        ),
        ("fastworker-controlplane --misfire-policy ", {"run_once", "skip", "run_all"}, "=="),
        ("fastworker-controlplane --log-level ", LEVELS, "=="),
        ("fastworker-controlplane --journal ", FILES, ">="),
        ("fastworker-controlplane --ready-file ", FILES, ">="),
        ("fastworker-controlplane --tls-cert ", FILES, ">="),
        ("fastworker-controlplane --tls-key ", FILES, ">="),
        ("fastworker-controlplane --tls-ca ", FILES, ">="),
        ("fastworker-controlplane --secret-file ", FILES, ">="),
        ("fastworker-controlplane --dashboard-password-file ", FILES, ">="),
        ("fastworker-controlplane --client-address ", set(), "=="),
        ("fastworker-controlplane journal ", {"inspect", "compact", "salvage"}, "=="),
        ("fastworker-controlplane journal inspect ", FILES, ">="),
        ("fastworker-controlplane journal salvage cert.pem ", FILES, ">="),
        ("fastworker-controlplane journal compact --", {"--help", "--result-ttl", "--result-cache-size"}, "=="),
        # journal is a command only as the first word, as main() dispatches it
        ("fastworker-controlplane --task-modules app ", {"journal"}, "!"),
        ("fastworker-controlplane --log-level INFO ", {"journal"}, "!"),
    ],
    "fastworker-worker": [
        ("fastworker-worker --", {"--task-modules", "--concurrency", "--ready-file", "--completion"}, ">="),
        ("fastworker-worker --ready-file ", FILES, ">="),
        ("fastworker-worker --tls-key ", FILES, ">="),
        ("fastworker-worker --log-level ", LEVELS, "=="),
        ("fastworker-worker --worker-id ", set(), "=="),
    ],
    "fastworker-dashboard": [
        ("fastworker-dashboard --", {"--read-only", "--dashboard-host", "--dashboard-password-file"}, ">="),
        ("fastworker-dashboard --dashboard-password-file ", FILES, ">="),
        ("fastworker-dashboard --ready-file ", FILES, ">="),
        ("fastworker-dashboard --log-format ", {"text", "json"}, "=="),
        ("fastworker-dashboard --dashboard-address ", set(), "=="),
    ],
    "fastworker-top": [
        (
            "fastworker-top --",
            {"--help", "--version", "--completion", "--control-plane", "--secret", "--secret-file", "--refresh"},
            "==",
        ),
        ("fastworker-top --completion ", set(SHELLS), "=="),
        ("fastworker-top --secret-file ", FILES, ">="),
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
    for script in CASES:
        running = {
            name: subprocess.Popen(
                [console_script(script), "--completion", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for name in SHELLS
        }
        for name, process in running.items():
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0 and out and not err, (script, name, err)
            paths[script, name] = folder / f"{script}.{name}"
            paths[script, name].write_bytes(out)
    return paths


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with files to complete: ready.json, cert.pem and certs/."""
    (tmp_path / "ready.json").write_text("{}")
    (tmp_path / "cert.pem").write_text("")
    (tmp_path / "certs").mkdir()
    return tmp_path


def names(found: list[str]) -> set[str]:
    """Candidates as file names: no folder before them, no slash after (fish adds one)."""
    return {word.rstrip("/").rsplit("/", 1)[-1] for word in found}


def check(found: list[str], expected: set[str], mode: str, line: str) -> None:
    """``==``: exactly these are offered; ``>=``: at least these; ``!``: none of these."""
    offered = names(found)
    if mode == "==":
        assert offered == expected, line
    elif mode == ">=":
        assert expected <= offered, line
    else:
        assert not expected & offered, line


# -------------------------------------------------------------------------------------------- bash


def bash_complete(script: Path, line: str, cwd: Path) -> list[str]:
    """COMPREPLY for ``line`` (cursor at its end), COMP_WORDS split as readline splits them (at ``=`` and ``:`` too)."""
    words = [piece for token in line.split() for piece in re.split(r"([=:])", token) if piece]
    words += [""] if line.endswith(" ") else []
    program = f"""
source {shlex.quote(str(script))}
spec=$(complete -p {shlex.quote(words[0])}) || exit 3
fn=${{spec#*-F }}; fn=${{fn%% *}}
COMP_LINE={shlex.quote(line)}
COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
"$fn" {shlex.quote(words[0])} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        [shell("bash"), "--norc", "--noprofile", "-c", program], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.parametrize("script", sorted(CASES))
def test_bash(scripts: dict[tuple[str, str], Path], workdir: Path, script: str) -> None:
    for line, expected, mode in CASES[script]:
        check(bash_complete(scripts[script, "bash"], line, workdir), expected, mode, line)


# -------------------------------------------------------------------------------------------- fish


def fish_complete(script: Path, line: str, cwd: Path) -> list[str]:
    program = f"source {shlex.quote(str(script))}; complete -C {shlex.quote(line)}"
    done = subprocess.run(
        [shell("fish"), "--no-config", "-c", program], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return [row.split("\t")[0] for row in done.stdout.splitlines()]


@pytest.mark.parametrize("script", sorted(CASES))
def test_fish(scripts: dict[tuple[str, str], Path], workdir: Path, script: str) -> None:
    for line, expected, mode in CASES[script]:
        check(fish_complete(scripts[script, "fish"], line, workdir), expected, mode, line)


# --------------------------------------------------------------------------------------------- zsh

_ZSH_SETUP = r"""
autoload -Uz compinit && compinit -D -u
unsetopt auto_list list_beep
compadd() {
    local -a __opts=("${(@)@[1,(i)(-|--)]}")
    if (( ${__opts[(I)-[OAD]]} )); then builtin compadd "$@"; return; fi
    local -a __hits
    builtin compadd -O __hits "$@"
    (( $#__hits )) && print -rl -- $__hits >> $__out
    builtin compadd "$@"
}
# _main_complete empties both hook arrays once it has run them: set them again for the next TAB.
__done() { print -r -- @@DONE@@ >> $__out; compprefuncs=(__arm) }
__arm() { comppostfuncs=(__done) }
compprefuncs=(__arm)
print -r -- @@READY@@ >> $__out
"""


class Zsh:
    """An interactive ``zsh -f`` on a pseudo-terminal, the script installed on ``fpath``, recording ``compadd``."""

    def __init__(self, tmp: Path, script: Path, command: str) -> None:
        functions = tmp / "zfunc"
        functions.mkdir()
        (functions / f"_{command}").write_text(script.read_text())
        self.out = tmp / "zsh-matches"
        self.out.write_text("")
        setup = tmp / "setup.zsh"
        setup.write_text(f"fpath=({functions} $fpath)\n" + _ZSH_SETUP)
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "TERM": "dumb", "__out": str(self.out)}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes zsh
            os.chdir(tmp)
            os.execvpe(shell("zsh"), ["zsh", "-f", "-i"], env)
        os.write(self.fd, f"source {setup}\n".encode())
        self._wait_for("@@READY@@", 1)

    def _wait_for(self, marker: str, count: int, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.05)[0]:
                try:
                    os.read(self.fd, 65536)  # keep the terminal drained
                except OSError:
                    pass
            text = self.out.read_text()
            if text.count(marker) >= count:
                return text
        raise AssertionError(f"zsh did not answer in {timeout} s ({marker})")

    def complete(self, line: str) -> list[str]:
        """The matches zsh adds when TAB is pressed after ``line`` (then the line is cleared)."""
        done = self.out.read_text().count("@@DONE@@")
        with self.out.open("a") as out:
            out.write("@@START@@\n")
        os.write(self.fd, line.encode() + b"\t")
        text = self._wait_for("@@DONE@@", done + 1)
        os.write(self.fd, b"\x15")  # kill-whole-line, for the next one
        return text.rsplit("@@START@@\n", 1)[1].split("@@DONE@@")[0].split()

    def close(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.mark.parametrize("script", sorted(CASES))
def test_zsh(scripts: dict[tuple[str, str], Path], workdir: Path, script: str) -> None:
    path = scripts[script, "zsh"]
    syntax = subprocess.run([shell("zsh"), "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    assert path.read_text().startswith(f"#compdef {script}\n")
    zsh = Zsh(workdir, path, script)
    try:
        for line, expected, mode in CASES[script]:
            check(zsh.complete(line), expected, mode, line)
    finally:
        zsh.close()


# ------------------------------------------------------------------------------------------ usage


@pytest.mark.parametrize("script", sorted(CASES))
def test_another_shell_is_a_usage_error_naming_it(script: str) -> None:
    done = subprocess.run([console_script(script), "--completion", "tcsh"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "tcsh" in done.stderr and not done.stdout
