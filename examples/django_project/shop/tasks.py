"""The shop's tasks. The FastWorker app imports this module in every process (web and daemons)."""

from django.db.models import F

from fastworker.client import task
from shop.models import Order


@task(name="shop.fulfil_order", retries=3, retry_on=("OperationalError",))
def fulfil_order(order_id: int) -> str:
    """Mark an order fulfilled (through the ORM, in whichever process runs the task)."""
    updated = Order.objects.filter(pk=order_id).update(status=Order.Status.FULFILLED, fulfilments=F("fulfilments") + 1)
    if not updated:
        raise Order.DoesNotExist(f"order {order_id} does not exist")
    return f"order {order_id} fulfilled"
