"""Reads a small urlencoded form body without python-multipart (the dashboard's forms are tiny)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

#: Largest form body accepted, in bytes.
MAX_FORM_BYTES = 64 * 1024


class FormError(Exception):
    """The body is not a small urlencoded form."""


async def read_form(request: Request) -> dict[str, str]:
    """The form's fields (the last value wins for a repeated name); an empty body gives ``{}``.

    Raises:
        FormError: the body is too large or not ``application/x-www-form-urlencoded``.
    """
    body = await request.body()
    if not body:
        return {}
    if len(body) > MAX_FORM_BYTES:
        raise FormError("form body too large")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise FormError(f"expected an urlencoded form, not {content_type or 'no content type'}")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise FormError("form body is not UTF-8") from exc
