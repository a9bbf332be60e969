"""Every error is a JSON body with a machine-readable ``code`` and a human ``message``.

Status codes follow the reference's table: 400 invalid data (validation included, not FastAPI's 422),
401 no or bad token, 403 not allowed, 404 unknown or deleted lead, 409 a lead with that phone exists.
A status move the lifecycle does not allow is a 400 (``invalid_transition``) naming the allowed moves,
so the table's 409 keeps meaning "duplicate" alone (and ``idempotency_key_reused``, which says so).

The edge (``api.edge``) adds 405 (with ``Allow``), 408 (body too slow), 413 (body too large), 429 (too
many failed authentications, with ``Retry-After``); a database busy past its wait, or an answer not
started in time, is 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from db.enums import LeadStatus
from db.errors import (
    DomainError,
    DuplicateLead,
    Forbidden,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTransition,
    NotFound,
)

log = logging.getLogger(__name__)

# Domain field names that the API calls differently.
_FIELD_NAMES = {"reason": "refusal_reason"}
# Seconds a client is asked to wait when the database was busy past its own wait (or the answer was late).
BUSY_RETRY_AFTER = 5


class ErrorOut(BaseModel):
    code: str = Field(
        description="unauthorized, invalid_input, invalid_transition, forbidden, not_found, duplicate, "
        "idempotency_key_reused, method_not_allowed, request_timeout, payload_too_large, too_many_failures, "
        "database_busy, timeout, cors_rejected, internal_error",
        examples=["invalid_input"],
    )
    message: str = Field(examples=["invalid phone number; e.g. +998 90 123 45 67"])
    field: str | None = Field(default=None, description="The offending field (400)", examples=["phone_number"])
    reason: str | None = Field(default=None, description="A finer code for 400, e.g. phone_invalid")
    existing_lead_id: int | None = Field(default=None, description="The lead that already has the phone (409)")
    current: LeadStatus | None = Field(default=None, description="The lead's status (invalid_transition)")
    allowed: list[LeadStatus] | None = Field(default=None, description="Moves allowed from it (invalid_transition)")
    action: str | None = Field(default=None, description="What was not allowed (403), e.g. update")


class ApiError(Exception):
    """An error the API itself raises (authentication, webhook secrets, unknown sources)."""

    def __init__(self, status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers


def unauthorized(message: str = "a valid bearer token is required") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def too_many_failures(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "too_many_failures",
        f"too many failed authentications from this client; try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def payload_too_large(limit: int) -> ApiError:
    # The rest of the body is never read, so the connection cannot carry another request.
    return ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes", headers={"Connection": "close"})


def request_timeout(seconds: float) -> ApiError:
    return ApiError(
        408, "request_timeout", f"the body did not arrive within {seconds:g} s", headers={"Connection": "close"}
    )


def answer_timeout(seconds: float) -> ApiError:
    return ApiError(
        503,
        "timeout",
        f"the answer did not start within {seconds:g} s; a change may or may not have been saved",
        headers={"Retry-After": str(BUSY_RETRY_AFTER)},
    )


def error_response(status_code: int, body: ErrorOut, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status_code, headers=headers)


def domain_error_response(error: DomainError) -> JSONResponse:
    if isinstance(error, InvalidInput):
        field = _FIELD_NAMES.get(error.field, error.field) or None
        return error_response(400, ErrorOut(code=error.code, message=error.message, field=field, reason=error.reason))
    if isinstance(error, InvalidTransition):
        body = ErrorOut(
            code=error.code, message=error.message, field="status", current=error.current, allowed=error.allowed
        )
        return error_response(400, body)
    if isinstance(error, NotFound):
        return error_response(404, ErrorOut(code=error.code, message=error.message))
    if isinstance(error, Forbidden):
        return error_response(403, ErrorOut(code=error.code, message=error.message, action=error.action))
    if isinstance(error, DuplicateLead):
        body = ErrorOut(code=error.code, message=error.message, existing_lead_id=error.existing_lead_id)
        return error_response(409, body)
    if isinstance(error, IdempotencyKeyReused):
        return error_response(409, ErrorOut(code=error.code, message=error.message, field="Idempotency-Key"))
    log.error("unmapped domain error %r", error)
    return error_response(400, ErrorOut(code=error.code, message=error.message))


async def _on_domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return domain_error_response(exc)


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, ErrorOut(code=exc.code, message=exc.message), exc.headers)


def _location(loc: tuple[Any, ...]) -> str | None:
    # ("body", "phone_number") -> "phone_number"; ("query", "page") -> "page"; ("body",) -> None
    parts = [str(part) for part in loc[1:] if not isinstance(part, int)]
    return ".".join(parts) or None


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return error_response(400, ErrorOut(code="invalid_input", message="invalid request"))
    first = errors[0]
    field = _location(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        message = "the body is not valid JSON"
    elif field and not message.startswith(f"{field.rsplit('.', 1)[-1]} "):
        message = f"{field}: {message}"
    return error_response(400, ErrorOut(code="invalid_input", message=message, field=field, reason=first.get("type")))


_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(exc.status_code, ErrorOut(code=code, message=message), getattr(exc, "headers", None))


# How drivers say a lock wait ran out: SQLite ("database is locked"), PostgreSQL's lock_timeout.
_BUSY_SIGNS = ("database is locked", "database table is locked", "lock timeout")


def database_busy(error: Exception) -> bool:
    """A wait for the database that ran out: the pool had no connection in time, or SQLite's write
    lock stayed taken past the busy wait ("database is locked")."""
    if isinstance(error, PoolTimeoutError):
        return True
    if isinstance(error, OperationalError):
        text = str(error.orig if error.orig is not None else error).lower()
        return any(sign in text for sign in _BUSY_SIGNS)
    return False


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    if not database_busy(exc):
        return await _on_unexpected(request, exc)
    log.warning("database busy in %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    body = ErrorOut(code="database_busy", message="the database is busy; nothing was changed, try again shortly")
    return error_response(503, body, {"Retry-After": str(BUSY_RETRY_AFTER)})


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, ErrorOut(code="internal_error", message="internal error; nothing was changed"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(OperationalError, _on_database_error)
    app.add_exception_handler(PoolTimeoutError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)


# For ``responses=`` on the routes: every error documented with its body.
def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Invalid data (validation, a bad phone names the field) or a status move not allowed",
        401: "No, bad or revoked token, or the user was deactivated",
        403: "Another salesperson's lead, or a role that may not do this",
        404: "Unknown or deleted lead",
        409: "A lead with this phone exists; `existing_lead_id` names it",
        408: "The body did not arrive within `[api] body_timeout`",
        413: "The body is larger than `[api] max_body_bytes`",
        429: "Too many failed authentications from this client; `Retry-After` says when to try again",
        503: "The database stayed busy past its wait, or the answer could not start in time; see `Retry-After`",
    }
    return {code: {"model": ErrorOut, "description": descriptions[code]} for code in codes}
