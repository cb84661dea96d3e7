"""Each task on its own, run eagerly."""

from __future__ import annotations

import logging

import pytest
from shop import services
from shop.audit import TRAIL
from shop.tasks import charge_card, daily_sales_report, invoice_total, render_invoice, send_receipt

from fastworker.client import TaskFailed

pytestmark = pytest.mark.usefixtures("fastworker_eager")


async def test_invoice_total_adds_vat() -> None:
    assert await invoice_total.submit([("tea", 320), ("cake", 415)]) == 882
    assert invoice_total([("tea", 100)]) == 120  # still a plain function


async def test_a_busy_gateway_is_retried_with_the_same_idempotency_key(monkeypatch: pytest.MonkeyPatch) -> None:
    keys: list[str] = []

    def busy_twice(order_id: int, cents: int, *, idempotency_key: str) -> str:
        keys.append(idempotency_key)
        if len(keys) < 3:
            raise services.GatewayBusy("try again")
        return f"ch_{order_id}"

    monkeypatch.setattr(services, "charge", busy_twice)
    handle = await charge_card.delay(1000, 7)
    assert await handle.result() == "ch_7"
    assert keys == [handle.id] * 3  # one task id across its attempts
    assert [entry.event for entry in TRAIL] == ["started", "retrying", "started", "retrying", "started"]


async def test_a_gateway_that_stays_busy_fails_with_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def always_busy(order_id: int, cents: int, *, idempotency_key: str) -> str:
        raise services.GatewayBusy("down for maintenance")

    monkeypatch.setattr(services, "charge", always_busy)
    handle = await charge_card.delay(1000, 8)
    with pytest.raises(TaskFailed, match="down for maintenance") as failed:
        await handle.result()
    assert failed.value.info.error is not None and failed.value.info.error.type == "GatewayBusy"
    assert [entry.event for entry in TRAIL].count("started") == 4  # the first run and 3 retries
    assert TRAIL[-1].event == "failed" and TRAIL[-1].task == "shop.charge_card"


async def test_a_declined_card_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def declined(order_id: int, cents: int, *, idempotency_key: str) -> str:
        calls.append(idempotency_key)
        raise ValueError("card declined")

    monkeypatch.setattr(services, "charge", declined)
    handle = await charge_card.delay(1000, 10)
    with pytest.raises(TaskFailed, match="card declined") as failed:
        await handle.result()
    assert failed.value.info.error is not None and failed.value.info.error.type == "ValueError"
    assert len(calls) == 1 and [entry.event for entry in TRAIL] == ["started", "failed"]  # charged once


async def test_receipts_are_retried_while_the_mail_server_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def flaky(to: str, subject: str) -> None:
        attempts.append(to)
        if len(attempts) < 3:
            raise ConnectionError("mail server unreachable")

    monkeypatch.setattr(services, "send_email", flaky)
    assert await send_receipt.submit("ch_9", "ada@example.com") == "receipt ch_9 sent to ada@example.com"
    assert len(attempts) == 3


def test_reports_go_to_the_reports_queue() -> None:
    assert render_invoice.options.queue == "reports"
    assert daily_sales_report.options.queue == "reports"
    assert invoice_total.options.queue is None  # the "default" queue


async def test_the_sales_report_runs_every_morning_at_six() -> None:
    assert daily_sales_report.options.cron == "0 6 * * *"
    assert await daily_sales_report.submit() == "invoices/0.pdf"


async def test_invoice_results_are_kept_ten_minutes() -> None:
    assert render_invoice.options.result_ttl == 600


async def test_tasks_log_what_they_do(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        await render_invoice.submit(12)
    assert "invoice of order 12 rendered to invoices/12.pdf" in caplog.messages
