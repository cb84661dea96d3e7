"""Shell completion: the generator against small parsers, and the ``fastworker`` script, in real bash, zsh and fish.

Each shell loads the printed script and is asked what it offers for a command line:

- bash: the script is sourced, COMP_WORDS/COMP_CWORD/COMP_LINE/COMP_POINT are set as bash's
  readline sets them (words split at whitespace and at ``=`` and ``:``), the registered function
  is called and COMPREPLY is read; and once through readline itself: an interactive bash on a
  pseudo-terminal gets keys with TABs, runs the line, and the arguments it ran with are compared;
- fish: ``complete -C LINE`` after sourcing the script (what fish itself runs on TAB);
- zsh: an interactive ``zsh -f`` on a pseudo-terminal with ``compinit``, the script on ``fpath``
  (or sourced, once), a TAB typed after the line; ``compadd`` is wrapped to record the matches
  the completion system really adds.

The small parsers carry every feature the five console scripts rely on: subcommands (and aliases),
flags after the subcommand, choices of flags and of positional arguments, file metavars (``PATH``,
``NEW_PATH``, ``PEM``), values that complete to nothing, a flag taking several values, a repeatable
flag, and a command dispatched by hand before parsing (``commands=``, as ``fastworker-controlplane
journal``). This harness is the only one: tests/integration/test_completion.py checks that each
installed script prints what the generator makes of its parser, and asks fish what each parser offers.

zsh and fish come from Debian's ``zsh`` and ``fish`` packages (``bash scripts/test`` installs them).
"""

from __future__ import annotations

import argparse
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

from fastworker.client import cli
from fastworker.client.completion import SHELLS, add_completion_flag, completion_script
from fastworker.client.envflags import apply_env_defaults

# ------------------------------------------------------------------------------------ the harness


def shell(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not on PATH: `bash scripts/test` installs it (Debian's {name} package)"
    return found


def bash_words(line: str) -> list[str]:
    """COMP_WORDS as bash's readline makes them: split at whitespace, ``=`` and ``:`` words of their own."""
    words = [piece for token in line.split() for piece in re.split(r"([=:])", token) if piece]
    return [*words, ""] if line.endswith(" ") else words


def bash_complete(script: Path, line: str, cwd: Path) -> list[str]:
    """COMPREPLY for ``line`` with the cursor at its end."""
    words = bash_words(line)
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


def fish_complete(script: Path, line: str, cwd: Path) -> list[str]:
    """The candidates fish offers for ``line`` (``complete -C``), without their descriptions."""
    program = f"source {shlex.quote(str(script))}; complete -C {shlex.quote(line)}"
    done = subprocess.run(
        [shell("fish"), "--no-config", "-c", program], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return [row.split("\t")[0] for row in done.stdout.splitlines()]


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
    """An interactive ``zsh -f`` on a pseudo-terminal, with compinit and a recording ``compadd``."""

    def __init__(self, tmp: Path, script: Path, command: str, *, sourced: bool = False) -> None:
        functions = tmp / "zfunc"
        functions.mkdir(exist_ok=True)
        (functions / f"_{command}").write_text(script.read_text())
        self.out = tmp / "zsh-matches"
        self.out.write_text("")
        setup = tmp / "setup.zsh"
        load = f"source {functions}/_{command}\n"
        setup.write_text(("" if sourced else f"fpath=({functions} $fpath)\n") + _ZSH_SETUP + (load if sourced else ""))
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


def names(found: list[str]) -> set[str]:
    """Candidates as file names: no folder before them (zsh adds files without it), no slash after (fish adds one)."""
    return {word.rstrip("/").rsplit("/", 1)[-1] for word in found}


def readline_lines(script: Path, keys: list[str], cwd: Path) -> list[list[str]]:
    """Type each line (with its TABs) into an interactive bash, press enter, and return what ``tool`` received."""
    setup = cwd / "setup.bash"
    setup.write_text(
        f"source {shlex.quote(str(script))}\n"
        "n=0\n"
        'tool() { printf "%s\\n" "$@" > ran.tmp; n=$((n + 1)); mv ran.tmp "ran.$n"; }\n'
        "touch ran.0\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "TERM": "dumb"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes bash
        os.chdir(cwd)
        os.execvpe(shell("bash"), ["bash", "--norc", "--noprofile", "-i"], env)

    def ran(n: int) -> list[str]:
        deadline = time.monotonic() + 20
        while not (cwd / f"ran.{n}").exists():
            assert time.monotonic() < deadline, f"bash did not run line {n}"
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    os.read(fd, 65536)  # keep the terminal drained
                except OSError:
                    pass
        return (cwd / f"ran.{n}").read_text().splitlines()

    try:
        os.write(fd, f"source {shlex.quote(str(setup))}\n".encode())
        ran(0)
        found = []
        for n, line in enumerate(keys, 1):
            os.write(fd, line.encode() + b"\n")
            found.append(ran(n))
        return found
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def offered(shell_name: str, script: Path, command: str, lines: list[str], cwd: Path) -> list[list[str]]:
    """What the shell offers for each line (zsh: once ``zsh -n`` accepts the script, in one session)."""
    if shell_name == "bash":
        return [bash_complete(script, line, cwd) for line in lines]
    if shell_name == "fish":
        return [fish_complete(script, line, cwd) for line in lines]
    syntax = subprocess.run([shell("zsh"), "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    zsh = Zsh(cwd, script, command)
    try:
        return [zsh.complete(line) for line in lines]
    finally:
        zsh.close()


#: (command line, candidates, how they must be offered): ``==`` exactly these, ``>=`` at least these, ``!`` none.
Case = tuple[str, set[str], str]


def check(shell_name: str, script: Path, command: str, cases: list[Case], cwd: Path) -> None:
    """Asks the shell for every case's line; fails naming each line offered otherwise than its case says."""
    found = offered(shell_name, script, command, [line for line, _, _ in cases], cwd)
    wrong = []
    for (line, expected, mode), words in zip(cases, found, strict=True):
        got = names(words)
        if not (got == expected if mode == "==" else expected <= got if mode == ">=" else not expected & got):
            wrong.append(f"{line!r} offers {sorted(got)}, not {mode} {sorted(expected)}")
    assert not wrong, f"in {shell_name}:\n" + "\n".join(wrong)


# ----------------------------------------------------------------------------------- small parsers

#: The files in ``workdir`` (certs/ holds ca.pem).
FILES = {"ready.json", "cert.pem", "certs"}


def small_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--version", action="version", version="tool 1")
    add_completion_flag(parser)
    parser.add_argument("--level", choices=["low", "high"], help="a level")
    parser.add_argument("--ready-file", metavar="PATH", help="where to say so")
    parser.add_argument("--address", metavar="HOST:PORT", help="where to listen; not a file")
    parser.add_argument("--tag", action="append", default=[], help="repeatable: 'quoted' [bracketed]: colons")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = subparsers.add_parser("run", aliases=["go"], help="run: it")
    run.add_argument("speed", choices=["fast", "slow"])
    run.add_argument("inputs", nargs="*", metavar="PATH")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.add_argument("--level", choices=["low", "high"], help="a level, after the command too")
    show = subparsers.add_parser("show", help="show one thing")
    show.add_argument("item")
    return parser


SMALL_CASES: list[Case] = [
    ("tool ", {"run", "go", "show"}, "=="),
    ("tool --", {"--help", "--version", "--completion", "--level", "--ready-file", "--address", "--tag"}, "=="),
    ("tool --level ", {"low", "high"}, "=="),
    ("tool --completion ", set(SHELLS), "=="),
    ("tool --address ", set(), "=="),
    ("tool --ready-file ", FILES, ">="),
    ("tool --ready-file certs/", {"ca.pem"}, "=="),
    ("tool --address 127.0.0.1:8080 --tag a:b r", {"run"}, "=="),
    ("tool go ", {"fast", "slow"}, "=="),
    ("tool run fast ", FILES, ">="),
    ("tool run fast x.pem ", FILES, ">="),
    ("tool run --", {"--help", "--json", "--level"}, "=="),
    ("tool run --level ", {"low", "high"}, "=="),
    ("tool show ", set(), "=="),
]


def tools_parser() -> argparse.ArgumentParser:
    """``daemon tools ...``: dispatched by the daemon before its parser runs, as fastworker-controlplane's ``journal``."""
    parser = argparse.ArgumentParser(prog="daemon tools", description="Offline tools (stopped daemon).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="inspect|compact|salvage")
    actions.add_parser("inspect", help="look").add_argument("path", metavar="PATH")
    compact = actions.add_parser("compact", help="shrink it")
    compact.add_argument("path", metavar="PATH")
    compact.add_argument("--keep", type=int, help="results to keep")
    salvage = actions.add_parser("salvage", help="copy what reads")
    salvage.add_argument("path", metavar="PATH")
    salvage.add_argument("new_path", metavar="NEW_PATH")
    return parser


def daemon_parser() -> argparse.ArgumentParser:
    """A daemon's flags, with no subcommand: several values, text, choices, a PEM file; and ``tools``."""
    daemon = argparse.ArgumentParser(prog="daemon")
    add_completion_flag(daemon, commands={"tools": tools_parser})
    daemon.add_argument("--modules", nargs="+", default=[], metavar="MODULE", help="modules to load")
    daemon.add_argument("--port", type=int, help="where to listen")
    daemon.add_argument("--policy", choices=["once", "skip", "all"], help="what to do")
    daemon.add_argument("--tls-cert", metavar="PEM", help="the certificate")
    return daemon


DAEMON_CASES: list[Case] = [
    ("daemon ", {"tools"}, "=="),
    ("daemon --", {"--help", "--completion", "--modules", "--port", "--policy", "--tls-cert"}, "=="),
    ("daemon --policy ", {"once", "skip", "all"}, "=="),
    ("daemon --tls-cert ", FILES, ">="),
    ("daemon --port ", set(), "=="),
    ("daemon tools ", {"inspect", "compact", "salvage"}, "=="),
    ("daemon tools inspect ", FILES, ">="),
    ("daemon tools salvage cert.pem ", FILES, ">="),
    ("daemon tools compact --", {"--help", "--keep"}, "=="),
    # tools is a command only as the first word, as the daemon dispatches it
    ("daemon --modules app ", {"tools"}, "!"),
    ("daemon --port 1 ", {"tools"}, "!"),
    ("daemon --port 1 tools ", {"inspect"}, "!"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with files to complete: ready.json, cert.pem and certs/ca.pem."""
    (tmp_path / "ready.json").write_text("{}")
    (tmp_path / "cert.pem").write_text("")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("")
    return tmp_path


def write_script(
    parser: argparse.ArgumentParser, shell_name: str, folder: Path, **commands: argparse.ArgumentParser
) -> Path:
    path = folder / f"{parser.prog}.{shell_name}"
    path.write_text(completion_script(parser, shell_name, commands=commands))
    return path


@pytest.mark.parametrize("shell_name", SHELLS)
def test_subcommands_flags_choices_and_files_complete(workdir: Path, shell_name: str) -> None:
    check(shell_name, write_script(small_parser(), shell_name, workdir), "tool", SMALL_CASES, workdir)


@pytest.mark.parametrize("shell_name", SHELLS)
def test_a_command_dispatched_by_hand_completes_as_the_first_word(workdir: Path, shell_name: str) -> None:
    script = write_script(daemon_parser(), shell_name, workdir, tools=tools_parser())
    check(shell_name, script, "daemon", DAEMON_CASES, workdir)


def test_bash_answers_only_the_part_after_an_equals_sign_or_a_colon(workdir: Path) -> None:
    """bash replaces only the text after the word's last ``=`` or ``:``; the candidates must fit that."""
    script = write_script(small_parser(), "bash", workdir)
    assert bash_complete(script, "tool --level=h", workdir) == ["high"]
    assert sorted(bash_complete(script, "tool --level=", workdir)) == ["high", "low"]
    assert bash_complete(script, "tool --ready-file=certs/c", workdir) == ["certs/ca.pem"]
    assert bash_complete(script, "tool --ready-file=cert.", workdir) == ["cert.pem"]


def test_bash_readline_inserts_what_the_function_answers(workdir: Path) -> None:
    """The real thing: readline replaces only the text after ``=`` and ``:``, so the answers must fit."""
    script = write_script(small_parser(), "bash", workdir)
    typed = [
        "tool --level=h\t",
        "tool go --js\t",
        "tool --address 127.0.0.1:8080 --tag a:b r\t",
        "tool --ready-file certs/c\t",
        "tool --ready-file=certs/c\t",
        "tool --completion z\t",
    ]
    assert readline_lines(script, typed, workdir) == [
        ["--level=high"],
        ["go", "--json"],
        ["--address", "127.0.0.1:8080", "--tag", "a:b", "run"],
        ["--ready-file", "certs/ca.pem"],
        ["--ready-file=certs/ca.pem"],
        ["--completion", "zsh"],
    ]


def test_fish_and_zsh_complete_the_value_after_an_equals_sign(workdir: Path) -> None:
    fish = write_script(small_parser(), "fish", workdir)
    assert fish_complete(fish, "tool --level=h", workdir) == ["--level=high"]
    zsh = Zsh(workdir, write_script(small_parser(), "zsh", workdir), "tool")
    try:
        assert zsh.complete("tool --level=h") == ["high"]
    finally:
        zsh.close()


def test_zsh_completes_when_the_script_is_sourced_after_compinit(workdir: Path) -> None:
    zsh = Zsh(workdir, write_script(small_parser(), "zsh", workdir), "tool", sourced=True)
    try:
        assert set(zsh.complete("tool ")) == {"run", "go", "show"}
        assert set(zsh.complete("tool run ")) == {"fast", "slow"}
    finally:
        zsh.close()


def test_every_script_carries_its_install_line() -> None:
    parser = small_parser()
    assert 'eval "$(tool --completion bash)"' in completion_script(parser, "bash")
    assert '> "${fpath[1]}/_tool"' in completion_script(parser, "zsh")
    assert completion_script(parser, "zsh").startswith("#compdef tool\n")
    assert "> ~/.config/fish/completions/tool.fish" in completion_script(parser, "fish")


def test_an_unknown_shell_is_refused() -> None:
    with pytest.raises(ValueError, match="tcsh"):
        completion_script(small_parser(), "tcsh")


@pytest.mark.parametrize("shell_name", SHELLS)
def test_the_flag_prints_the_script_and_exits_zero(capsys: pytest.CaptureFixture[str], shell_name: str) -> None:
    """What ``completion_script`` makes of the parser, with the commands the flag was given made into parsers."""
    for make, commands in ((small_parser, {}), (daemon_parser, {"tools": tools_parser()})):
        with pytest.raises(SystemExit) as exc:
            make().parse_args(["--completion", shell_name])
        assert exc.value.code == 0
        assert capsys.readouterr().out == completion_script(make(), shell_name, commands=commands)


def test_the_flag_refuses_another_shell_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        small_parser().parse_args(["--completion", "tcsh"])
    assert exc.value.code == 2
    assert "tcsh" in capsys.readouterr().err


def test_the_flag_reads_no_environment_variable() -> None:
    parser = small_parser()
    apply_env_defaults(parser, {"FASTWORKER_COMPLETION": "bash"})
    assert "FASTWORKER_COMPLETION" not in parser.format_help()
    assert not hasattr(parser.parse_args(["show", "x"]), "completion")


# -------------------------------------------------------------------------------- the fastworker script


def fastworker_scripts(folder: Path) -> dict[str, Path]:
    """What ``fastworker --completion SHELL`` prints for each shell, from the installed console script."""
    command = Path(sys.executable).with_name("fastworker")
    running = {
        name: subprocess.Popen([str(command), "--completion", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in SHELLS
    }
    paths = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0 and not err, err
        paths[name] = folder / f"fastworker.{name}"
        paths[name].write_bytes(out)
    return paths


PRIORITIES = {"critical", "high", "normal", "low"}
COMMON = {
    "--control-plane",
    "--secret",
    "--secret-file",
    "--secret-fallbacks-file",
    "--json",
    "--connect-timeout",
    "--log-level",
    "--log-format",
}

FASTWORKER_CASES: list[Case] = [
    ("fastworker ", set(cli.COMMANDS), "=="),
    ("fastworker su", {"submit"}, "=="),
    ("fastworker --json --control-plane tcp://127.0.0.1:5550 st", {"stats", "status"}, "=="),
    ("fastworker submit --", {"--priority", "--wait", "--kwargs", "--countdown", "--eta", *COMMON}, ">="),
    ("fastworker submit --priority ", PRIORITIES, "=="),
    ("fastworker --log-format ", {"text", "json"}, "=="),
    ("fastworker stats --log-level ", {"DEBUG", "INFO", "WARNING", "ERROR"}, "=="),
    ("fastworker stats --", {"--help", *COMMON}, "=="),
    ("fastworker workers --js", {"--json"}, "=="),
    (
        "fastworker list --state ",
        {"pending", "scheduled", "running", "retrying", "success", "failure", "cancelled"},
        "==",
    ),
    ("fastworker purge ", PRIORITIES, "=="),
    ("fastworker pause ", PRIORITIES, "=="),
    ("fastworker --secret-file ", FILES, ">="),
    ("fastworker status --secret-file ", FILES, ">="),
    ("fastworker --control-plane ", set(), "=="),
    ("fastworker --completion ", set(SHELLS), "=="),
]


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fastworker_scripts(tmp_path_factory.mktemp("fastworker-completion"))


@pytest.mark.parametrize("shell_name", SHELLS)
def test_fastworker_completes(scripts: dict[str, Path], workdir: Path, shell_name: str) -> None:
    check(shell_name, scripts[shell_name], "fastworker", FASTWORKER_CASES, workdir)


def test_fastworker_completion_goes_before_the_command_and_refuses_other_shells() -> None:
    command = Path(sys.executable).with_name("fastworker")
    bad = subprocess.run([str(command), "--completion", "tcsh"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "tcsh" in bad.stderr and not bad.stdout
    after = subprocess.run([str(command), "stats", "--completion", "bash"], capture_output=True, text=True, timeout=60)
    assert after.returncode == 2 and "--completion" in after.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_completion_script_that_cannot_be_written_is_one_line_and_exit_1_not_a_traceback() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from fastworker.client.cli import main; sys.exit(main())"]
            + ["--completion", "bash"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert (done.returncode, done.stderr) == (
        1,
        "fastworker: cannot write the completion script: No space left on device\n",
    )
