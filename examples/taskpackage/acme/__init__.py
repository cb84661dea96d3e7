"""Acme's application package (the part that matters here is ``acme.tasks``)."""
