"""The Django integration (``fastworker.client.django``): settings, checks, autodiscovery, the default clients,
``delay_on_commit``, the eager adapters and the daemon setup module.

Needs Django (the ``django`` extra); the whole module is skipped without it, so the environment
that runs the client's tests must install it. A small project is written to a temporary folder and
Django is set up once for this module (settings cannot be configured twice in one process); the
default clients the app installs are removed again afterwards. Eager mode against the real
``EagerClient`` (fastworker-controlplane, a layer above the client) and against a real control
plane is tested by ``examples/django_project``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import override_settings  # noqa: E402

from fastworker.client import (  # noqa: E402
    CallContextError,
    ControlPlaneUnavailable,
    PayloadError,
    SyncClient,
    TaskInfo,
    TaskState,
    UnknownTask,
    current_client,
    current_sync_client,
    set_default_client,
    set_default_sync_client,
    task,
    use_sync_client,
)
from fastworker.client.models import CancelResult, Priority  # noqa: E402
from fastworker.client.task import default_registry  # noqa: E402

PROJECT_FILES = {
    "fw_shop/__init__.py": "",
    "fw_shop/tasks.py": """
        from fastworker.client import task

        @task(name="fw_shop.double")
        def double(x: int) -> int:
            return 2 * x
    """,
    "fw_shop/jobs.py": """
        from fastworker.client import task

        @task(name="fw_shop.nightly")
        def nightly() -> str:
            return "done"
    """,
    "fw_settings.py": """
        import os

        INSTALLED_APPS = ["django.contrib.contenttypes", "fastworker.client.django", "fw_shop"]
        DATABASES = {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(os.path.dirname(__file__), "fw.db")}
        }
        USE_TZ = True
        FASTWORKER = {"TASK_MODULES": ["fw_shop.jobs"]}
        LOGGING = {  # a project's logging that would silence and replace a daemon's
            "version": 1,
            "disable_existing_loggers": True,
            "formatters": {"plain": {"format": "PROJECT %(name)s %(message)s"}},
            "handlers": {"out": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"}},
            "root": {"handlers": ["out"], "level": "WARNING"},
        }
    """,
    "fw_settings_without_app.py": """
        INSTALLED_APPS = ["fw_shop"]
        DATABASES = {}
    """,
}
#: An address no control plane announces on: calls through it fail after CONNECT_TIMEOUT.
NOWHERE = "tcp://127.0.0.1:9"
FASTWORKER = {
    "CONTROL_PLANE": NOWHERE,
    "CONNECT_TIMEOUT": 0.2,
    "REQUEST_TIMEOUT": 0.5,
    "TASK_MODULES": ["fw_shop.jobs"],
}


def _write_project(root: Path) -> None:
    for name, text in PROJECT_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


@pytest.fixture(scope="module", autouse=True)
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Django set up with a small project: one app with a tasks.py, another task module named by the setting."""
    if settings.configured:
        pytest.fail("Django was set up before this module: it needs its own settings", pytrace=False)
    root = tmp_path_factory.mktemp("project")
    _write_project(root)
    sys.path.insert(0, str(root))
    registered = set(default_registry.names())
    previous, previous_sync = set_default_client(None), set_default_sync_client(None)
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "fastworker.client.django", "fw_shop"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        FASTWORKER=FASTWORKER,
    )
    django.setup()
    try:
        yield root
    finally:
        from fastworker.client.django import clients

        clients.reset()
        set_default_client(previous)
        set_default_sync_client(previous_sync)
        for name in set(default_registry.names()) - registered:
            default_registry.unregister(name)
        sys.path.remove(str(root))


@pytest.fixture(autouse=True)
def fresh_clients() -> Iterator[None]:
    from fastworker.client.django import clients

    clients.reset()
    yield
    clients.reset()


@task(name="fw_test.where")
def where() -> str:
    """Reports whether an event loop runs in the thread that runs it (the ORM refuses to run where one does)."""
    running = asyncio._get_running_loop() is not None
    return f"{'loop' if running else 'no loop'} in {threading.current_thread().name}"


@task(name="fw_test.add")
def add(x: int, y: int) -> int:
    return x + y


@task(name="fw_test.unique_add", unique=True)
def unique_add(x: int, y: int) -> int:
    return x + y


@task(name="fw_test.aadd")
async def aadd(x: int, y: int) -> int:
    return x + y


class Recorder:
    """A sync client that records what it is sent (or fails as told, or answers with a live holder's id)."""

    def __init__(self, fail: Exception | None = None, holder: str | None = None) -> None:
        self.fail = fail
        self.holder = holder
        self.sent: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any]]] = []

    def send(self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> str:
        if self.fail is not None:
            raise self.fail
        self.sent.append((name, tuple(args), dict(kwargs or {}), {k: v for k, v in options.items() if v is not None}))
        return self.holder or str(options.get("task_id") or "generated")

    def send_and_wait(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def status(self, task_id: str) -> TaskInfo:
        raise NotImplementedError

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        raise NotImplementedError

    def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        raise NotImplementedError

    def cancel(self, task_id: str) -> CancelResult:
        raise NotImplementedError


class FakeEager:
    """Quacks like fastworker-controlplane's EagerClient: runs each task at once by calling it."""

    def __init__(self) -> None:
        self.registry = default_registry
        self.history: list[TaskInfo] = []

    async def send(
        self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> str:
        tf = self.registry.get(name)
        if tf is None:
            raise UnknownTask(name)
        value = tf(*args, **(kwargs or {}))
        if tf.is_async:
            value = await value
        task_id = options.get("task_id") or f"eager-{len(self.history) + 1}"
        self.history.append(
            TaskInfo(task_id, name, TaskState.SUCCESS, Priority.NORMAL, 1, "eager", None, None, None, result=value)
        )
        return task_id

    async def send_and_wait(
        self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        options.pop("timeout", None)
        return (await self.status(await self.send(name, args, kwargs, **options))).result

    async def status(self, task_id: str) -> TaskInfo:
        return next(info for info in self.history if info.id == task_id)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        return (await self.status(task_id)).result

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskInfo:
        return await self.status(task_id)

    async def cancel(self, task_id: str) -> CancelResult:
        return CancelResult(False, (await self.status(task_id)).state)


@pytest.fixture
def fake_eager(monkeypatch: pytest.MonkeyPatch) -> FakeEager:
    """Eager mode with the stand-in: what ``"EAGER": True`` and ``eager_tasks()`` create."""
    from fastworker.client.django import clients

    made: list[FakeEager] = []

    def new(task_modules: Sequence[str] = ()) -> FakeEager:
        made.append(FakeEager())
        return made[-1]

    monkeypatch.setattr(clients, "new_eager_client", new)
    return FakeEager()  # for tests that build the adapters themselves


# ---------------------------------------------------------------------------------------- imports


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}, **env},
    )


def test_importing_the_client_imports_no_django_and_the_integration_names_the_extra_without_it() -> None:
    loaded = _python("import sys, json, fastworker.client\nprint(json.dumps(sorted(sys.modules)))")
    assert loaded.returncode == 0, loaded.stderr
    assert not [name for name in json.loads(loaded.stdout) if name == "django" or name.startswith("django.")]
    missing = _python("import sys\nsys.modules['django'] = None\nimport fastworker.client.django")
    assert "needs Django: pip install 'fastworker-client[django]'" in missing.stderr


# --------------------------------------------------------------------------------------- settings


def test_settings_are_checked_key_by_key_and_each_problem_names_its_key() -> None:
    from fastworker.client.django.conf import FastWorkerSettings, parse_settings

    assert parse_settings(None) == (FastWorkerSettings(), [])
    parsed, problems = parse_settings(
        {"CONTROL_PLANE": "tcp://cp.internal:5550", "CONNECT_TIMEOUT": 2, "EAGER": True, "TASK_MODULES": ["a.b"]}
    )
    assert problems == []
    assert (parsed.control_plane, parsed.connect_timeout, parsed.eager, parsed.task_modules) == (
        "tcp://cp.internal:5550",
        2.0,
        True,
        ("a.b",),
    )
    assert parse_settings({"CONTROL_PLANE": None, "SECRET": None}) == (FastWorkerSettings(), [])  # None: not given

    _, problems = parse_settings(
        {
            "CONTROL_PLANE": "http://cp:5550",
            "REQUEST_TIMEOUT": 0,
            "EAGRE": True,
            "ALLOW_PICKLE": "yes",
            "TASK_MODULES": "shop.jobs",
            "SECRET": "s",
            "SECRET_FILE": "/run/s",
        }
    )
    assert problems[0].startswith('FASTWORKER["CONTROL_PLANE"]: unsupported address')
    assert problems[1] == 'FASTWORKER["REQUEST_TIMEOUT"] must be a number of seconds more than 0, not 0'
    assert problems[2].startswith("FASTWORKER['EAGRE'] is not a FastWorker setting (did you mean \"EAGER\"?)")
    assert problems[3] == "FASTWORKER[\"ALLOW_PICKLE\"] must be True or False, not 'yes'"
    assert problems[4].startswith('FASTWORKER["TASK_MODULES"] must be a list of dotted module names')
    assert problems[5].startswith('give FASTWORKER["SECRET"] or FASTWORKER["SECRET_FILE"], not both')
    assert len(problems) == 6
    assert parse_settings(["tcp://x:1"])[1] == [
        'settings.FASTWORKER must be a dict such as {"CONTROL_PLANE": "tcp://127.0.0.1:5550"}, not list'
    ]


def test_client_options_are_only_the_given_ones_and_read_the_secret_file(tmp_path: Path) -> None:
    from fastworker.client.django.conf import parse_settings

    assert parse_settings({})[0].client_options() == {}  # SyncClient() then reads the environment itself
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    parsed, _ = parse_settings({"CONTROL_PLANE": "tcp://h:1", "SECRET_FILE": secret, "REQUEST_TIMEOUT": 3})
    options = parsed.client_options()
    assert options.pop("secret").secrets() == ("s3cret",)  # read again when the file changes
    assert options == {"address": "tcp://h:1", "request_timeout": 3.0}
    with pytest.raises(ValueError, match=r'^FASTWORKER\["SECRET_FILE"\]: cannot read the secret file'):
        parse_settings({"SECRET_FILE": str(tmp_path / "missing")})[0].client_options()
    with pytest.raises(ValueError, match=r'^FASTWORKER\["TLS_CA"\].*is not a readable file'):
        parse_settings({"TLS_CA": str(tmp_path / "ca.pem")})[0].client_options()


def test_the_system_check_reports_every_problem_with_an_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastworker.client.django import checks

    assert checks.check_settings() == []
    with override_settings(FASTWORKER={"CONNECT_TIMEOUT": -1, "EAGR": True}):
        errors = checks.check_settings()
    assert [(e.id, e.msg.split(" ")[0]) for e in errors] == [
        ("fastworker.E001", 'FASTWORKER["CONNECT_TIMEOUT"]'),
        ("fastworker.E001", "FASTWORKER['EAGR']"),
    ]
    with override_settings(FASTWORKER={"SECRET_FILE": str(tmp_path / "missing")}):
        assert [e.id for e in checks.check_settings()] == ["fastworker.E002"]
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: None)  # fastworker-controlplane absent
    with override_settings(FASTWORKER={"EAGER": True}):
        (error,) = checks.check_settings()
    assert error.id == "fastworker.E003" and "fastworker-controlplane" in error.msg + (error.hint or "")
    from django.core.checks import run_checks

    with override_settings(FASTWORKER={"TIMEOUT": 1}):  # registered with Django's check framework
        assert [e.id for e in run_checks(tags=["fastworker"])] == ["fastworker.E001"]


# ----------------------------------------------------------------------------------- the app


def test_the_app_imported_every_apps_tasks_module_and_the_task_modules_setting() -> None:
    assert {"fw_shop.tasks", "fw_shop.jobs"} <= set(sys.modules)
    assert {"fw_shop.double", "fw_shop.nightly"} <= set(default_registry.names())
    from django.apps import apps

    assert apps.get_app_config("fastworker").name == "fastworker.client.django"


def test_a_task_module_that_cannot_be_imported_names_the_setting() -> None:
    from fastworker.client.django.apps import _import_task_module

    with pytest.raises(ImproperlyConfigured, match=r"""FASTWORKER\["TASK_MODULES"\] names 'fw_shop.nope'"""):
        _import_task_module("fw_shop.nope")


def test_the_defaults_are_the_apps_clients_and_the_sync_one_is_made_from_the_setting_on_first_use(
    tmp_path: Path,
) -> None:
    from fastworker.client.django import clients

    assert current_sync_client() is clients.DEFAULT_SYNC_CLIENT
    assert current_client() is clients.DEFAULT_CLIENT
    assert clients._sync_client.current is None  # nothing is made, nothing connects, until a call
    backend = clients.sync_backend()
    assert isinstance(backend, SyncClient) and backend.address == NOWHERE
    assert clients.sync_backend() is backend  # one, shared

    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    with override_settings(FASTWORKER={"CONTROL_PLANE": "tcp://127.0.0.1:10", "SECRET_FILE": str(secret)}):
        assert backend.closed  # the setting changed: the old client is closed
        changed = clients.sync_backend()
        assert isinstance(changed, SyncClient)
        assert (changed.address, changed._client.secret.secrets()) == ("tcp://127.0.0.1:10", ("from-a-file",))
    assert changed.closed


def test_in_a_daemon_without_a_control_plane_setting_the_settings_client_is_the_home_one() -> None:
    # Given a daemon's process (its home is the control plane that runs its tasks), settings with no CONTROL_PLANE
    from fastworker.client.django import clients
    from fastworker.client.home import Home, set_home

    set_home(Home("tcp://127.0.0.1:11"))
    try:
        with override_settings(FASTWORKER={"CONNECT_TIMEOUT": 0.2}):
            # Then typed calls in tasks go to that control plane, not to the environment's default one
            assert clients.sync_backend().address == "tcp://127.0.0.1:11"
        with override_settings(FASTWORKER={"CONTROL_PLANE": "tcp://127.0.0.1:12"}):
            # and a CONTROL_PLANE the settings give still wins
            assert clients.sync_backend().address == "tcp://127.0.0.1:12"
    finally:
        set_home(None)


def test_typed_calls_from_sync_and_async_code_go_to_the_settings_control_plane() -> None:
    with pytest.raises(ControlPlaneUnavailable):  # NOWHERE: nothing announces there
        add.delay_sync(1, 2)

    async def view() -> None:
        await add.delay(1, 2)

    for _ in range(2):  # each on a loop of its own, as Django runs async views under WSGI
        with pytest.raises(ControlPlaneUnavailable):
            asyncio.run(view())


def test_an_invalid_setting_fails_the_first_call_naming_the_key() -> None:
    with override_settings(FASTWORKER={"REQUEST_TIMEOUT": "10"}):
        with pytest.raises(ImproperlyConfigured, match=r'FASTWORKER\["REQUEST_TIMEOUT"\] must be a number'):
            add.delay_sync(1, 2)


# ---------------------------------------------------------------------------------- delay_on_commit


def test_delay_on_commit_returns_the_id_at_once_and_submits_once_when_the_transaction_commits() -> None:
    from fastworker.client.django import delay_on_commit

    recorder = Recorder()
    with use_sync_client(recorder):
        with transaction.atomic():
            task_id = delay_on_commit(add, 1, 2)
            assert recorder.sent == []  # not before the commit
        assert recorder.sent == [("fw_test.add", (1, 2), {}, {"task_id": task_id})]
        assert len(task_id) == 36  # a UUID4, chosen before submitting


def test_delay_on_commit_submits_nothing_when_the_transaction_or_its_savepoint_rolls_back() -> None:
    from fastworker.client.django import delay_on_commit

    recorder = Recorder()
    with use_sync_client(recorder):
        with pytest.raises(RuntimeError), transaction.atomic():
            delay_on_commit(add, 1, 2)
            raise RuntimeError("roll back")
        with transaction.atomic():
            kept = delay_on_commit(add, 3, 4)
            with pytest.raises(RuntimeError), transaction.atomic():
                delay_on_commit(add, 5, 6)
                raise RuntimeError("roll the savepoint back")
    assert [(args, options["task_id"]) for _, args, _, options in recorder.sent] == [((3, 4), kept)]


def test_delay_on_commit_outside_a_transaction_submits_at_once_with_the_options_given() -> None:
    from fastworker.client.django import delay_on_commit

    recorder = Recorder()
    with use_sync_client(recorder):
        task_id = delay_on_commit(add.with_options(priority="high", task_id="order-7"), 1, y=2)
    assert task_id == "order-7"
    assert recorder.sent == [("fw_test.add", (1,), {"y": 2}, {"priority": Priority.HIGH, "task_id": "order-7"})]


def test_delay_on_commit_of_a_unique_task_returns_the_id_answered_or_warns_at_the_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A live task held the key: the commit-time submission was answered with its id, queued nothing,
    # and the id delay_on_commit had returned read TaskNotFound forever, with nothing said.
    from fastworker.client.django import delay_on_commit

    held = Recorder(holder="the-live-one")
    with use_sync_client(held):
        assert delay_on_commit(unique_add, 1, 2) == "the-live-one"  # outside a transaction: at once
        assert delay_on_commit(add.with_options(unique_key="k", task_id="mine"), 1, 2) == "the-live-one"
        with caplog.at_level(logging.WARNING, logger="fastworker.client.django"), transaction.atomic():
            chosen = delay_on_commit(add.with_options(unique_key="k"), 1, 2)  # fire and forget still works
    assert len(held.sent) == 3 and held.sent[2][3]["task_id"] == chosen  # submitted at the commit
    warned = [r.getMessage() for r in caplog.records if "uniqueness key" in r.getMessage()]
    assert len(warned) == 1 and "the-live-one" in warned[0] and chosen in warned[0]


def test_delay_on_commit_goes_to_the_client_current_where_it_is_called() -> None:
    from fastworker.client.django import delay_on_commit

    outer, explicit = Recorder(), Recorder()
    with transaction.atomic():
        with use_sync_client(outer):
            delay_on_commit(add, 1, 1)
        delay_on_commit(add.with_options(client=explicit), 2, 2)
    assert [s[1] for s in outer.sent] == [(1, 1)] and [s[1] for s in explicit.sent] == [(2, 2)]
    with pytest.raises(TypeError, match="async"):
        delay_on_commit(add.with_options(client=FakeEager()), 1, 1)


def test_after_commit_follows_the_named_database_and_robust_logs_a_failed_submission(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastworker.client.django import after_commit

    recorder = Recorder()
    with use_sync_client(recorder):
        with transaction.atomic(using="other"):
            with transaction.atomic():  # the default database's commit is not the one it waits for
                task_id = after_commit(using="other").delay(add, 1, 2)
            assert recorder.sent == []
        assert [options["task_id"] for *_, options in recorder.sent] == [task_id]

    down = Recorder(fail=ControlPlaneUnavailable("no control plane"))
    with use_sync_client(down):
        with pytest.raises(ControlPlaneUnavailable), transaction.atomic():  # Django's default: raised after commit
            delay_id = after_commit().delay(add, 1, 2)
        with caplog.at_level(logging.ERROR, logger="django.db.backends.base"), transaction.atomic():
            robust_id = after_commit(robust=True).delay(add, 3, 4)
    assert f"delay_on_commit of task 'fw_test.add' (id {robust_id})" in caplog.text
    assert delay_id != robust_id


def test_delay_on_commit_refuses_arguments_no_client_can_send_while_the_transaction_can_roll_back() -> None:
    from fastworker.client.django import delay_on_commit

    recorder = Recorder()
    with use_sync_client(recorder), transaction.atomic():
        with pytest.raises(PayloadError, match=r"delay_on_commit\('fw_test.add', ...\).*nothing will be submitted"):
            delay_on_commit(add, threading.Lock(), 1)  # type: ignore[arg-type]
    assert recorder.sent == []


def test_delay_on_commit_fails_at_once_on_an_invalid_setting() -> None:
    from fastworker.client.django import delay_on_commit

    with override_settings(FASTWORKER={"EAGER": "yes"}), transaction.atomic():
        with pytest.raises(ImproperlyConfigured, match=r'FASTWORKER\["EAGER"\] must be True or False'):
            delay_on_commit(add, 1, 2)


def test_delay_on_commit_is_typed_by_the_task(tmp_path: Path) -> None:
    source = tmp_path / "typed_on_commit.py"
    source.write_text(
        textwrap.dedent(
            """
            from fastworker.client import task
            from fastworker.client.django import after_commit, delay_on_commit


            @task
            def add(x: int, y: int) -> int:
                return x + y


            ok: str = delay_on_commit(add, 1, 2)
            delay_on_commit(add.with_options(priority="high"), 1, y=2)
            after_commit(using="other").delay(add, 1, 2)
            delay_on_commit(add, "1", 2)  # error
            delay_on_commit(add, 1)  # error
            after_commit().delay(add, 1, 2, 3)  # error
            """
        )
    )
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\nnamespace_packages = True\nexplicit_package_bases = True\n"
        "[mypy-pynng.*,msgpack.*,django.*,asgiref.*]\nignore_missing_imports = True\n"
    )
    import fastworker

    roots = sorted({str(Path(entry).parent) for entry in fastworker.__path__} - {""})
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache")]
        + ["--python-executable", sys.executable, "--no-pretty", str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": os.pathsep.join(r for r in roots if "site-packages" not in r)},
        cwd=tmp_path,
        timeout=110,
    )
    output = result.stdout + result.stderr
    assert "No module named mypy" not in output, "mypy must be installed in this environment (tox: client deps)"
    lines = sorted(
        int(line.split(":")[1])
        for line in output.splitlines()
        if line.split(":")[0].endswith(source.name) and ": error:" in line
    )
    expected = [n for n, text in enumerate(source.read_text().splitlines(), start=1) if text.endswith("# error")]
    assert lines == expected, output


# --------------------------------------------------------------------------------------- eager


def test_without_fastworker_controlplane_eager_mode_fails_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastworker.client.django import clients
    from fastworker.client.django.testing import eager_tasks

    monkeypatch.setitem(sys.modules, "fastworker.controlplane", None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "fastworker.controlplane.eager", None)  # type: ignore[arg-type]
    with override_settings(FASTWORKER={"EAGER": True}):
        with pytest.raises(ImproperlyConfigured, match="pip install fastworker-controlplane"):
            add.delay_sync(1, 2)
    with pytest.raises(ImproperlyConfigured, match="fastworker-controlplane, which is not installed"):
        with eager_tasks():
            pass
    assert clients._overrides == []


def test_finish_without_loop_runs_a_coroutine_that_never_suspends_and_refuses_one_that_does() -> None:
    from fastworker.client._eagersync import finish_without_loop

    async def plain() -> int:
        return 7

    async def suspends() -> int:
        await asyncio.sleep(0)
        return 8

    assert finish_without_loop(plain()) == 7
    coroutine = suspends()
    with pytest.raises(RuntimeError, match="bug in FastWorker's eager mode"):
        finish_without_loop(coroutine)
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning


def test_the_eager_sync_face_runs_sync_tasks_here_with_no_event_loop_and_async_tasks_on_their_own() -> None:
    from fastworker.client._eagersync import EagerSyncBackend

    eager = FakeEager()
    backend = EagerSyncBackend(eager)
    assert backend.send_and_wait("fw_test.where") == f"no loop in {threading.current_thread().name}"
    assert backend.send_and_wait("fw_test.aadd", (1, 2)) == 3
    task_id = backend.send("fw_test.add", (2, 3), task_id="t-1")
    assert (task_id, backend.result(task_id), backend.status(task_id).state) == ("t-1", 5, TaskState.SUCCESS)
    assert backend.cancel(task_id).cancelled is False and backend.wait(task_id).result == 5
    with pytest.raises(UnknownTask):
        backend.send("fw_test.nope")


def test_the_eager_async_face_runs_sync_tasks_where_django_runs_the_orm() -> None:
    from fastworker.client._eagersync import EagerSyncBackend
    from fastworker.client.django.clients import EagerAsyncBackend

    eager = FakeEager()
    backend = EagerAsyncBackend(eager, EagerSyncBackend(eager))

    async def view() -> tuple[str, int, TaskInfo]:
        where_ = await backend.send_and_wait("fw_test.where")
        total = await backend.send_and_wait("fw_test.aadd", (2, 2))
        return where_, total, await backend.status(await backend.send("fw_test.add", (1, 1)))

    where_, total, info = asyncio.run(view())
    assert where_.startswith("no loop in ") and total == 4 and info.result == 2


def test_eager_mode_from_the_setting_runs_typed_calls_and_delay_on_commit_in_process(fake_eager: FakeEager) -> None:
    from fastworker.client.django import delay_on_commit
    from fastworker.client.django.testing import eager_client

    assert eager_client() is None
    with override_settings(FASTWORKER={"EAGER": True}):
        eager = eager_client()
        assert eager is not None
        assert add.submit_sync(1, 2) == 3
        handle = add.delay_sync(2, 2)
        assert handle.result() == 4 and handle.status().worker == "eager"
        with transaction.atomic():
            task_id = delay_on_commit(add, 5, 5)
            assert len(eager.history) == 2
        assert eager.history[-1].id == task_id and eager.history[-1].result == 10

        async def view() -> int:
            return await add.submit(3, 3)

        assert asyncio.run(view()) == 6
    assert eager_client() is None


def test_eager_tasks_wins_everywhere_while_it_lasts(fake_eager: FakeEager) -> None:
    from fastworker.client.django.testing import eager_tasks

    outside = Recorder()
    with use_sync_client(outside):
        with eager_tasks() as eager:
            assert add.submit_sync(1, 1) == 2  # even inside a `with` block of another client
            seen: list[int] = []
            thread = threading.Thread(target=lambda: seen.append(add.submit_sync(2, 2)))
            thread.start()
            thread.join(timeout=10)
            assert seen == [4]  # and in other threads (a view run by a test client, a commit callback)
            with eager_tasks() as inner:
                add.delay_sync(3, 3)
            assert len(inner.history) == 1 and len(eager.history) == 2
        add.delay_sync(4, 4)
    assert [s[1] for s in outside.sent] == [(4, 4)]


def test_a_blocking_typed_call_on_an_event_loop_is_still_refused_in_eager_mode(fake_eager: FakeEager) -> None:
    from fastworker.client.django.testing import eager_tasks

    async def view() -> None:
        add.delay_sync(1, 2)

    with eager_tasks(), pytest.raises(CallContextError):
        asyncio.run(view())


# ----------------------------------------------------------------------------------- daemon setup


def test_the_setup_module_sets_django_up_and_holds_every_task_of_the_project(project: Path) -> None:
    code = textwrap.dedent(
        """
        import fastworker.client.django.setup as setup
        from django.apps import apps
        from fastworker.client.task import TaskFunction
        held = sorted(v.name for v in vars(setup).values() if isinstance(v, TaskFunction))
        print(apps.ready, held, sorted(setup.__all__))
        """
    )
    done = _python(code, PYTHONPATH=str(project), DJANGO_SETTINGS_MODULE="fw_settings")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == (
        "True ['fw_shop.double', 'fw_shop.nightly'] ['task_fw_shop_double', 'task_fw_shop_nightly']"
    )


def test_the_setup_module_names_what_is_missing(project: Path) -> None:
    unset = _python("import fastworker.client.django.setup", PYTHONPATH=str(project))
    assert "set DJANGO_SETTINGS_MODULE" in unset.stderr
    no_app = _python(
        "import fastworker.client.django.setup",
        PYTHONPATH=str(project),
        DJANGO_SETTINGS_MODULE="fw_settings_without_app",
    )
    assert 'add "fastworker.client.django" to INSTALLED_APPS' in no_app.stderr


def test_in_a_daemon_the_setup_module_keeps_its_logging_and_closes_old_connections_around_each_run(
    project: Path,
) -> None:
    code = textwrap.dedent(
        """
        import logging, sys
        handler = logging.StreamHandler(sys.stdout)  # what a daemon configures before loading task modules
        handler.setFormatter(logging.Formatter("DAEMON %(name)s %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        early = logging.getLogger("fastworker.controlplane.example")

        import fastworker.client.django.setup as setup
        from django.db import connection, transaction
        from fastworker.client import hooks

        early.info("still logged")
        print(setup.close_old_connections in hooks.REGISTERED.before, setup.close_old_connections in hooks.REGISTERED.after)
        connection.ensure_connection()
        opened = connection.connection is not None
        setup.close_old_connections(None)  # CONN_MAX_AGE = 0: obsolete once the run is over
        print(opened, connection.connection is None)
        with transaction.atomic():  # a run inside the caller's transaction (eager) never closes its connection
            setup.close_old_connections(None)
            print(connection.connection is not None)
        """
    )
    done = _python(code, PYTHONPATH=str(project), DJANGO_SETTINGS_MODULE="fw_settings")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "DAEMON fastworker.controlplane.example still logged",
        "True True",
        "True True",
        "True",
    ]


def test_where_django_was_set_up_already_the_setup_module_adds_no_hooks() -> None:
    import importlib

    from fastworker.client import hooks

    setup = importlib.import_module("fastworker.client.django.setup")  # this process: a test's, set up by the fixture
    assert setup.close_old_connections not in hooks.REGISTERED.before
    assert {"fw_shop.double", "fw_test.add"} <= set(setup.TASKS)
