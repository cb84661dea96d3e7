"""The shop app: products, orders, the task that fulfils an order, and the views."""
