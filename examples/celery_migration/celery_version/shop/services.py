"""Stand-ins for the shop's outside services: a card processor, a mail server, a PDF renderer.

Tests replace them (``monkeypatch``); the tasks only call them.
"""

from __future__ import annotations


class GatewayBusy(Exception):
    """The card processor asked us to try again later."""


def charge(order_id: int, cents: int, *, idempotency_key: str) -> str:
    """Charge an order's card; the same key never charges twice. Returns the charge id."""
    return f"ch_{order_id}_{cents}"


def send_email(to: str, subject: str) -> None:
    """Hand an email to the mail server; raises ConnectionError when it is unreachable."""


def render_pdf(order_id: int) -> str:
    """Render an order's invoice and return where it was stored."""
    return f"invoices/{order_id}.pdf"
