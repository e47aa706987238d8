"""The API's one error shape, {"error": {"code", "message"}}, and the exception that carries it.

Messages are English: they are read by the developers of the host's back end, not by customers.
Clients branch on `code` (stable, listed in docs/api.md), never on `message`.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..jsonutil import dumps


class ApiError(Exception):
    """An answer other than success: raised anywhere under a view, turned into JSON by the guard."""

    def __init__(self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_request(field: str, message: str) -> ApiError:
    """400 bad_request naming the field at fault (`field` empty: the body as a whole)."""
    return ApiError(400, "bad_request", f"{field}: {message}" if field else message)


def not_found(message: str) -> ApiError:
    """404 not_found: an unknown customer, conversation or path."""
    return ApiError(404, "not_found", message)


def json_response(payload: object, *, status: int = 200) -> web.Response:
    """A JSON answer (UTF-8, non-ASCII kept as is), never cached by a proxy."""
    response = web.Response(text=dumps(payload), status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def error_response(error: ApiError) -> web.Response:
    """The JSON answer of an ApiError, with its headers (WWW-Authenticate, Retry-After, Allow)."""
    response = json_response({"error": {"code": error.code, "message": error.message}}, status=error.status)
    response.headers.update(error.headers)
    return response
