"""A small web shop: a FastAPI app (``webshop.main``) that hands slow work to FastWorker tasks (``webshop.tasks``)."""
