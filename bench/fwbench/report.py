"""The table, the peer ratios and the JSON report."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fwbench.core import SCENARIOS, Target

HEADER = ("Scenario", "Metric", "Median", "Spread (min–max)", "Target", "Met")
FOOTNOTE = (
    "Targets from the issue, shown, never asserted; 'Met' compares the median and needs every run valid. "
    "RSS in MiB (VmRSS); CPU from /proc/<pid>/stat utime+stime over the timed window."
)


def _all_valid(result: dict[str, Any]) -> bool:
    return bool(result["valid_runs"] == result["repeats"])


def target_met(target: Target, result: dict[str, Any]) -> bool | None:
    """Whether the median meets the target; None when a run was invalid, the metric is missing or N is too small."""
    stat = result["summary"].get(target.metric)
    if stat is None or not _all_valid(result):
        return None
    tasks = result["summary"].get("tasks", {}).get("median", 0)
    if target.min_tasks and tasks < target.min_tasks:
        return None
    return target.met(stat["median"])


def _met_text(target: Target, result: dict[str, Any]) -> str:
    if not _all_valid(result):
        return "n/a (invalid)"
    met = target_met(target, result)
    if met is None:
        tasks = result["summary"].get("tasks", {}).get("median", 0)
        if target.min_tasks and tasks < target.min_tasks:
            return f"n/a (N {tasks:,.0f})"
        return "n/a"
    return "yes" if met else "no"


def table_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, result in results.items():
        sc = SCENARIOS[name]
        summary = result["summary"]
        targets = {t.metric: t for t in sc.targets}
        first = True
        for metric in sc.display:
            stat = summary.get(metric.key)
            target = targets.get(metric.key)
            if stat is None:
                median = spread = "n/a"
                met = "" if target is None else "n/a"
            else:
                median = f"{stat['median']:{metric.fmt}}"
                spread = f"{stat['min']:{metric.fmt}} – {stat['max']:{metric.fmt}}"
                met = "" if target is None else _met_text(target, result)
            rows.append((name if first else "", metric.label, median, spread, target.text if target else "", met))
            first = False
        label = "correctness (all runs)" if sc.needs_controlplane else "runs (errors above)"
        wrong = sum(run.get("wrong", 0) for run in result["runs"])
        lost = sum(run.get("lost", 0) for run in result["runs"])
        errors = sum(1 for run in result["runs"] if "error" in run)
        if sc.needs_controlplane:
            check = f"{result['valid_runs']}/{result['repeats']} valid; wrong {wrong}, lost {lost}"
        else:
            check = f"{result['valid_runs']}/{result['repeats']} runs completed"
        if errors:
            check += f"; {errors} errored"
        elif not _all_valid(result):
            check += "; see problems in the JSON"
        rows.append(("", label, check, "", "", ""))
    return rows


# ------------------------------------------------------------------------------------------ ratios


@dataclass(frozen=True)
class Ratio:
    """Our median against a peer's median, in the direction where bigger is better for us."""

    key: str
    label: str
    ours: tuple[str, str]
    theirs: tuple[str, str]
    lower_is_better: bool = False
    unit: str = "/s"
    target: float | None = None

    def value(self, ours: float, theirs: float) -> float:
        """How many times better ours is (inf when theirs is 0 for throughput)."""
        if self.lower_is_better:
            return theirs / ours if ours > 0 else math.inf
        return ours / theirs if theirs > 0 else math.inf


_HUEY = "Huey"
_REF = "reference"
RATIOS = (
    Ratio("delay_vs_huey", "delay throughput vs Huey", ("delay", "e2e_tps"), ("peer_huey", "tps"), target=10),
    Ratio("delay_many_vs_huey", "delay_many throughput vs Huey", ("delay_many", "e2e_tps"), ("peer_huey", "tps")),
    Ratio(
        "workers2_delay_vs_huey",
        "delay via 2 subworkers vs Huey",
        ("workers2_delay", "e2e_tps"),
        ("peer_huey", "tps"),
    ),
    Ratio(
        "workers2_delay_many_vs_huey",
        "delay_many via 2 subworkers vs Huey",
        ("workers2_delay_many", "e2e_tps"),
        ("peer_huey", "tps"),
    ),
    Ratio(
        "p50_vs_huey",
        "submit p50 vs Huey",
        ("submit_latency", "p50_ms"),
        ("peer_huey", "p50_ms"),
        lower_is_better=True,
        unit=" ms",
        target=2,
    ),
    Ratio(
        "p99_vs_huey",
        "submit p99 vs Huey",
        ("submit_latency", "p99_ms"),
        ("peer_huey", "p99_ms"),
        lower_is_better=True,
        unit=" ms",
    ),
    Ratio(
        "workers1_p50_vs_huey",
        "submit p50 via 1 subworker vs Huey",
        ("workers1_submit_latency", "p50_ms"),
        ("peer_huey", "p50_ms"),
        lower_is_better=True,
        unit=" ms",
    ),
    Ratio(
        "delay_vs_reference_concurrent",
        "delay vs reference correct concurrent (burst)",
        ("delay", "e2e_tps"),
        ("peer_reference", "concurrent_correct_tps"),
        target=50,
    ),
    Ratio(
        "delay_many_vs_reference_concurrent",
        "delay_many vs reference correct concurrent (burst)",
        ("delay_many", "e2e_tps"),
        ("peer_reference", "concurrent_correct_tps"),
    ),
    Ratio(
        "delay_vs_reference_callers",
        "delay vs reference correct, 8 callers",
        ("delay", "e2e_tps"),
        ("peer_reference", "callers_correct_tps"),
    ),
    Ratio(
        "sequential_vs_reference",
        "sequential tasks/s vs reference",
        ("submit_latency", "sequential_tps"),
        ("peer_reference", "sequential_tps"),
    ),
    Ratio(
        "p50_vs_reference",
        "submit p50 vs reference",
        ("submit_latency", "p50_ms"),
        ("peer_reference", "p50_ms"),
        lower_is_better=True,
        unit=" ms",
    ),
    Ratio(
        "idle_rss_vs_reference",
        "idle RSS vs reference",
        ("rss", "idle_rss_mb"),
        ("peer_reference", "idle_rss_mb"),
        lower_is_better=True,
        unit=" MiB",
    ),
)


def _median(results: dict[str, dict[str, Any]], where: tuple[str, str]) -> tuple[float | None, bool]:
    result = results.get(where[0])
    if result is None:
        return None, False
    stat = result["summary"].get(where[1])
    return (None if stat is None else float(stat["median"])), _all_valid(result)


def _fmt(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"
    if unit == " ms":
        return f"{value:.3f} ms"
    return f"{value:,.1f}{unit}"


def compute_ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ratio whose two scenarios ran in this run."""
    out = []
    for ratio in RATIOS:
        ours, ours_valid = _median(results, ratio.ours)
        theirs, theirs_valid = _median(results, ratio.theirs)
        if ours is None or theirs is None:
            continue
        value = ratio.value(ours, theirs)
        peer = _HUEY if ratio.theirs[0] == "peer_huey" else _REF
        times = "∞" if math.isinf(value) else f"{value:,.1f}×"
        if ratio.lower_is_better and value < 1:
            text = f"{_fmt(ours, ratio.unit)} = {1 / value:,.1f}× higher than {peer} ({_fmt(theirs, ratio.unit)})"
        elif ratio.lower_is_better:
            text = f"{_fmt(ours, ratio.unit)} = {times} lower than {peer} ({_fmt(theirs, ratio.unit)})"
        else:
            text = f"{_fmt(ours, ratio.unit)} = {times} {peer} ({_fmt(theirs, ratio.unit)})"
        met = None
        if ratio.target is not None and ours_valid and theirs_valid:
            met = value >= ratio.target
        out.append(
            {
                "key": ratio.key,
                "label": ratio.label,
                "ours": ours,
                "theirs": theirs,
                "ours_scenario": ratio.ours[0],
                "theirs_scenario": ratio.theirs[0],
                "ratio": None if math.isinf(value) else value,
                "infinite": math.isinf(value),
                "text": text,
                "target": ratio.target,
                "met": met,
            }
        )
    return out


def ratio_rows(ratios: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for r in ratios:
        target = "" if r["target"] is None else f"≥ {r['target']:g}×"
        met = "" if r["target"] is None else ("n/a (invalid)" if r["met"] is None else ("yes" if r["met"] else "no"))
        rows.append((r["label"], r["text"], target, met))
    return rows


# ------------------------------------------------------------------------------------------ output


def cpu_line(results: dict[str, dict[str, Any]]) -> str | None:
    """(g) the control plane's CPU per task, local execution vs dispatch to subworkers, in one line."""
    parts = []
    for name in ("delay", "delay_many", "submit_latency", "workers2_delay", "workers2_delay_many"):
        median, _ = _median(results, (name, "cp_cpu_us_per_task"))
        if median is not None:
            parts.append(f"{name} {median:,.1f}")
    return ("Control-plane CPU per task (µs): " + ", ".join(parts)) if parts else None


def flow_line(results: dict[str, dict[str, Any]]) -> str | None:
    """Flow control's cost to unlimited names: ``flow_delay_many`` against the ``delay_many`` scenario of this run."""
    gated, _ = _median(results, ("flow_delay_many", "e2e_tps"))
    plain, _ = _median(results, ("delay_many", "e2e_tps"))
    if gated is None or plain is None or plain <= 0:
        return None
    return (
        f"Flow control: delay_many beside a gated backlog {gated:,.0f}/s = {gated / plain:.2f}× "
        f"the delay_many scenario ({plain:,.0f}/s)"
    )


def _plain_table(title: str, header: Sequence[str], rows: Sequence[tuple[str, ...]], right: set[int]) -> None:
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print()
    print(title)
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        if row[0] and row is not rows[0] and len(header) == len(HEADER):
            print()
        print(line(row))


def print_tables(title: str, rows: list[tuple[str, ...]], ratios: Sequence[dict[str, Any]], notes: list[str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _plain_table(title, HEADER, rows, {2, 3})
        if ratios:
            _plain_table("Peer comparison (same run, medians)", RATIO_HEADER, ratio_rows(ratios), set())
        print()
        for note in [*notes, FOOTNOTE]:
            print(note)
        return
    console = Console() if sys.stdout.isatty() else Console(width=150)
    table = Table(title=title)
    for i, column in enumerate(HEADER):
        table.add_column(column, justify="right" if i in (2, 3) else "left")
    for row in rows:
        if row[0] and row is not rows[0]:
            table.add_section()
        table.add_row(*row)
    console.print(table)
    if ratios:
        peers = Table(title="Peer comparison (same run, medians)")
        for column in RATIO_HEADER:
            peers.add_column(column)
        for row in ratio_rows(ratios):
            peers.add_row(*row)
        console.print(peers)
    for note in [*notes, FOOTNOTE]:
        console.print(note, highlight=False)


RATIO_HEADER = ("Comparison", "Ours = ratio × peer", "Target", "Met")
