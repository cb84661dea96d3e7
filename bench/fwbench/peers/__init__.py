"""Opt-in peer measurements (``--peer-reference``, ``--peer-huey``): each in its own cached venv under bench/.peers/.

Importing this package registers the peer scenarios. The files in ``remote/`` run inside the
peers' virtual environments, never in the benchmark's own interpreter.
"""

from fwbench.peers import huey_redis, reference  # noqa: F401
