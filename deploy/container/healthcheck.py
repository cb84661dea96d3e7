"""The image's HEALTHCHECK, for docker and podman (Kubernetes ignores it and uses the pod's probes).

One image runs both daemons, so the check starts from what both write: the ready file
(``FASTWORKER_READY_FILE``, set in the image), present from the moment a daemon serves (a worker:
once registered) until it stops. A ready file that names a listener serving ``/healthz`` (a
control plane's ``metrics``, a worker's ``health`` with ``--health-address``) must also answer
``GET /healthz`` with 200: that one turns 503 when the event loop is stuck or the daemon stops.
Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

#: Seconds to wait for /healthz: longer than the 5 s it gives the event loop before answering 503.
TIMEOUT = 7.0


def main() -> int:
    """Check the daemon in this container; print why when it is not healthy."""
    path = os.environ.get("FASTWORKER_READY_FILE", "")
    if not path:
        print("FASTWORKER_READY_FILE is not set: nothing to check")
        return 1
    try:
        with open(path, encoding="utf-8") as handle:
            ready = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"not ready: {path}: {exc}")
        return 1
    listener = (ready.get("metrics") or ready.get("health")) if isinstance(ready, dict) else None
    if not isinstance(listener, str) or not listener:
        return 0  # a worker without --health-address (registered), or a control plane with --no-metrics
    # A wildcard bind is reached on loopback; the listener answers any Host when bound beyond it.
    url = listener.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:") + "/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY
    try:
        with opener.open(url, timeout=TIMEOUT) as answer:
            return 0 if answer.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}")
    except OSError as exc:
        print(f"{url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
