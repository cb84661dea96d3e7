"""The shop's views."""

from django.urls import path

from shop import views

urlpatterns = [
    path("orders/", views.place_order, name="place-order"),
    path("orders/<int:order_id>/", views.order_detail, name="order-detail"),
    path("tasks/<str:task_id>/", views.task_status, name="task-status"),
]
