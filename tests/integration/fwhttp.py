"""One plain HTTP GET for the tests that probe the daemons' health listeners."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def get(url: str) -> tuple[int, bytes]:
    """The status and body of ``GET url`` (call it from a thread when the server shares the test's loop)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
