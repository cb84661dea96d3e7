"""The shop's orders and their tasks, eagerly and on a real control plane (see conftest.py).

Transactional tests (``transaction=True``): the views' transactions really commit, so
``delay_on_commit`` submits when they do, and the control plane's process reads the committed rows.
"""

from __future__ import annotations

import uuid
from typing import Protocol

import pytest
from django.db import transaction
from django.test import Client
from shop.models import Order, Product
from shop.tasks import fulfil_order

from fastworker.client import TaskInfo, TaskState
from fastworker.client.django import delay_on_commit

pytestmark = pytest.mark.django_db(transaction=True)


class Tasks(Protocol):
    """The mode a test runs in (conftest.py's ``tasks`` fixture): eager, or a real control plane."""

    worker: str  # the TaskInfo.worker of the tasks it runs

    def submitted(self) -> int:
        """How many tasks were submitted so far."""
        ...

    def wait(self, task_id: str) -> TaskInfo:
        """The task's final info (bounded wait)."""
        ...


def test_a_committed_order_is_fulfilled_by_its_task_exactly_once(client: Client, tasks: Tasks) -> None:
    product = Product.objects.create(name="book", stock=5)
    before = tasks.submitted()

    response = client.post("/orders/", {"product": "book", "quantity": "2"})

    assert response.status_code == 202, response.content
    order_id, task_id = response.json()["order"], response.json()["task_id"]
    info = tasks.wait(task_id)
    assert (info.state, info.result, info.worker) == (TaskState.SUCCESS, f"order {order_id} fulfilled", tasks.worker)
    assert tasks.submitted() - before == 1
    order = Order.objects.get(pk=order_id)
    assert (order.status, order.fulfilments, order.task_id) == (Order.Status.FULFILLED, 1, task_id)
    product.refresh_from_db()
    assert product.stock == 3


def test_a_rolled_back_order_submits_nothing(client: Client, tasks: Tasks) -> None:
    Product.objects.create(name="lamp", stock=1)
    before = tasks.submitted()

    response = client.post("/orders/", {"product": "lamp", "quantity": "3"})

    assert response.status_code == 409, response.content
    assert response.json() == {"error": "only 1 lamp left, 3 ordered"}
    assert not Order.objects.exists()
    assert Product.objects.get(name="lamp").stock == 1
    assert tasks.submitted() == before


def test_the_views_read_the_order_and_its_task(client: Client, tasks: Tasks) -> None:
    Product.objects.create(name="pen", stock=10)
    placed = client.post("/orders/", {"product": "pen", "quantity": "1"}).json()
    tasks.wait(placed["task_id"])

    state = client.get(f"/tasks/{placed['task_id']}/")  # an async view
    detail = client.get(f"/orders/{placed['order']}/")  # a sync view

    assert state.status_code == 200, state.content
    assert state.json()["state"] == "SUCCESS" and state.json()["result"] == f"order {placed['order']} fulfilled"
    assert detail.json()["status"] == "fulfilled" and detail.json()["task"]["state"] == "SUCCESS"
    assert client.get(f"/tasks/{uuid.uuid4()}/").status_code == 404


def test_only_the_outermost_commit_submits_and_a_rolled_back_savepoint_never(tasks: Tasks) -> None:
    product = Product.objects.create(name="cup", stock=10)
    before = tasks.submitted()

    with transaction.atomic():
        kept = Order.objects.create(product=product, quantity=1)
        with transaction.atomic():  # a savepoint: its commit is not the transaction's
            kept_task = delay_on_commit(fulfil_order, kept.pk)
        assert tasks.submitted() == before  # not yet: the transaction is still open
        try:
            with transaction.atomic():
                dropped = Order.objects.create(product=product, quantity=1)
                delay_on_commit(fulfil_order, dropped.pk)
                raise RuntimeError("roll this savepoint back")
        except RuntimeError:
            pass

    assert tasks.wait(kept_task).state is TaskState.SUCCESS
    assert tasks.submitted() - before == 1
    assert list(Order.objects.values_list("pk", "fulfilments")) == [(kept.pk, 1)]


def test_outside_a_transaction_it_submits_at_once(tasks: Tasks) -> None:
    order = Order.objects.create(product=Product.objects.create(name="hat", stock=1), quantity=1)
    before = tasks.submitted()

    task_id = delay_on_commit(fulfil_order, order.pk)  # autocommit: Django runs the callback now

    assert tasks.submitted() - before == 1
    assert tasks.wait(task_id).state is TaskState.SUCCESS
