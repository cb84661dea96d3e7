"""A hostile browser: DNS rebinding (foreign Host), cross-origin actions, password guessing, huge payloads, stalled viewers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from web_fakes import SAME_ORIGIN, FakeAdminClient, csrf_token, make_task

from fastworker.client import TaskState
from fastworker.dashboard.web import cli
from fastworker.dashboard.web.config import DashboardConfig
from fastworker.dashboard.web.exposure import UnprotectedDashboard, is_loopback, refuse_unprotected
from fastworker.dashboard.web.hosts import HostAllowList
from fastworker.dashboard.web.live import LiveFeed
from fastworker.dashboard.web.preview import PREVIEW_CHARS, preview, render_capped
from fastworker.dashboard.web.security import ActionDenied, check_same_origin
from fastworker.dashboard.web.sse import BoundedEventStream
from fastworker.dashboard.web.throttle import LoginThrottle, address_key, delay_after, most_attempts

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
EVIL = {"host": "evil.example:8080"}
BIG_ID = "99999999-0000-4000-8000-000000000009"
SEVEN_MB = 7 * 1024 * 1024

# ------------------------------------------------------------------------------------ Host allow-list


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/tasks",
        "/tasks/aaaaaaaa-0000-4000-8000-000000000001",
        "/workers",
        "/login",
        "/api/stats",
        "/api/tasks",
        "/metrics",
        "/healthz",
        "/stream?view=overview",
        "/static/dashboard.css",
        "/no-such-page",
    ],
)
async def test_a_foreign_host_is_refused_on_every_read(
    web: httpx.AsyncClient, fake: FakeAdminClient, path: str
) -> None:
    before = sum(fake.calls.values())
    response = await web.get(path, headers=EVIL)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert "not one this dashboard serves" in response.text
    assert sum(fake.calls.values()) == before  # nothing was read from the control plane


async def test_a_request_body_over_the_bound_is_refused_declared_or_streamed(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    # Served inside the control plane, a body is its memory: two anonymous 256 MiB logins took 550 MiB
    from fastworker.dashboard.web.bodylimit import MAX_REQUEST_BODY

    big = b"secret=" + b"a" * MAX_REQUEST_BODY
    declared = await web.post("/login", content=big, headers={"content-type": "application/x-www-form-urlencoded"})
    assert declared.status_code == 413 and "request body over" in declared.text

    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: read as it comes, cut at the bound
        for _ in range(64):
            sent.append(1)
            yield b"a" * 65536

    streamed = await web.post("/api/limits/app.add", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    before = sum(fake.calls.values())
    assert (await web.post("/login", data={"secret": "wrong"})).status_code != 413  # small bodies as before
    assert sum(fake.calls.values()) >= before


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/login", "application/x-www-form-urlencoded"),
        ("/tasks/aaaaaaaa-0000-4000-8000-000000000001/cancel", "application/x-www-form-urlencoded"),
        ("/api/limits/app.add", "application/json"),
    ],
)
async def test_a_client_that_hangs_up_mid_body_is_no_error(
    web: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str, content_type: str
) -> None:
    # Each abort wrote an ERROR "Exception in ASGI application" with a 70-line ClientDisconnect
    # traceback: one anonymous peer on the open POST /login filled the control plane's log.
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"secret=", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", content_type.encode()), (b"content-length", b"100")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    with caplog.at_level(logging.DEBUG):
        await web.app(scope, receive, send)  # type: ignore[attr-defined]  # raised ClientDisconnect (uvicorn: ERROR)

    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert not any(message.get("status", 0) >= 500 for message in sent)  # nobody to answer: no 500 either


async def test_a_foreign_host_cannot_act(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    form = {"csrf": csrf_token(web), "next": "/"}
    rebinding = {**EVIL, "origin": "http://evil.example:8080"}
    assert (await web.post("/queues/low/pause", data=form, headers=rebinding)).status_code == 400
    assert (await web.post("/api/queues/low/pause", headers=rebinding)).status_code == 400
    assert (await web.post("/api/workers/w1/drain", headers=rebinding)).status_code == 400
    assert fake.calls["pause"] == 0 and fake.calls["drain_worker"] == 0


async def test_served_names_and_configured_hosts_are_allowed(make_client: MakeClient) -> None:
    app = (await make_client(hosts=["dash.example.com", "proxy.example:8443"])).app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver:8080") as client:
        # This client's requests arrive on testserver:8080.
        allowed = ("testserver:8080", "localhost:8080", "127.0.0.1", "[::1]:8080", "dash.example.com:9999")
        for host in (*allowed, "proxy.example:8443"):
            assert (await client.get("/api/stats", headers={"host": host})).status_code == 200, host
        refused = ("localhost:9999", "proxy.example:9999", "proxy.example", "dash.example.com.evil.example", "")
        for host in refused:
            assert (await client.get("/api/stats", headers={"host": host})).status_code == 400, host


def test_the_allow_list_for_binds() -> None:
    served = ("127.0.0.1", 8080)
    named = HostAllowList(bind_host="dash.internal")
    assert named.allows_host_header("dash.internal:8080", served)
    assert not named.allows_host_header("dash.internal:8081", served)
    assert not named.allows_host_header("attacker.example:8080", served)
    wildcard = HostAllowList(bind_host="0.0.0.0")
    import socket

    assert wildcard.allows_host_header(f"{socket.gethostname()}:8080", ("192.0.2.7", 8080))
    assert wildcard.allows_host_header("192.0.2.7:8080", ("192.0.2.7", 8080))  # the address it arrived on
    assert not wildcard.allows_host_header("rebind.attacker.example:8080", ("192.0.2.7", 8080))
    with pytest.raises(ValueError, match="not a host name"):
        HostAllowList(extra=("http://x/y",))
    loopback = HostAllowList(bind_host="127.0.0.1")
    assert loopback.allows_host_header("[::1]:8080", served) and loopback.allows_host_header("localhost.:8080", served)
    for malformed in ("::1", "0:0:0:0:0:0:0:1", "localhost..:8080", "localhost..", "127.0.0.1..:8080"):
        assert not loopback.allows_host_header(malformed, served), malformed


def _request(headers: dict[str, str], server: tuple[str, int] = ("127.0.0.1", 8080)) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "server": server})


def test_the_same_origin_check_ignores_the_requests_own_host() -> None:
    config = DashboardConfig(control_plane="tcp://127.0.0.1:5550", hosts=HostAllowList(bind_host="127.0.0.1"))
    # A rebinding page: its Host and Origin agree with each other, but name the attacker.
    with pytest.raises(ActionDenied, match="cross-origin"):
        check_same_origin(config, _request({"host": "evil.example:8080", "origin": "http://evil.example:8080"}))
    with pytest.raises(ActionDenied, match="Referer"):
        check_same_origin(config, _request({"host": "evil.example:8080", "referer": "http://evil.example:8080/x"}))
    # Another local origin (other port) is not this dashboard either.
    with pytest.raises(ActionDenied):
        check_same_origin(config, _request({"host": "127.0.0.1:8080", "origin": "http://localhost:3000"}))
    check_same_origin(config, _request({"host": "127.0.0.1:8080", "origin": "http://localhost:8080"}))
    check_same_origin(config, _request({"host": "127.0.0.1:8080", "referer": "http://127.0.0.1:8080/tasks"}))


# --------------------------------------------------------------------------------- exposure refusal


def test_a_non_loopback_bind_without_a_password_is_refused() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    with pytest.raises(UnprotectedDashboard, match=r"0\.0\.0\.0:8080.*--dashboard-insecure"):
        refuse_unprotected("0.0.0.0", 8080, protected=False, insecure=False)
    assert refuse_unprotected("0.0.0.0", 8080, protected=True, insecure=False) is True
    assert refuse_unprotected("0.0.0.0", 8080, protected=False, insecure=True) is True
    assert refuse_unprotected("127.0.0.1", 8080, protected=False, insecure=False) is False


def test_the_standalone_dashboard_refuses_before_binding(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--dashboard-address", "0.0.0.0:0", "--control-plane", "tcp://127.0.0.1:1"])
    assert code == cli.RET_ERROR
    err = capsys.readouterr().err
    assert "0.0.0.0:0" in err and "--dashboard-insecure" in err


def test_the_dashboard_flags_parse_with_env_vars(tmp_path: Any) -> None:
    from fastworker.client.envflags import apply_env_defaults

    parser = cli.make_parser()
    apply_env_defaults(
        parser, {"FASTWORKER_DASHBOARD_HOST": "a.example, b.example:81", "FASTWORKER_DASHBOARD_INSECURE": "1"}
    )
    args = parser.parse_args(["--dashboard-host", "c.example", "--dashboard-password", "pw"])
    assert args.dashboard_host == ["a.example", "b.example:81", "c.example"]
    assert args.dashboard_insecure is True and args.dashboard_password == "pw"


# ------------------------------------------------------------------------------ password and throttle


async def test_the_dashboard_password_is_separate_from_the_secret(make_client: MakeClient) -> None:
    client = await make_client(secret="frame-secret", password="dash-pass")
    data = {"csrf": csrf_token(client), "next": "/"}
    assert (
        await client.post("/login", data={**data, "secret": "frame-secret"}, headers=SAME_ORIGIN)
    ).status_code == 403
    ok = await client.post("/login", data={**data, "secret": "dash-pass"}, headers=SAME_ORIGIN)
    assert ok.status_code == 303 and "fastworker_session" in ok.headers["set-cookie"]
    api = await client.post("/api/queues/low/pause", headers={"X-FastWorker-Secret": "dash-pass"})
    assert api.status_code == 200


def test_the_delay_schedule_grows_and_is_capped() -> None:
    assert [delay_after(n) for n in range(1, 8)] == [0, 0, 1, 2, 4, 8, 16]
    assert delay_after(50) == 30
    assert most_attempts(5.0) == 5  # three free, then at 1 s and 3 s
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff") == "2001:db8::/64"
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"


def test_the_throttle_table_is_bounded() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_addresses=100, forget_after=60.0, clock=lambda: now[0])
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
    now[0] = 61.0
    throttle.failed("192.0.2.1")
    assert len(throttle) == 1  # stale ones are forgotten


async def test_login_guessing_is_slowed_per_address_and_logged_sparingly(
    make_client: MakeClient, fake: FakeAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(secret="right")
    data = {"csrf": csrf_token(client), "next": "/"}
    caplog.set_level(logging.WARNING, logger="fastworker.dashboard.web.security")
    checked = refused = 0
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        answer = await client.post("/login", data={**data, "secret": "wrong"}, headers=SAME_ORIGIN)
        if answer.status_code == 429:
            refused += 1
            assert int(answer.headers["retry-after"]) >= 1
        else:
            assert answer.status_code == 403
            checked += 1
        await asyncio.sleep(0.005)
    assert checked <= most_attempts(2.5 + 0.5)
    assert refused > 10
    # While the address waits, even the right password is not looked at.
    right = await client.post("/login", data={**data, "secret": "right"}, headers=SAME_ORIGIN)
    assert right.status_code == 429
    # The same throttle guards the API header.
    assert (await client.post("/api/queues/low/pause", headers={"X-FastWorker-Secret": "right"})).status_code == 429
    failures = [r for r in caplog.records if "wrong password" in r.getMessage()]
    assert 1 <= len(failures) <= checked


async def test_an_api_action_without_the_password_or_with_a_wrong_one_is_401_as_a_read_is(
    make_client: MakeClient, fake: FakeAdminClient
) -> None:
    # 401: the password would help (403 is for what it would not: read-only, cross-origin)
    client = await make_client(secret="right")
    for headers in ({}, {"X-FastWorker-Secret": "wrong"}):
        answer = await client.post("/api/queues/low/pause", headers={**SAME_ORIGIN, **headers})
        assert answer.status_code == 401 and "X-FastWorker-Secret" in answer.json()["detail"]
        assert answer.headers["www-authenticate"] == 'FastWorker-Secret header="X-FastWorker-Secret"'
        assert ("not it" in answer.json()["detail"]) is bool(headers)  # never "log in": the header is what acts
        assert (await client.get("/api/stats", headers=headers)).status_code == 401
    assert fake.calls["pause"] == 0


async def test_a_request_without_a_password_is_not_counted_as_a_guess(make_client: MakeClient) -> None:
    # A probe or a script that forgot the header must not lock its address (behind a proxy: everyone) out.
    client = await make_client(secret="right")
    for _ in range(6):
        assert (await client.post("/api/queues/low/pause", headers=SAME_ORIGIN)).status_code == 401
        assert (await client.get("/api/stats", headers={"X-FastWorker-Secret": ""})).status_code == 401
    right = await client.post("/api/queues/low/pause", headers={**SAME_ORIGIN, "X-FastWorker-Secret": "right"})
    assert right.status_code == 200


# ------------------------------------------------------------------------------------ large values


def test_previews_are_bounded_and_small_values_unchanged() -> None:
    from fastworker.dashboard.web.formatting import pretty

    small = {"a": [1, 2, "x"], "b": None}
    assert preview(small).text == pretty(small) and not preview(small).truncated
    huge = "x" * SEVEN_MB
    shown = preview([huge])
    assert shown.truncated and len(shown.text) == PREVIEW_CHARS and shown.size >= SEVEN_MB
    many = preview(list(range(1_000_000)))
    assert many.truncated and len(many.text) == PREVIEW_CHARS
    assert render_capped([huge], cap=1024) is None
    assert render_capped([1, 2], cap=1024) == pretty([1, 2])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({"mykey": "Q" * 5000}, '"mykey": "QQQ'),
        ({"a": 1, "beta": "C" * 5000, "z": 2}, '"beta": "CCC'),
        ({"k": ["E" * 5000]}, '"k": [\n    "EEE'),
        ([{"deep": {"long": "A" * 20000}}], '"long": "AAA'),
    ],
    ids=["one-key", "middle-key", "list-in-key", "nested"],
)
def test_a_truncated_preview_keeps_the_key_of_the_value_it_cuts(value: Any, shown: str) -> None:
    cut = preview(value)
    assert cut.truncated and shown in cut.text and '"": ' not in cut.text


def test_a_preview_shows_bytes_as_the_api_and_its_download_do() -> None:
    assert preview({"bin": b"\x00\xff<b>"}).text == render_capped({"bin": b"\x00\xff<b>"})


async def test_a_task_with_a_huge_argument_renders_a_preview_and_downloads_in_full(
    web: httpx.AsyncClient, fake: FakeAdminClient
) -> None:
    huge = "y" * SEVEN_MB
    fake.add(make_task(BIG_ID, state=TaskState.SUCCESS, result=huge), args=[huge])
    page = await web.get(f"/tasks/{BIG_ID}")
    assert page.status_code == 200
    assert len(page.text) < 64 * 1024
    assert "truncated" in page.text and f'href="/tasks/{BIG_ID}/args"' in page.text
    assert f'href="/tasks/{BIG_ID}/result"' in page.text
    download = await web.get(f"/tasks/{BIG_ID}/args")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert download.json() == {"args": [huge], "kwargs": {}}
    assert (await web.get(f"/tasks/{BIG_ID}/result")).json() == huge


async def test_a_download_over_the_cap_is_refused(
    web: httpx.AsyncClient, fake: FakeAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastworker.dashboard.web.routes import tasks as task_routes

    monkeypatch.setattr(task_routes, "DOWNLOAD_CAP", 1024 * 1024)
    fake.add(make_task(BIG_ID), args=["z" * (2 * 1024 * 1024)])
    response = await web.get(f"/tasks/{BIG_ID}/args")
    assert response.status_code == 413 and "download cap" in response.text


async def test_concurrent_page_loads_share_one_detail_read(web: httpx.AsyncClient, fake: FakeAdminClient) -> None:
    fake.add(make_task(BIG_ID), args=["w" * SEVEN_MB])
    original = fake.task_detail

    async def slow_detail(task_id: str) -> Any:
        await asyncio.sleep(0.2)
        return await original(task_id)

    fake.task_detail = slow_detail  # type: ignore[method-assign]
    pages = await asyncio.gather(*(web.get(f"/tasks/{BIG_ID}") for _ in range(6)))
    assert all(p.status_code == 200 for p in pages)
    assert fake.calls["task_detail"] == 1


async def test_live_panels_are_rendered_once_per_change_for_all_viewers(fake: FakeAdminClient) -> None:
    feed = LiveFeed(fake, interval=0.05)
    renders = 0

    async def render() -> dict[str, str]:
        nonlocal renders
        renders += 1
        await asyncio.sleep(0.01)
        return {"panel": "html"}

    outputs = await asyncio.gather(*(feed.rendered(("task", "x"), render) for _ in range(10)))
    assert renders == 1 and all(o is outputs[0] for o in outputs)
    feed._bump()
    await feed.rendered(("task", "x"), render)
    assert renders == 2
    await feed.aclose()


async def test_a_task_detail_is_re_read_only_when_that_task_changed(fake: FakeAdminClient) -> None:
    from fastworker.client import EventBatch, TaskEvent

    feed = LiveFeed(fake, interval=0.05)
    fake.add(make_task(BIG_ID))
    await feed.task_detail(BIG_ID)
    other = make_task("12345678-0000-4000-8000-000000000001")
    batch = EventBatch(
        events=[TaskEvent(sequence=1, kind="task_state", at=0.0, task=other)], last_sequence=1, gap=False
    )
    feed._bump(tasks=True)
    feed._note_changed_tasks(batch, missed=False)
    await feed.task_detail(BIG_ID)
    assert fake.calls["task_detail"] == 1  # another task changed: the cached detail stands
    mine = EventBatch(
        events=[TaskEvent(sequence=2, kind="task_state", at=0.0, task=make_task(BIG_ID))], last_sequence=2, gap=False
    )
    feed._bump(tasks=True)
    feed._note_changed_tasks(mine, missed=False)
    await feed.task_detail(BIG_ID)
    assert fake.calls["task_detail"] == 2
    await feed.aclose()


async def test_a_viewer_that_stops_reading_is_dropped() -> None:
    closed = asyncio.Event()
    produced = 0

    async def messages() -> AsyncGenerator[str, None]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield "event: panel\ndata: {}\n\n"
                await asyncio.sleep(0)
        finally:
            closed.set()

    stalled = asyncio.Event()  # never set: the viewer never reads

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await stalled.wait()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    response = BoundedEventStream(messages(), max_queued=8, drop_grace=0.2)
    async with asyncio.timeout(10):
        await response({"type": "http"}, receive, send)
    assert response.dropped and closed.is_set()
    assert produced <= 8 + 2  # it stopped producing for the viewer once its queue was full


def test_a_download_is_valid_json_in_the_apis_shapes_whatever_the_value_holds() -> None:
    # Served as application/json, it held bare NaN and Infinity (not JSON) and bytes as b'...'
    text = render_capped({"nan": float("nan"), "inf": float("-inf"), "raw": b"\x00\xff", "ok": [1.5]})
    assert text is not None

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    assert json.loads(text, parse_constant=refuse) == {"nan": None, "inf": None, "raw": "AP8=", "ok": [1.5]}
