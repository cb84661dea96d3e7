"""The dashboard's routers, one per resource: pages, actions, the JSON API, the live stream and metrics."""
