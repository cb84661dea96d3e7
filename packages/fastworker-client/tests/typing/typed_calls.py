"""Typed task submissions for mypy: every line marked ``# expect-error`` must be reported, and no other.

Not collected by pytest (no ``test_`` prefix); ``test_typing.py`` runs mypy over it.
"""

from __future__ import annotations

from fastworker.client import Client, TaskHandle, task


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
