"""The transport's own floor: one request/reply round trip between two processes, with no FastWorker code.

Two fresh interpreters on loopback TCP: one answers, the other times sequential round trips of a
100-byte message. Once over pynng (``Req0``/``Rep0``, blocking calls: the cheapest way pynng
offers) and once over plain sockets (``TCP_NODELAY``). A submit through one subworker crosses two
nng round trips (client and control plane, control plane and worker), so twice the nng figure is
what that latency cannot go below on this machine, whatever FastWorker does; the plain-socket
figure shows how much of it is nng's own (its I/O threads hand each message over).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from typing import Any

from fwbench.core import Metric, Options, percentile, scenario

SAMPLES, QUICK_SAMPLES = 3000, 300

_NNG_SERVER = """
import sys, pynng
with pynng.Rep0(listen=sys.argv[1]) as s:
    while True:
        m = s.recv()
        s.send(m)
        if m == b"stop":
            break
"""
_NNG_CLIENT = """
import json, sys, time, pynng
with pynng.Req0(dial=sys.argv[1], recv_timeout=10000) as s:
    s.send(b"warm"); s.recv()
    samples = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter(); s.send(b"x" * 100); s.recv(); samples.append(time.perf_counter() - t)
    s.send(b"stop"); s.recv()
print(json.dumps(samples))
"""
_TCP_SERVER = """
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
with socket.create_server((host, int(port))) as server:
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (m := conn.recv(4096)) and m != b"stop":
        conn.sendall(m)
"""
_TCP_CLIENT = """
import json, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
for _ in range(200):
    try:
        conn = socket.create_connection((host, int(port)))
        break
    except ConnectionRefusedError:
        time.sleep(0.01)
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
conn.sendall(b"warm"); conn.recv(4096)
samples = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); conn.sendall(b"x" * 100); conn.recv(4096); samples.append(time.perf_counter() - t)
conn.sendall(b"stop")
print(json.dumps(samples))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _round_trips(server_code: str, client_code: str, address: str, samples: int) -> list[float]:
    """Seconds per round trip, sorted; the server process is stopped by pid however this ends."""
    server = subprocess.Popen([sys.executable, "-c", server_code, address])
    try:
        done = subprocess.run(
            [sys.executable, "-c", client_code, address, str(samples)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
    return sorted(json.loads(done.stdout))


@scenario(
    "transport_floor",
    "one request/reply round trip between two processes on loopback, over pynng and over plain sockets",
    display=(
        Metric("nng_p50_ms", "pynng Req0/Rep0 round trip p50, ms", ".3f"),
        Metric("nng_p90_ms", "pynng Req0/Rep0 round trip p90, ms", ".3f"),
        Metric("tcp_p50_ms", "plain TCP socket round trip p50, ms", ".3f"),
        Metric("subworker_floor_ms", "2 nng round trips (a submit via a subworker), ms", ".3f"),
    ),
    needs_controlplane=False,
)
async def transport_floor(cp: object, opts: Options) -> dict[str, Any]:
    count = QUICK_SAMPLES if opts.quick else SAMPLES
    nng = await asyncio.to_thread(_round_trips, _NNG_SERVER, _NNG_CLIENT, f"tcp://127.0.0.1:{_free_port()}", count)
    tcp = await asyncio.to_thread(_round_trips, _TCP_SERVER, _TCP_CLIENT, f"127.0.0.1:{_free_port()}", count)
    nng_p50 = percentile(nng, 50) * 1000
    return {
        "nng_p50_ms": nng_p50,
        "nng_p90_ms": percentile(nng, 90) * 1000,
        "tcp_p50_ms": percentile(tcp, 50) * 1000,
        "subworker_floor_ms": 2 * nng_p50,
        "samples": count,
        "valid": True,
        "wrong": 0,
        "lost": 0,
    }
