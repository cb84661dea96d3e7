"""Placing an order (saved and queued in one transaction), reading it, and reading a task's state."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from fastworker.client import TaskInfo, TaskNotFound
from fastworker.client.django import delay_on_commit
from shop.models import Order, Product
from shop.tasks import fulfil_order


class OutOfStock(Exception):
    """Fewer items left than ordered."""


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """Save an order and queue its fulfilment: both happen, or (out of stock) neither does."""
    try:
        quantity = int(request.POST.get("quantity", "1"))
        product = Product.objects.get(name=request.POST.get("product", ""))
    except (ValueError, Product.DoesNotExist):
        return JsonResponse({"error": "give an existing product and a quantity"}, status=400)
    try:
        with transaction.atomic():
            order = Order.objects.create(product=product, quantity=quantity)
            # The task id is known at once; the task is submitted only when this block commits.
            order.task_id = delay_on_commit(fulfil_order, order.pk)
            order.save(update_fields=["task_id"])
            _take_from_stock(product.pk, quantity)  # may raise: then no order, and no task
    except OutOfStock as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"order": order.pk, "task_id": order.task_id}, status=202)


def _take_from_stock(product_id: int, quantity: int) -> None:
    product = Product.objects.select_for_update().get(pk=product_id)
    if product.stock < quantity:
        raise OutOfStock(f"only {product.stock} {product.name} left, {quantity} ordered")
    product.stock -= quantity
    product.save(update_fields=["stock"])


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    """An order and the state of its task (a sync view: ``handle_sync`` blocks)."""
    try:
        order = Order.objects.get(pk=order_id)
    except Order.DoesNotExist:
        return JsonResponse({"error": f"no order {order_id}"}, status=404)
    info = fulfil_order.handle_sync(order.task_id).status()
    return JsonResponse(
        {"order": order.pk, "status": order.status, "fulfilments": order.fulfilments, "task": _task(info)}
    )


@require_GET
async def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """A task's state, result and error (an async view: ``await`` the typed handle)."""
    try:
        info = await fulfil_order.handle(task_id).status()
    except TaskNotFound:
        return JsonResponse({"error": f"no task {task_id}"}, status=404)
    return JsonResponse(_task(info))


def _task(info: TaskInfo) -> dict[str, object]:
    return {
        "id": info.id,
        "state": info.state.value,
        "attempts": info.attempts,
        "worker": info.worker,
        "result": info.result,
        "error": None if info.error is None else f"{info.error.type}: {info.error.message}",
    }
