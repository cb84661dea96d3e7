"""Owns every socket of the control plane and wires them to the coordinator: the daemon's I/O boundary."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pynng

from fastworker.client._nng import server_recv_max_size
from fastworker.client._readyfile import remove_own_ready_file, remove_ready_file, write_ready_file
from fastworker.client.home import Home, close_home_clients, set_home
from fastworker.client.task import TaskRegistry
from fastworker.client.tls import TlsFiles, tls_address
from fastworker.controlplane.admission import ConnectionAdmission, ConnectionEvent, raise_open_files_limit
from fastworker.controlplane.api import ClientApi
from fastworker.controlplane.coordinator import Coordinator
from fastworker.controlplane.discovery import DISCOVERY_RECV_MAX_SIZE, DiscoveryPublisher
from fastworker.controlplane.dispatcher import Dispatcher
from fastworker.controlplane.fleet import Fleet
from fastworker.controlplane.journal import Journal
from fastworker.controlplane.lograte import RateLimitedLog
from fastworker.controlplane.metricsserver import MetricsServer
from fastworker.controlplane.periodic import MISFIRE_GRACE, PERIODIC_LEAD, PeriodicScheduler, PeriodicSpec, schedule_of
from fastworker.controlplane.replyserver import ReplyServer, Request, listener_url
from fastworker.controlplane.settings import ControlPlaneSettings
from fastworker.controlplane.snapshot import take_snapshot
from fastworker.controlplane.version import __version__
from fastworker.controlplane.workers_api import WorkerApi
from fastworker.protocol.addresses import parse_address
from fastworker.protocol.auth import FrameAuth
from fastworker.protocol.v1.discovery_pb2 import Announcement
from fastworker.protocol.v1.task_pb2 import TaskDefinition
from fastworker.worker._stallwatch import LoopStallWatch
from fastworker.worker._stopsignals import answer_signals
from fastworker.worker.policy import options_policy

logger = logging.getLogger(__name__)

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*", ""})


def advertised(bound: str, advertise_host: str | None) -> str:
    """The address to announce for a bound one: peers on other hosts must be able to dial it.

    ``advertise_host`` replaces the host when given; a wildcard bind (0.0.0.0, ::) announces this
    machine's name, since no peer can dial a wildcard.
    """
    if not bound:
        return bound
    address = parse_address(bound)
    if address.scheme in ("ipc", "inproc") or address.port is None:
        return bound
    if advertise_host:
        return address.with_host(advertise_host).url
    if address.host in _WILDCARD_HOSTS:
        return address.with_host(socket.getfqdn()).url
    return bound


def name_problem(host: str) -> str | None:
    """Why peers on other hosts may not reach ``host`` (this machine's name, as announced), or None.

    A name that resolves only to loopback here (``/etc/hosts`` often maps it to 127.0.1.1), or not
    at all, is announced all the same, and remote workers see the announcements but never connect.
    """
    try:
        resolved = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return f"this machine's name {host!r}, which does not resolve here: peers on other hosts may not reach it"
    if all(ipaddress.ip_address(ip.split("%")[0]).is_loopback for ip in resolved):
        shown = ", ".join(sorted(resolved))
        return f"this machine's name {host!r}, which resolves to {shown} here: peers on other hosts cannot reach it"
    return None


def periodic_specs(definitions: Iterable[TaskDefinition]) -> list[PeriodicSpec]:
    """The periodic schedules among task definitions (``every`` or ``cron`` set), with their ``allow_overlap``."""
    return [spec for d in definitions if (spec := schedule_of(d)) is not None]


class CannotListen(Exception):
    """A listener could not be opened (an address in use, no permission): the start fails naming it."""


def _listen(what: str, address: str, listen: Callable[[], Any]) -> Any:
    """``listen()``, with a failure named by the flag and the address it concerns."""
    try:
        return listen()
    except (pynng.NNGException, OSError) as exc:
        raise CannotListen(f"cannot listen on the {what} {address}: {exc}") from exc


class ControlPlane:
    """One control-plane process: sockets, coordinator, discovery, and the shutdown sequence."""

    def __init__(self, settings: ControlPlaneSettings, registry: TaskRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.instance_id = uuid.uuid4().hex
        self.addresses: dict[str, str | None] = {}
        #: The client and dispatch addresses every announcement tells peers to dial (worked out once:
        #: a wildcard bind names this machine, a DNS lookup that the announcements repeated 8 times a second).
        self._announced: tuple[str, str] = ("", "")
        self._stop = asyncio.Event()
        self._sockets: list[pynng.Socket] = []
        self._servers: list[ReplyServer] = []
        self.coordinator: Coordinator | None = None
        self.fleet: Fleet | None = None
        self.dispatcher: Dispatcher | None = None
        self.periodic: PeriodicScheduler | None = None
        self._publisher: DiscoveryPublisher | None = None
        self._dashboard: Any = None
        self._auth: FrameAuth | None = None
        #: Task names the last sealed announcement listed.
        self._announced_names: frozenset[str] = frozenset()
        self._tls: TlsFiles | None = None
        self._refusal_log = RateLimitedLog(logger)
        self.journal: Journal | None = None
        self._metrics: MetricsServer | None = None
        self._stall_watch: LoopStallWatch | None = None

    async def start(self) -> None:
        """Replay the journal (if any), bind every socket, start serving, and write the ready file."""
        s = self.settings
        loop = asyncio.get_running_loop()
        if s.ready_file:
            remove_ready_file(s.ready_file)  # a killed predecessor's must not say this one serves
        # Each connection holds a descriptor: the caps below, not the OS, should be what refuses them.
        open_files = raise_open_files_limit()
        if open_files < 2 * s.max_connections + 64:
            logger.warning("only %d open files allowed: fewer than two sockets' --max-connections", open_files)
        if s.journal:
            self.journal = Journal(
                s.journal,
                result_ttl=s.result_ttl,
                result_cache_size=s.result_cache_size,
                retries_for=self._registered_retries,
            )
            self.journal.start(loop)
        self.coordinator = Coordinator(
            loop,
            self.registry,
            local_concurrency=s.local_concurrency,
            local_pool=s.local_pool,
            local_queues=s.queues,
            result_cache_size=s.result_cache_size,
            result_cache_bytes=s.result_cache_mb * 1024 * 1024,
            result_ttl=s.result_ttl,
            max_queue=s.max_queue,
            allow_pickle=s.allow_pickle,
            task_modules=s.task_modules,
            sys_path=(os.getcwd(),),
            journal=self.journal,
        )
        if s.misfire_policy == "skip":  # set before the journal's runs come back: a run of a missed slot must not start
            self.coordinator.periodic_missed_after = MISFIRE_GRACE
        if self.journal is not None:
            self.coordinator.restore(self.journal.recovered)
        api = ClientApi(self.coordinator, max_frame_size=s.max_frame_size, instance_id=self.instance_id)
        # Requests must be addressed to this instance: a frame captured before a restart is refused after it.
        self._auth = FrameAuth(s.secret, identity=self.instance_id) if s.secret else None

        def serve_client(request: Request) -> None:
            api.handle(request.data, request.reply)

        self._tls = s.tls
        client_address = self._serve(
            pynng.Rep0, self._address(s.client_address), serve_client, loop, "--client-address"
        )

        self.fleet = Fleet()
        self.dispatcher = Dispatcher(
            self.coordinator,
            self.fleet,
            heartbeat_interval=s.heartbeat_interval,
            heartbeat_timeout=s.heartbeat_timeout,
            on_fleet_change=self._fleet_changed,
            instance_id=self.instance_id,
            max_worker_tasks=s.max_worker_tasks,
        )
        workers_api = WorkerApi(
            self.coordinator,
            self.dispatcher,
            instance_id=self.instance_id,
            heartbeat_interval=s.heartbeat_interval,
            heartbeat_timeout=s.heartbeat_timeout,
            max_frame_size=s.max_frame_size,
        )
        dispatch_address = self._serve(
            pynng.Rep0, self._address(s.dispatch_address), workers_api.handle, loop, "--dispatch-address"
        )
        dispatch_socket = self._sockets[-1]
        dispatcher = self.dispatcher

        def connection_dropped(pipe: pynng.Pipe) -> None:
            # Runs on an nng thread: hand over to the loop (never touch sockets here).
            pipe_id = pipe.id
            try:
                loop.call_soon_threadsafe(dispatcher.pipe_closed, pipe_id)
            except RuntimeError:
                pass  # the loop is closed: shutting down

        dispatch_socket.add_post_pipe_remove_cb(connection_dropped)

        # Subscribers send nothing: a peer that does is cut off at its frame's length, before nng
        # buffers any of it (without a limit, anyone who dials could make it read gigabytes).
        pub = pynng.Pub0(recv_max_size=DISCOVERY_RECV_MAX_SIZE)
        self._sockets.append(pub)
        requested = self._address(s.discovery_address)
        # Subscribers say nothing, so none is closed for silence; the caps hold here too (clients
        # never closed, each redialling, filled it from one host), and a full one makes room by
        # closing a connection of the most crowded address (silent peers filled it for good).
        discovery_admission = self._bound_connections(pub, requested, loop, silent_peers=True)
        if self._tls is not None:
            pub.tls_config = self._tls.server_config()
        discovery_address = listener_url(
            _listen("--discovery-address", requested, lambda: pub.listen(requested)), requested
        )
        discovery_admission.name = discovery_address
        self.addresses = {
            "discovery": discovery_address,
            "client": client_address,
            "dispatch": dispatch_address,
            "dashboard": None,
            "metrics": None,
        }
        self._announced = (
            advertised(client_address, s.advertise_host),
            advertised(dispatch_address, s.advertise_host),
        )
        home = self._home(discovery_address)
        set_home(home)  # tasks that submit tasks reach this control plane, with its secret and TLS
        self._publisher = DiscoveryPublisher(pub, self._describe, s.announce_interval, auth=self._auth)
        self._publisher.start()
        self.periodic = PeriodicScheduler(
            periodic_specs(task.to_definition() for task in self.registry),
            submit=self.coordinator.submit_periodic,
            is_running=self.coordinator.is_active,
            count_skipped=self.coordinator.metrics.periodic_slots_skipped,
            misfire=s.misfire_policy,
            last_runs=self.journal.recovered.last_runs if self.journal is not None else None,
            local_names=self.registry.names(),
            lead=PERIODIC_LEAD,
        )
        self.periodic.start(loop)
        if not s.no_metrics:
            self._start_metrics(loop)
        await self._start_dashboard(home)
        exposed = [
            url for url in (discovery_address, client_address, dispatch_address) if not parse_address(url).is_loopback()
        ]
        if exposed and not s.secret:
            logger.warning(
                "listening beyond loopback (%s) with no --secret: anyone who reaches these ports can submit "
                "tasks, read results and act as a subworker; set --secret (and TLS) or bind to loopback",
                ", ".join(exposed),
            )
        self._stall_watch = LoopStallWatch(loop, what="control plane's event loop")
        self._stall_watch.start()
        if s.ready_file:
            write_ready_file(s.ready_file, self.addresses)
        logger.info(
            "control plane %s serving: discovery %s, clients %s, dispatch %s; %d tasks registered; "
            "local concurrency %d",
            self.instance_id,
            discovery_address,
            client_address,
            dispatch_address,
            len(self.registry),
            s.local_concurrency,
        )
        self._say_what_is_announced(client_address, dispatch_address)

    def _say_what_is_announced(self, client_address: str, dispatch_address: str) -> None:
        """Log the addresses peers are told to dial when they differ from the bound ones (and why they may fail)."""
        if self._announced == (client_address, dispatch_address):
            return
        logger.info("announcing clients %s, dispatch %s", *self._announced)
        if not self.settings.advertise_host and (problem := name_problem(socket.getfqdn())) is not None:
            logger.warning(
                "bound to a wildcard address, this control plane announces %s; pass --advertise-host", problem
            )

    def _start_metrics(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve /metrics and /healthz on ``--metrics-address`` (a port in use stops the start, as for any listener)."""
        coordinator = self.coordinator
        assert coordinator is not None

        def healthy() -> str | None:
            return None if coordinator.accepting else "the control plane is shutting down"

        address = self.settings.metrics_address
        self._metrics = _listen(
            "--metrics-address",
            address,
            lambda: MetricsServer(loop, address, lambda: take_snapshot(coordinator, self.fleet), healthy),
        )
        self._metrics.start()
        self.addresses["metrics"] = self._metrics.url
        logger.info("metrics on %s/metrics, health on %s/healthz", self._metrics.url, self._metrics.url)

    def _home(self, discovery_address: str) -> Home:
        """How code in this process reaches this control plane as a client (tasks, the dashboard).

        Its discovery address (a wildcard host dialled as loopback) and secret; under TLS, this
        control plane's own certificate (mutual TLS asks for one), with no peer to verify: it is itself.
        """
        s = self.settings
        address = parse_address(discovery_address)
        if address.host in _WILDCARD_HOSTS:
            discovery_address = address.with_host("127.0.0.1").url
        own = TlsFiles(cert=s.tls_cert, key=s.tls_key, verify=False) if self._tls else None
        return Home(discovery_address, secret=s.secret, tls=own)

    async def _start_dashboard(self, home: Home) -> None:
        """Serve the web dashboard from this process when ``fastworker-dashboard`` is installed.

        Its port is bound now and its web stack loaded when the first browser connects
        (``fastworker.dashboard.web.lazy``): most control planes never show the page, and the stack
        costs ~23 MiB. It runs in threads of its own and reads this control plane through a client
        like any remote dashboard does, so a slow page never stalls dispatch. Imported by name: the
        dashboard depends on the client, not the other way round, and stays optional.
        """
        s = self.settings
        if s.no_dashboard:
            return
        try:
            lazy = importlib.import_module("fastworker.dashboard.web.lazy")
            listen = importlib.import_module("fastworker.dashboard.web.listen")
            exposure = importlib.import_module("fastworker.dashboard.web.exposure")
            hosts = importlib.import_module("fastworker.dashboard.web.hosts")
        except ImportError:
            logger.info("fastworker-dashboard is not installed: serving no web dashboard")
            return
        try:
            host, port = listen.parse_address(s.dashboard_address)
            hosts.HostAllowList(
                bind_host=host, extra=tuple(s.dashboard_hosts)
            )  # a bad name fails the start, not the first page
        except ValueError as exc:  # the settings checked the address: a --dashboard-host name, then
            raise CannotListen(f"cannot serve the web dashboard on {s.dashboard_address}: {exc}") from exc
        # Raises UnprotectedDashboard (start fails, the process exits 1): no password past loopback.
        protected = bool(s.dashboard_password or s.secret)  # the app's password defaults to the secret
        exposed = exposure.refuse_unprotected(host, port, protected=protected, insecure=s.dashboard_insecure)

        def make_app() -> Any:
            web_app = importlib.import_module("fastworker.dashboard.web.app")
            return web_app.create_app(
                control_plane=home.address,
                secret=s.secret,
                read_only=s.dashboard_read_only,
                tls=home.tls,
                password=s.dashboard_password,  # None: the secret
                hosts=s.dashboard_hosts,
                bind_host=host,
            )

        # A port in use stops the start, as for every other listener.
        self._dashboard = _listen(
            "--dashboard-address", s.dashboard_address, lambda: lazy.LazyDashboard(make_app, host, port)
        )
        self.addresses["dashboard"] = self._dashboard.url
        logger.info("web dashboard on %s (bound to %s)", self._dashboard.url, self._dashboard.bound)
        if exposed and not protected:
            logger.warning(
                "the web dashboard listens on %s with neither secret nor password (--dashboard-insecure): "
                "anyone who reaches it can read tasks and act",
                self._dashboard.bound,
            )

    def _serve(
        self,
        factory: type[pynng.Rep0],
        address: str,
        handler: Callable[[Request], None],
        loop: asyncio.AbstractEventLoop,
        what: str,
    ) -> str:
        sock = factory(recv_max_size=server_recv_max_size(self.settings.max_frame_size))
        self._sockets.append(sock)
        admission = self._bound_connections(sock, address, loop)
        if self._tls is not None:
            sock.tls_config = self._tls.server_config()
        bound = listener_url(_listen(what, address, lambda: sock.listen(address)), address)
        admission.name = bound  # the log names the socket hit, not "port 0"
        server = ReplyServer(
            sock,
            handler,
            loop,
            auth=self._auth,
            on_refused=self._refused,
            admission=admission,
            on_event=self._connection_event,
        )
        server.start()
        self._servers.append(server)
        return bound

    def _bound_connections(
        self, sock: pynng.Socket, address: str, loop: asyncio.AbstractEventLoop, *, silent_peers: bool = False
    ) -> ConnectionAdmission:
        """Cap a listening socket's connections, overall and per peer address, and expire silent ones.

        Each connection costs buffers, contexts and a descriptor; see ``fastworker.controlplane.admission``.
        ``silent_peers`` (a socket whose peers never send): none expires, and a full cap closes the
        oldest connection of the address holding the most.
        """
        s = self.settings
        admission = ConnectionAdmission(
            name=address,
            max_connections=s.max_connections,
            max_per_peer=s.max_connections_per_peer,
            idle_timeout=s.idle_connection_timeout,
            silent_peers=silent_peers,
        )
        admission.attach(sock, loop, self._connection_event)
        return admission

    def _connection_event(self, event: ConnectionEvent) -> None:
        """Count a refused, idle-closed or unread-dropped connection in the stats (on the loop)."""
        counters = self.coordinator.counters if self.coordinator is not None else None
        if counters is None:
            return
        if event is ConnectionEvent.REFUSED:
            counters.connections_refused += 1
        elif event is ConnectionEvent.IDLE_CLOSED:
            counters.connections_idle_closed += 1
        else:
            counters.connections_dropped_unread += 1

    def _address(self, address: str) -> str:
        """The address to listen on: upgraded to ``tls+tcp://`` when TLS is configured."""
        return tls_address(address) if self._tls is not None else address

    def _refused(self, reason: str) -> None:
        """Count (and log, at most once a second) a frame that failed authentication."""
        coordinator = self.coordinator
        if coordinator is not None:
            coordinator.counters.rejected_frames += 1
            coordinator.counters.auth_failures += 1
        total = coordinator.counters.auth_failures if coordinator is not None else 0
        self._refusal_log.warning("refused an unauthenticated frame (%d so far): %s", total, reason)

    def _registered_retries(self, name: str) -> int | None:
        """A locally registered task's default retries (for replaying tasks that were running), or None."""
        task = self.registry.get(name)
        return options_policy(task.options).retries if task is not None else None

    def _fleet_changed(self) -> None:
        fleet = self.fleet
        if self._publisher is not None and self._auth is not None and fleet is not None:
            # Only a sealed announcement lists task names: when they change, peers learn it at once
            # (an unsealed one does not change with the fleet; the regular ticks carry the counts).
            names = frozenset(fleet.task_names())
            if names != self._announced_names:
                self._announced_names = names
                self._publisher.publish_now()
        if self.periodic is not None and fleet is not None:
            # Where each periodic task's schedule comes from (docs/scheduling.md): O(fleet x periodic names).
            self.periodic.follow_fleet(fleet)

    def _describe(self, announcement: Announcement) -> None:
        announcement.instance_id = self.instance_id
        announcement.client_address, announcement.dispatch_address = self._announced
        announcement.auth_required = self._auth is not None
        if self._auth is None:
            return  # unsealed, anyone may listen: only what a peer needs to connect (the rest is in stats)
        announcement.dashboard_url = self.addresses["dashboard"] or ""
        names = set(self.registry.names())
        if self.fleet is not None:
            names |= self.fleet.task_names()
        announcement.task_names.extend(sorted(names))
        announcement.workers_online = len(self.fleet) if self.fleet is not None else 0
        announcement.version = __version__
        if self.coordinator is not None:
            announcement.started_at = self.coordinator.started_at

    def request_stop(self, reason: str = "requested") -> None:
        """Begin the shutdown sequence (safe to call from a signal handler on the loop)."""
        if not self._stop.is_set():
            logger.info("shutting down: %s", reason)
            self._stop_reason = reason
            self._stop.set()

    def answer_signals(self) -> None:
        """Answer the daemon's signals on the running loop (SIGTERM drains; SIGUSR1 is logged).

        Before :meth:`start`: the ready file it writes tells a supervisor it may signal this process,
        and a signal in between ended it by the signal's default action (no drain, the file left).
        A stop asked for while starting takes effect once started.
        """
        answer_signals(asyncio.get_running_loop(), self.request_stop)

    async def run(self) -> None:
        """Serve until a stop is requested, then drain and close."""
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, announce shutdown, drain running tasks up to the drain timeout, close."""
        coordinator = self.coordinator
        publisher = self._publisher
        reason = getattr(self, "_stop_reason", "requested")
        if self._dashboard is not None:
            await asyncio.to_thread(self._dashboard.stop)
            self._dashboard = None
        if self.periodic is not None:
            self.periodic.stop()
        if coordinator is not None:
            coordinator.stop_accepting()
        if publisher is not None:
            await publisher.stop()
            publisher.announce_shutdown(self.instance_id, self.settings.drain_timeout, reason)
        if coordinator is not None:
            drained = await coordinator.drain(self.settings.drain_timeout)
            if not drained:
                here = coordinator.running
                logger.warning(
                    "drain timeout (%.1f s) passed with %d tasks still running (%d on this process's slots, %d on subworkers)",
                    self.settings.drain_timeout,
                    coordinator.running_total,
                    here,
                    coordinator.running_total - here,
                )
            if self.dispatcher is not None:
                self.dispatcher.close()
            # Let replies to waits that the drain just answered reach their clients.
            await asyncio.sleep(0)
            if self.journal is not None:
                await self.journal.flush()  # replies waiting for the disk go out with the flush below
            for server in self._servers:
                await server.flush(timeout=1.0)
            coordinator.close()
            await coordinator.local.close_pool()
        await close_home_clients()  # after the drain: the tasks that ran in it may have used one
        if self.journal is not None:
            self.journal.close()
        if self._metrics is not None:  # last: probes see 503 (shutting down) during the drain
            await asyncio.to_thread(self._metrics.close)
            self._metrics = None
        if publisher is not None:
            await publisher.stop()  # its repeated shutdown notice
        for server in self._servers:
            server.close()
        for sock in self._sockets:
            sock.close()
        if self._stall_watch is not None:
            self._stall_watch.stop()
        if self.settings.ready_file:
            remove_own_ready_file(self.settings.ready_file)
        logger.info("control plane %s stopped", self.instance_id)
