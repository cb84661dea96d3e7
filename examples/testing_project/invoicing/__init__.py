"""Invoicing: tasks (``invoicing.tasks``) and the code that submits them (``invoicing.billing``)."""
