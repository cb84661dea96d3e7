"""Typed task submissions for mypy: every line marked ``# expect-error`` must be reported, and no other.

Not collected by pytest (no ``test_`` prefix); ``test_typing.py`` runs mypy over it.
"""

from __future__ import annotations

import asyncio
from typing import assert_type

from fastworker.client import (
    Chain,
    Chord,
    Client,
    Group,
    SubmitOptions,
    SyncClient,
    SyncTaskBackend,
    SyncTaskHandle,
    SyncWorkflowHandle,
    TaskHandle,
    chain,
    chord,
    group,
    task,
    use_client,
    use_sync_client,
)


@task
def add(x: int, y: int) -> int:
    return x + y


@task(name="emails.send")
async def send_email(user_id: int, subject: str = "hello") -> dict[str, str]:
    return {"user_id": str(user_id), "subject": subject}


async def correct_calls(client: Client) -> None:
    handle: TaskHandle[int] = await add.delay(1, 2)
    total: int = await handle.result()
    total = await handle.result(timeout=5)
    total = await add.submit(1, y=2)
    total = await add.with_options(priority="high", countdown=5).submit(3, 4)
    later: TaskHandle[int] = await add.with_options(client=client, timeout=10).delay(x=1, y=2)
    again: TaskHandle[int] = add.handle(later.id)
    sent: dict[str, str] = await send_email.submit(7)
    mail = await send_email.delay(7, subject="welcome")
    body: dict[str, str] = await mail.result()
    by_name: str = await client.delay("add", 1, 2)  # by name: untyped, always accepted
    print(total, again, sent, body, by_name, await mail.status(), await mail.cancel())


async def awaitable_calls_compose() -> None:
    assert_type(await add.delay(1, 2), TaskHandle[int])
    assert_type(await add.with_options(priority="high").submit(1, 2), int)
    first, second = await asyncio.gather(add.delay(1, 2), send_email.delay(3))
    assert_type(first, TaskHandle[int])
    assert_type(second, TaskHandle[dict[str, str]])
    handles: list[TaskHandle[int]] = [await add.delay(i, i) for i in range(3)]
    pending: asyncio.Task[int] = asyncio.create_task(add.submit(1, 2))
    print(handles, await pending)


def sync_calls(client: SyncClient) -> None:
    assert_type(add.delay_sync(1, 2), SyncTaskHandle[int])
    handle: SyncTaskHandle[int] = add.delay_sync(1, y=2)
    total: int = handle.result(timeout=5)
    total = add.submit_sync(1, 2)
    total = add.with_options(priority="high", timeout=10).submit_sync(3, 4)
    later: SyncTaskHandle[int] = add.with_options(client=client, countdown=5).delay_sync(x=1, y=2)
    again: SyncTaskHandle[int] = add.handle_sync(later.id)
    sent: dict[str, str] = send_email.submit_sync(7)
    mail = send_email.delay_sync(7, subject="welcome")
    body: dict[str, str] = mail.result()
    backend: SyncTaskBackend = client  # SyncClient is a sync backend
    print(total, again, sent, body, backend, mail.status(), mail.wait(1), mail.cancel())


def incorrect_sync_calls() -> None:
    add.delay_sync("x", 2)  # expect-error
    add.delay_sync(1)  # expect-error
    add.submit_sync(1, "2")  # expect-error
    add.with_options(priority="high").delay_sync(1, "2")  # expect-error
    wrong: str = add.submit_sync(1, 2)  # expect-error
    text: str = add.delay_sync(1, 2).result()  # expect-error
    mistyped: SyncTaskHandle[str] = add.delay_sync(1, 2)  # expect-error
    add.delay(1, 2)  # expect-error
    print(wrong, text, mistyped)


async def sync_handles_are_not_awaitable() -> None:
    await add.delay_sync(1, 2)  # expect-error
    handle: TaskHandle[int] = add.delay_sync(1, 2)  # expect-error
    print(handle)


async def incorrect_calls() -> None:
    await add.delay("x", 2)  # expect-error
    await add.delay(1)  # expect-error
    await add.delay(1, 2, 3)  # expect-error
    await add.delay(1, z=2)  # expect-error
    await add.submit(1, "2")  # expect-error
    await add.with_options(priority="high").delay(1, "2")  # expect-error
    await send_email.delay("7")  # expect-error
    wrong: str = await add.submit(1, 2)  # expect-error
    handle = await add.delay(1, 2)
    text: str = await handle.result()  # expect-error
    mistyped: TaskHandle[str] = await add.delay(1, 2)  # expect-error
    await add.delay(1, 2, priority="high")  # expect-error
    print(wrong, text, mistyped)


async def dependencies_by_id_or_handle(client: Client) -> None:
    first = await add.delay(1, 2)
    mail = send_email.delay_sync(7)
    after: TaskHandle[int] = await add.with_options(depends_on=[first, mail, first.id]).delay(3, 4)
    await client.delay_many([("add", (1, 2))], depends_on=[after])
    add.with_options(depends_on=[1]).delay_sync(1, 2)  # expect-error
    add.with_options(depends_on=first).delay_sync(1, 2)  # expect-error


def workflow_types_are_exported() -> SyncWorkflowHandle:
    steps: Chain = chain(add.s(1, 2), add.s(3))
    both: Group = group(add.s(1, 2), add.s(3, 4))
    summed: Chord = chord(both, add.s(0))
    print(summed, SubmitOptions(priority="high"))
    return steps.delay_sync()


async def use_client_keeps_the_clients_type(client: Client, sync: SyncClient) -> None:
    with use_client(client) as current:
        assert_type(current, Client)
        await current.aclose()
    with use_sync_client(sync) as blocking:
        assert_type(blocking, SyncClient)
        blocking.close()
