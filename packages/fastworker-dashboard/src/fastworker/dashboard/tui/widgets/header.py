"""The header: control-plane address and connection state, counters, and throughput/failure sparklines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from fastworker.dashboard.tui.format import format_count, format_duration

#: The banner text while the control plane does not answer.
UNREACHABLE = "control plane unreachable"


def history_series(stats: Mapping[str, Any], field: str) -> list[float]:
    """One number per second from ``stats["history"]`` (oldest first), or an empty list."""
    history = stats.get("history") or []
    series: list[float] = []
    for sample in history if isinstance(history, Sequence) else []:
        if isinstance(sample, Mapping):
            series.append(float(sample.get(field, 0) or 0))
    return series


def counters_text(stats: Mapping[str, Any]) -> Text:
    """The one-line summary of the control plane's counters."""
    text = Text()
    parts: list[tuple[str, str, str]] = [
        ("submitted", format_count(stats.get("submitted")), ""),
        ("succeeded", format_count(stats.get("succeeded")), "green"),
        ("failed", format_count(stats.get("failed")), "red"),
        ("running", format_count(stats.get("running")), "yellow"),
        ("queued", format_count(stats.get("queued")), "cyan"),
        ("throughput", f"{float(stats.get('throughput', 0.0) or 0.0):.1f}/s", "bold"),
        ("workers", format_count(stats.get("workers")), ""),
        ("uptime", format_duration(stats.get("uptime")), ""),
    ]
    for index, (label, value, style) in enumerate(parts):
        if index:
            text.append("   ")
        text.append(f"{label} ", style="dim")
        text.append(value, style=style)
    return text


class TopHeader(Vertical):
    """What the control plane is doing right now, and whether it answers at all."""

    def __init__(self, address: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.address = address

    def compose(self) -> ComposeResult:
        """Title, banner, counters, sparklines."""
        yield Static(self._title(None), id="title")
        yield Static("", id="banner", classes="hidden")
        yield Static(Text("waiting for the control plane...", style="dim"), id="counters")
        with Horizontal(id="sparks"):
            yield Static(Text("throughput", style="dim"), classes="spark-label")
            yield Sparkline([], id="spark-succeeded")
            yield Static(Text("failures", style="dim"), classes="spark-label")
            yield Sparkline([], id="spark-failed")

    def _title(self, connected: bool | None) -> Text:
        text = Text()
        text.append("fastworker-top", style="bold")
        text.append("  ")
        text.append(self.address, style="dim")
        text.append("  ")
        if connected is None:
            text.append("connecting...", style="yellow")
        elif connected:
            text.append("connected", style="green")
        else:
            text.append(UNREACHABLE, style="bold red")
        return text

    def show_stats(self, stats: Mapping[str, Any]) -> None:
        """Show fresh counters and the per-second history."""
        self.query_one("#counters", Static).update(counters_text(stats))
        self.query_one("#spark-succeeded", Sparkline).data = history_series(stats, "succeeded")
        self.query_one("#spark-failed", Sparkline).data = history_series(stats, "failed")

    def show_connected(self) -> None:
        """The control plane answered: hide the banner."""
        self.query_one("#title", Static).update(self._title(True))
        banner = self.query_one("#banner", Static)
        banner.update("")
        banner.add_class("hidden")
        self.remove_class("unreachable")

    def show_unreachable(self, detail: str) -> None:
        """The control plane did not answer: show the banner (the app keeps retrying)."""
        self.query_one("#title", Static).update(self._title(False))
        text = Text(f"{UNREACHABLE} at ", style="bold")
        text.append(self.address)
        text.append(" - retrying")
        if detail:
            text.append(f" ({detail})", style="")
        banner = self.query_one("#banner", Static)
        banner.update(text)
        banner.remove_class("hidden")
        self.add_class("unreachable")

    def show_error(self, detail: str) -> None:
        """The control plane answered with an error (e.g. a wrong secret): show it in the banner."""
        text = Text("error: ", style="bold")
        text.append(detail)
        banner = self.query_one("#banner", Static)
        banner.update(text)
        banner.remove_class("hidden")

    @property
    def banner_text(self) -> str:
        """The banner's plain text ("" when hidden)."""
        banner = self.query_one("#banner", Static)
        if banner.has_class("hidden"):
            return ""
        content = banner.content
        return content.plain if isinstance(content, Text) else str(content)
