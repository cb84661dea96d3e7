"""A subworker runs the shop's ORM task too: in a child process it spawns, which sets Django up again.

Its own control plane (running no task itself, ``--local-concurrency 0``) and one
``fastworker-worker``, both loading ``fastworker.client.django.setup``, as in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client, override_settings
from shop.models import Order, Product

from fastworker.client import SyncClient, TaskState
from fastworker.controlplane.testing import run_controlplane, run_worker

pytestmark = pytest.mark.django_db(transaction=True)

MODULES = ["fastworker.client.django.setup"]


@pytest.fixture
def worker_only(fastworker_pythonpath: list[str]) -> Iterator[str]:
    """The discovery address of a control plane whose only runner is a subworker ``w-django``."""
    env = {"PYTHONPATH": os.pathsep.join(fastworker_pythonpath)}  # DJANGO_SETTINGS_MODULE is inherited
    with run_controlplane(task_modules=MODULES, env=env, extra_args=["--local-concurrency", "0"]) as control_plane:
        with run_worker(control_plane.discovery, task_modules=MODULES, env=env, worker_id="w-django"):
            with override_settings(FASTWORKER={**settings.FASTWORKER, "CONTROL_PLANE": control_plane.discovery}):
                yield control_plane.discovery


def test_a_subworker_fulfils_the_order_through_the_orm(client: Client, worker_only: str) -> None:
    Product.objects.create(name="desk", stock=1)

    placed = client.post("/orders/", {"product": "desk", "quantity": "1"}).json()

    with SyncClient(worker_only) as observer:
        info = observer.wait(placed["task_id"], timeout=30)
    assert (info.state, info.worker) == (TaskState.SUCCESS, "w-django")
    assert Order.objects.get(pk=placed["order"]).status == Order.Status.FULFILLED
