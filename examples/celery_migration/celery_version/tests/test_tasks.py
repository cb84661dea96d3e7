"""Each task on its own, run eagerly."""

from __future__ import annotations

import logging

import pytest
from celery.schedules import crontab
from shop import services
from shop.audit import TRAIL
from shop.celery_app import app
from shop.tasks import charge_card, daily_sales_report, invoice_total, render_invoice, send_receipt


def test_invoice_total_adds_vat() -> None:
    assert invoice_total.delay([("tea", 320), ("cake", 415)]).get() == 882
    assert invoice_total([("tea", 100)]) == 120  # still a plain function


def test_a_busy_gateway_is_retried_with_the_same_idempotency_key(monkeypatch: pytest.MonkeyPatch) -> None:
    keys: list[str] = []

    def busy_twice(order_id: int, cents: int, *, idempotency_key: str) -> str:
        keys.append(idempotency_key)
        if len(keys) < 3:
            raise services.GatewayBusy("try again")
        return f"ch_{order_id}"

    monkeypatch.setattr(services, "charge", busy_twice)
    result = charge_card.delay(1000, 7)
    assert result.get() == "ch_7"
    assert keys == [result.id] * 3  # one task id across its attempts
    assert [entry.event for entry in TRAIL] == ["started", "retrying", "started", "retrying", "started"]


def test_a_gateway_that_stays_busy_fails_with_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def always_busy(order_id: int, cents: int, *, idempotency_key: str) -> str:
        raise services.GatewayBusy("down for maintenance")

    monkeypatch.setattr(services, "charge", always_busy)
    result = charge_card.delay(1000, 8)
    with pytest.raises(services.GatewayBusy, match="down for maintenance"):
        result.get()
    assert [entry.event for entry in TRAIL].count("started") == 4  # the first run and 3 retries
    assert TRAIL[-1].event == "failed" and TRAIL[-1].task == "shop.charge_card"


def test_a_declined_card_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def declined(order_id: int, cents: int, *, idempotency_key: str) -> str:
        calls.append(idempotency_key)
        raise ValueError("card declined")

    monkeypatch.setattr(services, "charge", declined)
    result = charge_card.delay(1000, 10)
    with pytest.raises(ValueError, match="card declined"):
        result.get()
    assert len(calls) == 1 and [entry.event for entry in TRAIL] == ["started", "failed"]  # charged once


def test_receipts_are_retried_while_the_mail_server_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def flaky(to: str, subject: str) -> None:
        attempts.append(to)
        if len(attempts) < 3:
            raise ConnectionError("mail server unreachable")

    monkeypatch.setattr(services, "send_email", flaky)
    assert send_receipt.delay("ch_9", "ada@example.com").get() == "receipt ch_9 sent to ada@example.com"
    assert len(attempts) == 3


def test_reports_go_to_the_reports_queue() -> None:
    assert app.amqp.router.route({}, render_invoice.name)["queue"].name == "reports"
    assert app.amqp.router.route({}, daily_sales_report.name)["queue"].name == "reports"
    assert app.amqp.router.route({}, invoice_total.name)["queue"].name == "default"


def test_the_sales_report_runs_every_morning_at_six() -> None:
    entry = app.conf.beat_schedule["daily-sales-report"]
    assert entry["task"] == daily_sales_report.name
    assert entry["schedule"] == crontab(hour=6, minute=0)
    assert daily_sales_report.delay().get() == "invoices/0.pdf"


def test_results_are_kept_ten_minutes() -> None:
    assert app.conf.result_expires == 600


def test_tasks_log_what_they_do(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        render_invoice.delay(12).get()
    assert "invoice of order 12 rendered to invoices/12.pdf" in caplog.messages
