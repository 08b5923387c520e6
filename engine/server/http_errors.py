"""The app's exception handlers' answers: FastAPI's and the router's refusals (unknown path, wrong method,
a body that is not JSON) in the one error shape, ``{"error": message, ...}``.

A 405 names, in ``Allow``, every method the path answers to: the router's own answer names only the
methods of the first route it found for the path, though several routes may share it (``GET`` and
``DELETE /jobs/{id}``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from .responses import error

_PARSE_FAILED = "There was an error parsing the body"


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """A body that is not JSON is a 400; fields of the wrong type or out of range a 422 listing them."""
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "")
            return error(400, f"request body is not valid JSON: {reason}".rstrip(": "))
    details = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]
    return error(422, "invalid request", detail=details)


def http_error(app: FastAPI, request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(app, request.scope)) or headers.get("Allow", "")
    message = str(exc.detail)
    if exc.status_code == 400 and exc.detail == _PARSE_FAILED:
        message = f"request body is not valid JSON: {_reason(exc.__cause__)}"
    elif exc.status_code == 404 and exc.detail == "Not Found":
        message = f"nothing at {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {headers['Allow']})"
    return error(exc.status_code, message, headers=headers)


def allowed_methods(app: FastAPI, scope: dict[str, Any]) -> list[str]:
    """Every method some route of ``app`` answers for the request's path (asked of the routes themselves,
    included routers too, one method at a time)."""
    probe = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", "")}
    routes = [r for r in app.router.routes if not isinstance(r, Mount)]  # a mount takes every method
    return [
        method
        for method in METHODS
        if any(route.matches({**probe, "method": method})[0] is Match.FULL for route in routes)
    ]


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _reason(cause: BaseException | None) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return "it is not UTF-8"
    if isinstance(cause, RecursionError):
        return "it is nested too deeply"
    if isinstance(cause, ValueError):
        return str(cause).split("\n")[0][:200]
    return type(cause).__name__ if cause is not None else "it does not parse"


def documented_errors_only(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI schema list only the error responses its routes document (``documented`` in
    the route decorators). FastAPI adds a 422 in its own shape to every route with a parameter; on routes
    whose parameters are all plain path strings it can never happen, and elsewhere the route documents it
    in the one error shape."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for op in operations.values():
                responses = op.get("responses", {})
                body = responses.get("422", {}).get("content", {}).get("application/json", {})
                if body.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
        text = repr(schema.get("paths", {}))
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            if f"/{name}'" not in text:
                components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
