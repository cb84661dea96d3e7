"""The Celery application: broker, results, routing and the beat schedule."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

app = Celery(
    "shop",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://localhost:6379/1"),
    include=["shop.tasks"],
)
app.conf.update(
    task_default_queue="default",
    result_expires=600,  # invoice PDFs are big: keep results for ten minutes
    task_routes={
        "shop.render_invoice": {"queue": "reports"},
        "shop.daily_sales_report": {"queue": "reports"},
    },
    beat_schedule={
        "daily-sales-report": {"task": "shop.daily_sales_report", "schedule": crontab(hour=6, minute=0)},
    },
)

from shop import audit  # noqa: E402, F401  (connects the signal handlers wherever the app loads)
