"""Shell completion for the FastWorker commands: ``--completion bash|zsh|fish`` prints a script for that shell.

The scripts are static: the generator reads the argparse parser once, when the script is printed,
and writes out every subcommand, flag and ``choices`` list, and which arguments are files. A TAB
press then runs only shell code. The alternative, a hook that runs the command again on every TAB
(argcomplete's design), starts Python and imports the CLI each time, hundreds of milliseconds a
press, and would be one more dependency. The price of a static script: it describes the version
that printed it, so print it again after an upgrade.

Install (docs/reference.md, "Shell completion")::

    eval "$(fastworker --completion bash)"                                  # in ~/.bashrc
    fastworker --completion zsh > "${fpath[1]}/_fastworker"                 # then start a new zsh
    fastworker --completion fish > ~/.config/fish/completions/fastworker.fish

What completes: subcommands; commands a script dispatches by hand before parsing, as its first
word (``fastworker-controlplane journal ...``); every parser's flags, wherever they may go
(``fastworker``'s common flags before and after the subcommand, because its subparsers take them
too); the choices of flags and positional arguments; and files for arguments whose metavar names a
file (``PATH``, ``NEW_PATH``, ``FILE``, ``PEM``: ``--ready-file``, ``--secret-file``, ``--journal``,
the TLS files) or whose type is ``argparse.FileType``. Other values complete to nothing rather than
to file names. A flag taking several values (``--task-modules``) completes its first one; the words
after it count as positional arguments (no FastWorker parser has a positional argument there).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastworker.client.envflags import _arguments, _repeatable, _subcommands

__all__ = ["FILE_METAVARS", "SHELLS", "add_completion_flag", "completion_script"]

#: The shells a script can be printed for.
SHELLS = ("bash", "zsh", "fish")
#: Metavars that name a file: such arguments complete as files.
FILE_METAVARS = frozenset({"PATH", "NEW_PATH", "FILE", "PEM"})

#: A choice the scripts can carry unquoted: each shell splits a list of them on spaces.
_PLAIN = re.compile(r"[\w.,:+@%/=-]+")
_ENV_NOTE = re.compile(r"\s*\[env \w+\]$")
_ASIDE = re.compile(r"\s*\([^()]*\)")
_LONGEST_HELP = 80


# -------------------------------------------------------------------------------- reading a parser


@dataclass(frozen=True)
class _Value:
    """What an argument takes: one of its choices, a file, or text (nothing to offer)."""

    choices: tuple[str, ...] = ()
    files: bool = False


@dataclass(frozen=True)
class _Flag:
    names: tuple[str, ...]
    help: str
    metavar: str
    #: None: the flag takes no value.
    value: _Value | None
    repeatable: bool


@dataclass(frozen=True)
class _Positional:
    name: str
    value: _Value
    #: It takes every remaining word (nargs ``*`` or ``+``).
    repeats: bool
    optional: bool


@dataclass
class _Node:
    """One parser: the root, a subcommand's, or an extra command's."""

    index: int
    path: tuple[str, ...]
    flags: list[_Flag] = field(default_factory=list)
    #: The positional arguments; the subcommand, when there is one, comes after them.
    positionals: list[_Positional] = field(default_factory=list)
    #: (name, help, node index) of each subcommand, aliases included.
    commands: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class _Tree:
    """Every parser of a command, the root first, and the commands it dispatches by hand."""

    nodes: list[_Node]
    #: (name, help, node index) of each command taken only as the first word, before the root parser.
    extras: list[tuple[str, str, int]]


def _summary(text: str | None, action: argparse.Action | None = None, prog: str = "") -> str:
    """A help text cut to its first clause, without the ``[env ...]`` note: one line in a menu."""
    if not text or text == argparse.SUPPRESS:
        return ""
    if action is not None and "%" in text:
        try:
            text = text % {**vars(action), "prog": prog}
        except (KeyError, TypeError, ValueError):
            pass
    text = _ENV_NOTE.sub("", " ".join(text.split()))
    text = _ASIDE.sub("", text).split("; ", 1)[0].rstrip(".:")
    return text if len(text) <= _LONGEST_HELP else text[: _LONGEST_HELP - 3].rstrip() + "..."


def _value(action: argparse.Action) -> _Value:
    if action.choices is not None:
        return _Value(choices=tuple(str(c) for c in action.choices if _PLAIN.fullmatch(str(c))))
    metavar = action.metavar if isinstance(action.metavar, str) else None
    return _Value(files=metavar in FILE_METAVARS or isinstance(action.type, argparse.FileType))


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest.upper() if action.dest != argparse.SUPPRESS else "VALUE"


def _read(parser: argparse.ArgumentParser, commands: Mapping[str, argparse.ArgumentParser]) -> _Tree:
    """The parser and every parser under it, root first; aliases and shared parsers are one node."""
    nodes: list[_Node] = []
    seen: dict[int, int] = {}

    def visit(current: argparse.ArgumentParser, path: tuple[str, ...]) -> int:
        if id(current) in seen:
            return seen[id(current)]
        node = _Node(len(nodes), path)
        nodes.append(node)
        seen[id(current)] = node.index
        subcommands = []
        for action in _arguments(current):
            found = _subcommands(action)
            if found is not None:
                subcommands.extend(found)
            elif action.help == argparse.SUPPRESS:
                continue
            elif action.option_strings:
                value = None if action.nargs == 0 else _value(action)
                help = _summary(action.help, action, current.prog)
                node.flags.append(
                    _Flag(tuple(action.option_strings), help, _metavar(action), value, _repeatable(action))
                )
            elif not subcommands:
                _add_positional(node, action)
        for name, help, sub in subcommands:
            node.commands.append((name, _summary(help), visit(sub, (*path, name))))
        return node.index

    visit(parser, ())
    extras = [(name, _summary(extra.description), visit(extra, (name,))) for name, extra in commands.items()]
    return _Tree(nodes, extras)


def _add_positional(node: _Node, action: argparse.Action) -> None:
    value = _value(action)
    name = _metavar(action)
    if isinstance(action.nargs, int):
        node.positionals.extend(_Positional(name, value, False, False) for _ in range(action.nargs))
    else:
        repeats = action.nargs in ("*", "+", argparse.REMAINDER)
        node.positionals.append(_Positional(name, value, repeats, action.nargs in ("?", "*")))


# -------------------------------------------------------------------------------------------- bash

_BASH_MAIN = r"""
@FN@() {
    # bash splits a word at = and : (COMP_WORDBREAKS): glue back the pieces typed without a space between.
    local words=() cword=0 i w rest=$COMP_LINE
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        w=${COMP_WORDS[i]}
        if ((i > 0)) && [[ $rest != [[:space:]]* ]]; then
            words[${#words[@]} - 1]+=$w
        else
            words+=("$w")
        fi
        rest=${rest#"${rest%%[![:space:]]*}"}
        rest=${rest#"$w"}
        ((i == COMP_CWORD)) && cword=$((${#words[@]} - 1))
    done
    # Walk the words before the cursor: flags (and their values), subcommands, positional arguments.
    local cur=${words[cword]} node=0 pos=0 value next flags want= lead= dashdash= start=1
@EXTRA_WALK@    for ((i = start; i < cword; i++)); do
        w=${words[i]}
        if [[ -z $dashdash && $w == -?* ]]; then
            if [[ $w == -- ]]; then
                dashdash=1
            elif [[ $w != *=* ]]; then
                @FN@_value "$node" "$w"
                if [[ -n $value ]]; then
                    if ((i + 1 == cword)); then
                        want=$value
                        break
                    fi
                    i=$((i + 1))
                fi
            fi
            continue
        fi
        next=
        @FN@_positional "$node" "$pos"
        [[ $value == n:* ]] && @FN@_command "$node" "$w"
        if [[ -n $next ]]; then
            node=$next
            pos=0
        else
            pos=$((pos + 1))
        fi
    done
    if [[ -z $want ]]; then
        if [[ -z $dashdash && $cur == --*=* ]]; then
            @FN@_value "$node" "${cur%%=*}"
            want=$value
            lead=${cur%%=*}=
            cur=${cur#*=}
        elif [[ -z $dashdash && $cur == -* ]]; then
            @FN@_flags "$node"
            want="c:$flags"
        else
            @FN@_positional "$node" "$pos"
            want=$value
@EXTRA_OFFER@            if [[ -z $want && -z $cur ]]; then
                @FN@_flags "$node"
                want="c:$flags"
            fi
        fi
    fi
    COMPREPLY=()
    case $want in
        f)
            compopt -o filenames 2>/dev/null
            while IFS= read -r w; do COMPREPLY+=("$w"); done < <(compgen -f -- "$cur")
            ;;
        [cn]:*)
            while IFS= read -r w; do COMPREPLY+=("$w"); done < <(IFS=' '; compgen -W "${want#?:}" -- "$cur")
            ;;
    esac
    # bash replaces only the text after the word's last = or :, so answer with what follows it.
    local raw=${COMP_WORDS[COMP_CWORD]} fixed
    if [[ $raw == [=:] ]]; then fixed=${words[cword]}; else fixed=${words[cword]%"$raw"}; fi
    if [[ -n $fixed ]]; then
        for i in "${!COMPREPLY[@]}"; do
            w=$lead${COMPREPLY[i]}
            COMPREPLY[i]=${w#"$fixed"}
        done
    fi
}
"""


def _bash_value(value: _Value) -> str:
    if value.choices:
        return "c:" + " ".join(value.choices)
    return "f" if value.files else "x"


_BASH_EXTRA_WALK = """\
    if ((cword > 1)); then
        @FN@_extra "${words[1]}"
        [[ -n $next ]] && node=$next start=2
    fi
"""
_BASH_EXTRA_OFFER = """\
            if ((cword == 1)); then
                [[ $want == [cn]:* ]] && want+=" @EXTRAS@" || want="n:@EXTRAS@"
            fi
"""


def _bash(tree: _Tree, prog: str, fn: str) -> str:
    q = shlex.quote
    nodes = tree.nodes
    out = [
        f"# bash completion for {prog}, printed by `{prog} --completion bash`.",
        f'# Install: eval "$({prog} --completion bash)" in ~/.bashrc (print it again after an upgrade).',
        "",
        f"{fn}_flags() {{  # $1: a node -> flags: every flag it takes",
        "    flags=",
        "    case $1 in",
    ]
    for node in nodes:
        names = " ".join(name for flag in node.flags for name in flag.names)
        out.append(f"        {node.index}) flags={q(names)} ;;")
    out += [
        "    esac",
        "}",
        "",
        f"{fn}_value() {{  # $1: a node, $2: a flag -> value: what it takes ('' nothing, x text, f file, c:CHOICES)",
        "    value=",
        '    case "$1 $2" in',
    ]
    for node in nodes:
        for flag in node.flags:
            if flag.value is not None:
                patterns = "|".join(q(f"{node.index} {name}") for name in flag.names)
                out.append(f"        {patterns}) value={q(_bash_value(flag.value))} ;;")
    out += [
        "    esac",
        "}",
        "",
        f"{fn}_positional() {{  # $1: a node, $2: an index -> value: what that positional argument takes (n:COMMANDS)",
        "    value=",
        "    case $1 in",
    ]
    for node in nodes:
        tests = []
        for index, positional in enumerate(node.positionals):
            tests.append((f"$2 >= {index}" if positional.repeats else f"$2 == {index}", _bash_value(positional.value)))
            if positional.repeats:
                break
        else:
            if node.commands:
                names = " ".join(name for name, _, _ in node.commands)
                tests.append((f"$2 == {len(node.positionals)}", f"n:{names}"))
        if tests:
            chain = "; el".join(f"if (({test})); then value={q(value)}" for test, value in tests)
            out.append(f"        {node.index}) {chain}; fi ;;")
    out += [
        "    esac",
        "}",
        "",
        f"{fn}_command() {{  # $1: a node, $2: a word -> next: the node of subcommand $2 ('' if it is none)",
        "    next=",
        '    case "$1 $2" in',
    ]
    for node in nodes:
        for name, _, child in node.commands:
            out.append(f"        {q(f'{node.index} {name}')}) next={child} ;;")
    out += ["    esac", "}"]
    main = _BASH_MAIN.replace("@EXTRA_WALK@", _BASH_EXTRA_WALK if tree.extras else "")
    main = main.replace("@EXTRA_OFFER@", _BASH_EXTRA_OFFER if tree.extras else "")
    main = main.replace("@EXTRAS@", " ".join(name for name, _, _ in tree.extras))
    if tree.extras:
        out += ["", f"{fn}_extra() {{  # $1: the first word -> next: the node of the command it names ('' if none)"]
        out += ["    next=", '    case "$1" in']
        out += [f"        {q(name)}) next={child} ;;" for name, _, child in tree.extras]
        out += ["    esac", "}"]
    out.append(main.replace("@FN@", fn).rstrip("\n"))
    out += ["", f"complete -F {fn} {q(prog)}", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- zsh


def _zsh_escape(text: str) -> str:
    """Text for a ``[description]`` or ``:message:`` of an ``_arguments`` spec."""
    return text.replace("\\", "\\\\").replace("[", "(").replace("]", ")").replace(":", "\\:")


def _zsh_action(value: _Value) -> str:
    if value.choices:
        return "(" + " ".join(value.choices) + ")"
    return "_files" if value.files else " "


def _zsh_specs(node: _Node) -> list[str]:
    specs = []
    for flag in node.flags:
        group = "" if flag.repeatable or len(flag.names) == 1 else "(" + " ".join(flag.names) + ")"
        for name in flag.names:
            spec = ("*" if flag.repeatable else "") + group + name
            if flag.value is not None:
                spec += "+" if len(name) == 2 else "="
            spec += f"[{_zsh_escape(flag.help)}]"
            if flag.value is not None:
                spec += f":{_zsh_escape(flag.metavar)}:{_zsh_action(flag.value)}"
            specs.append(spec)
    for index, positional in enumerate(node.positionals):
        where = "*" if positional.repeats else str(index + 1)
        optional = ":" if positional.optional and not positional.repeats else ""
        specs.append(f"{where}:{optional}{_zsh_escape(positional.name)}:{_zsh_action(positional.value)}")
        if positional.repeats:
            break
    else:
        if node.commands:
            specs += [f"{len(node.positionals) + 1}: :->command", "*:: :->args"]
    return specs


def _zsh_commands(commands: list[tuple[str, str, int]], indent: str) -> list[str]:
    """A ``local -a commands=(NAME:HELP ...)`` for ``_describe``."""
    q = shlex.quote
    lines = [f"{indent}local -a commands=("]
    lines += [f"{indent}    {q(name.replace(':', chr(92) + ':') + ':' + help)}" for name, help, _ in commands]
    return [*lines, f"{indent})"]


def _zsh(tree: _Tree, prog: str, fn: str) -> str:
    q = shlex.quote
    nodes = tree.nodes
    entry = f"_{prog}"
    out = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}, printed by `{prog} --completion zsh`.",
        f'# Install: {prog} --completion zsh > "${{fpath[1]}}/{entry}" and start a new zsh, or',
        f'# eval "$({prog} --completion zsh)" in ~/.zshrc after compinit (print it again after an upgrade).',
    ]
    for node in nodes:
        commands = node.commands and not any(p.repeats for p in node.positionals)
        out += ["", f"{fn}_{node.index}() {{  # {' '.join((prog, *node.path))}"]
        if commands:
            out += ["    local curcontext=$curcontext state state_descr line ret=1", "    local -A opt_args"]
        specs = " \\\n        ".join(q(spec) for spec in _zsh_specs(node))
        if not commands:
            out += [f"    _arguments -S \\\n        {specs}", "}"]
            continue
        out += [f"    _arguments -C -S \\\n        {specs} && ret=0", "    case $state in", "        (command)"]
        out += _zsh_commands(node.commands, "            ")
        out += [
            f"            _describe -t commands {q(' '.join((prog, *node.path)) + ' command')} commands && ret=0",
            "            ;;",
            "        (args)",
            f"            curcontext=${{curcontext%:*:*}}:{q('-'.join((prog, *node.path)))}-$words[1]:",
            "            case $words[1] in",
        ]
        for name, _, child in node.commands:
            out.append(f"                ({q(name)}) {fn}_{child} && ret=0 ;;")
        out += ["            esac", "            ;;", "    esac", "    return ret", "}"]
    out += ["", f"{entry}() {{"]
    if tree.extras:
        root = nodes[0]
        out += [
            "    local ret=1",
            "    # Commands taken only as the first word (the script dispatches them before parsing).",
            "    if (( CURRENT > 2 )); then",
            "        case $words[2] in",
        ]
        for name, _, child in tree.extras:
            out += [
                f"            ({q(name)})",
                "                shift words",
                "                (( CURRENT-- ))",
                f"                curcontext=${{curcontext%:*:*}}:{q(prog)}-$words[1]:",
                f"                {fn}_{child}",
                "                return",
                "                ;;",
            ]
        out += ["        esac", "    elif [[ $PREFIX != -* ]]; then"]
        out += _zsh_commands(tree.extras, "        ")
        out.append(f"        _describe -t commands {q(prog + ' command')} commands && ret=0")
        if not (root.positionals or root.commands):
            out.append("        return ret")
        out += ["    fi", f'    {fn}_0 "$@" && ret=0', "    return ret", "}", ""]
    else:
        out += [f'    {fn}_0 "$@"', "}", ""]
    out += [
        "# Autoloaded from $fpath this file is the body of the function: complete now. Sourced: register.",
        f"if [[ $funcstack[1] == {q(entry)} ]]; then",
        f'    {entry} "$@"',
        "else",
        f"    compdef {entry} {q(prog)}",
        "fi",
        "",
    ]
    return "\n".join(out)


# -------------------------------------------------------------------------------------------- fish


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_value(value: _Value) -> str:
    if value.files:
        return "-r -F"
    return "-x" + (" -a " + _fish_quote(" ".join(value.choices)) if value.choices else "")


_FISH_STATE = r"""
function @FN@_state --description 'The node, positional index and whether a flag value is due at the cursor'
    set -l words (commandline -opc)
    set -e words[1]
    set -l node 0
@EXTRA@    set -l pos 0
    set -l due 0
    set -l dashdash 0
    for w in $words
        if test $due = 1
            set due 0
            continue
        end
        if test $dashdash = 0; and string match -q -- '-?*' $w
            if test $w = --
                set dashdash 1
            else if not string match -q -- '*=*' $w; and @FN@_takes $node $w
                set due 1
            end
            continue
        end
        set -l next
        set -l slot (@FN@_slot $node)
        if test "$pos" = "$slot"
            set next (@FN@_command $node $w)
        end
        if test -n "$next"
            set node $next
            set pos 0
        else
            set pos (math $pos + 1)
        end
    end
    echo $node $pos $due
end

function @FN@_at --description 'In node $argv[1] (at positional argument $argv[2]; N+ means N or later)'
    set -l state (string split ' ' -- (@FN@_state))
    test "$state[1]" = "$argv[1]"; or return 1
    set -q argv[2]; or return 0
    test "$state[3]" = 0; or return 1
    if string match -q -- '*+' $argv[2]
        test $state[2] -ge (string trim -r -c + -- $argv[2])
    else
        test $state[2] = $argv[2]
    end
end
"""


_FISH_EXTRA_STATE = """\
    set -l extra
    set -q words[1]; and set extra (@FN@_extra $words[1])
    if test -n "$extra"
        set node $extra
        set -e words[1]
    end
"""
_FISH_EXTRA = r"""
function @FN@_first --description 'Nothing but the command before the cursor'
    test (count (commandline -opc)) = 1
end
"""


def _fish(tree: _Tree, prog: str, fn: str) -> str:
    f = _fish_quote
    nodes = tree.nodes
    out = [
        f"# fish completion for {prog}, printed by `{prog} --completion fish`.",
        f"# Install: {prog} --completion fish > ~/.config/fish/completions/{prog}.fish (print it again after an upgrade).",
        "",
        f"function {fn}_takes --argument-names node flag --description 'Whether the flag takes a value'",
        '    switch "$node $flag"',
    ]
    taking = [f(f"{node.index} {name}") for node in nodes for flag in node.flags if flag.value for name in flag.names]
    if taking:
        out += [f"        case {' '.join(taking)}", "            return 0"]
    out += ["    end", "    return 1", "end", ""]
    out += [f"function {fn}_slot --argument-names node --description 'Where the subcommand goes'", "    switch $node"]
    for node in nodes:
        if node.commands and not any(p.repeats for p in node.positionals):
            out += [f"        case {node.index}", f"            echo {len(node.positionals)}"]
    out += ["    end", "end", ""]
    out += [f"function {fn}_command --argument-names node word --description 'The node of a subcommand'"]
    out.append('    switch "$node $word"')
    for node in nodes:
        for name, _, child in node.commands:
            out += [f"        case {f(f'{node.index} {name}')}", f"            echo {child}"]
    out += ["    end", "end"]
    if tree.extras:
        out += ["", f"function {fn}_extra --argument-names word --description 'The node of a first-word command'"]
        out.append("    switch $word")
        for name, _, child in tree.extras:
            out += [f"        case {f(name)}", f"            echo {child}"]
        out += ["    end", "end"]
        out.append(_FISH_EXTRA.replace("@FN@", fn).rstrip("\n"))
    state = _FISH_STATE.replace("@EXTRA@", _FISH_EXTRA_STATE if tree.extras else "")
    out.append(state.replace("@FN@", fn).rstrip("\n"))
    c = f"complete -c {f(prog)}"
    out += ["", f"{c} -e", f"{c} -f  # no file names but where an argument is a file"]
    for name, help, _ in tree.extras:
        out.append(f"{c} -n {f(fn + '_first')} -a {f(name)} -d {f(help)}")
    for node in nodes:
        at = f"-n {f(f'{fn}_at {node.index}')}"
        for flag in node.flags:
            names = []
            for name in flag.names:
                if name.startswith("--"):
                    names.append(f"-l {f(name[2:])}")
                elif len(name) == 2:
                    names.append(f"-s {f(name[1:])}")
                else:
                    names.append(f"-o {f(name[1:])}")
            takes = f" {_fish_value(flag.value)}" if flag.value is not None else ""
            out.append(f"{c} {at} {' '.join(names)}{takes} -d {f(flag.help)}")
        for index, positional in enumerate(node.positionals):
            where = f"{index}+" if positional.repeats else str(index)
            value = positional.value
            if value.choices or value.files:
                arguments = "-F" if value.files else f"-a {f(' '.join(value.choices))}"
                out.append(f"{c} -n {f(f'{fn}_at {node.index} {where}')} {arguments} -d {f(positional.name)}")
            if positional.repeats:
                break
        else:
            for name, help, _ in node.commands:
                condition = f"{fn}_at {node.index} {len(node.positionals)}"
                out.append(f"{c} -n {f(condition)} -a {f(name)} -d {f(help)}")
    out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ the interface

_GENERATORS: dict[str, Callable[[_Tree, str, str], str]] = {"bash": _bash, "zsh": _zsh, "fish": _fish}


def completion_script(
    parser: argparse.ArgumentParser, shell: str, *, commands: Mapping[str, argparse.ArgumentParser] | None = None
) -> str:
    """The completion script of ``parser``'s command (its ``prog``) for ``shell``, one of ``SHELLS``.

    ``commands`` are subcommands the command dispatches before its parser sees them (name: their parser).

    Raises:
        ValueError: an unknown shell.
    """
    if shell not in _GENERATORS:
        raise ValueError(f"no completion for shell {shell!r} (choose from {', '.join(SHELLS)})")
    prog = parser.prog
    fn = "__" + re.sub(r"\W", "_", prog)
    return _GENERATORS[shell](_read(parser, commands or {}), prog, fn)


class _CompletionAction(argparse.Action):
    """``--completion SHELL``: print the parser's completion script and exit 0, as ``--version`` prints."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        commands: Mapping[str, Callable[[], argparse.ArgumentParser]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)
        self.commands = dict(commands or {})

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        extra = {name: make() for name, make in self.commands.items()}
        try:
            sys.stdout.write(completion_script(parser, str(values), commands=extra))
            sys.stdout.flush()
        except OSError as exc:
            # Later writes, and the interpreter's own flush at exit, go nowhere instead of failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            if not isinstance(exc, BrokenPipeError):  # (a reader that left early wanted no more)
                parser.exit(1, f"{parser.prog}: cannot write the completion script: {exc.strerror or exc}\n")
        parser.exit(0)


def add_completion_flag(
    parser: argparse.ArgumentParser, *, commands: Mapping[str, Callable[[], argparse.ArgumentParser]] | None = None
) -> None:
    """Add ``--completion {bash,zsh,fish}`` to a command's top-level parser (it reads no env var).

    ``commands``: subcommands the command dispatches itself, with a function making each one's parser.
    """
    parser.add_argument(
        "--completion",
        action=_CompletionAction,
        choices=SHELLS,
        metavar="SHELL",
        commands=commands,
        help="print the shell completion script for SHELL (bash, zsh or fish) and exit",
    )
