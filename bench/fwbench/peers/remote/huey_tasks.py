"""The trivial task for Huey: a RedisHuey on the benchmark's own redis-server (port from BENCH_REDIS_PORT).

``blocking=True`` (the consumer waits on BRPOP, no polling delay) and ``notify_result=True``
(``Result.get(blocking=True)`` waits on BLPOP instead of polling): Huey's fastest Redis setup.
"""

import os

from huey import RedisHuey

huey = RedisHuey(
    "fwbench",
    host="127.0.0.1",
    port=int(os.environ["BENCH_REDIS_PORT"]),
    blocking=True,
    notify_result=True,
)


@huey.task()
def add(x, y):
    """Return ``x + y`` (lets the benchmark check every result)."""
    return x + y
