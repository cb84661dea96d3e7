"""A small shop: orders are totalled, charged and receipted by background tasks."""
