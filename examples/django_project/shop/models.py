"""Products with stock, and the orders that take from it."""

from django.db import models


class Product(models.Model):
    """Something to sell, and how many are left."""

    name = models.CharField(max_length=100, unique=True)
    stock = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    """One order: placed by the view, fulfilled by the ``shop.fulfil_order`` task."""

    class Status(models.TextChoices):
        """Where an order is: placed by the view, fulfilled by the task."""

        PLACED = "placed"
        FULFILLED = "fulfilled"

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLACED)
    #: How many times the task ran for this order: 1, since it is submitted once, after the commit.
    fulfilments = models.PositiveIntegerField(default=0)
    #: The id of the task that fulfils it, chosen before the task is submitted.
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order {self.pk}: {self.quantity} x {self.product_id} ({self.status})"
