"""/metrics: the Prometheus text exposition format, parsed back line by line."""

from __future__ import annotations

import math
import re

import httpx
from web_fakes import FakeAdminClient

from fastworker.dashboard.web.exposition import Metric, escape_label_value, format_value, render

# name{label="value",...} value  (label values may hold escaped quotes, backslashes and newlines)
SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)\})?'
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|NaN|Inf))$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[str, str], dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(help by name, type by name, samples); fails on any line that is not valid exposition text."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, text_ = line[7:].partition(" ")
            helps[name] = text_
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge"), line
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            labels = {
                k: v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
                for k, v in LABEL.findall(match["labels"] or "")
            }
            samples.append((match["name"], labels, float(match["value"])))
    return helps, types, samples


async def test_metrics_endpoint_speaks_the_prometheus_text_format(web: httpx.AsyncClient) -> None:
    response = await web.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    helps, types, samples = parse(response.text)
    # Every sampled family is announced with HELP and TYPE
    for name, _, _ in samples:
        assert name in helps and name in types, name
    values = {(name, tuple(sorted(labels.items()))): value for name, labels, value in samples}
    assert values[("fastworker_tasks_submitted_total", ())] == 12
    assert values[("fastworker_tasks_succeeded_total", ())] == 9
    assert values[("fastworker_tasks_failed_total", ())] == 2
    assert values[("fastworker_tasks_cancelled_total", ())] == 1
    assert values[("fastworker_tasks_retried_total", ())] == 0
    assert values[("fastworker_tasks_running", ())] == 0
    assert values[("fastworker_tasks_scheduled", ())] == 0
    assert values[("fastworker_workers_online", ())] == 1
    assert values[("fastworker_result_cache_entries", ())] == 12
    assert values[("fastworker_result_cache_hits_total", ())] == 3
    assert not any(name.startswith("fastworker_throughput") for name, _ in values)  # rates are rate()'s job
    assert values[("fastworker_uptime_seconds", ())] == 3725.0
    assert values[("fastworker_rejected_frames_total", ())] == 0
    assert values[("fastworker_queue_depth", (("priority", "high"),))] == 0
    assert ("fastworker_queue_oldest_age_seconds", (("priority", "low"),)) in values
    assert values[("fastworker_worker_in_flight", (("worker", "w1"),))] == 1
    assert values[("fastworker_worker_capacity", (("worker", "w1"),))] == 4
    assert types["fastworker_tasks_submitted_total"] == "counter"
    assert types["fastworker_queue_depth"] == "gauge"


async def test_label_values_are_escaped(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    nasty = 'a"b\\c\nd'
    fake.worker_list[0]["worker_id"] = nasty
    text = (await web.get("/metrics")).text
    assert 'fastworker_worker_capacity{worker="a\\"b\\\\c\\nd"} 4' in text
    _, _, samples = parse(text)
    assert {"worker": nasty} in [labels for name, labels, _ in samples if name == "fastworker_worker_capacity"]


def test_exposition_helpers() -> None:
    assert escape_label_value('x"y') == 'x\\"y'
    assert format_value(3) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.nan) == "NaN"
    assert format_value(math.inf) == "+Inf"
    text = render([Metric("m_total", "counter", "Help with \\ and\nnewline.").add(1, a="b")])
    assert text == '# HELP m_total Help with \\\\ and\\nnewline.\n# TYPE m_total counter\nm_total{a="b"} 1\n'


async def test_metrics_answer_503_when_the_control_plane_is_down(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    fake.unavailable = True
    assert (await web.get("/metrics")).status_code == 503
