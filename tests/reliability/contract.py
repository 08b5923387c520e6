"""What the reliability tests share: where an Atelier API operation lives (read from the OpenAPI schema, so
the tests follow the API if its prefix moves), the one error shape, and a cheap job to run."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tests.server.harness import comfy_prompt


def api_path(app_or_schema: Any, method: str, suffix: str) -> str:
    """The path of Atelier's own API operation ``method`` ending in ``suffix`` (``"/jobs/{job_id}"``)."""
    schema = app_or_schema if isinstance(app_or_schema, dict) else app_or_schema.openapi()
    found = [
        path
        for path, ops in schema["paths"].items()
        if path.endswith(suffix)
        and method.lower() in ops
        and "atelier" in ops[method.lower()].get("tags", [])
        and path[: -len(suffix)].count("{") == 0
    ]
    assert found, f"no Atelier operation {method.upper()} ...{suffix} in the schema"
    return min(found, key=len)


def atelier_ws(app: Any) -> str:
    """The path of Atelier's websocket: ``ws`` beside its API."""
    return api_path(app, "get", "/system")[: -len("/system")] + "/ws"


def error_shape_problem(status: int, headers: Mapping[str, str], content: bytes) -> str | None:
    """Why a response breaks the error contract (a 4xx is a JSON object with ``error``; no 5xx), or None."""
    if status >= 500:
        return f"answered {status}: {content[:300]!r}"
    if not 400 <= status < 500:
        return None
    if not headers.get("content-type", "").startswith("application/json"):
        return f"{status} answered as {headers.get('content-type')!r}: {content[:300]!r}"
    try:
        body = json.loads(content)
    except ValueError:
        return f"{status} body is not JSON: {content[:300]!r}"
    if not isinstance(body, dict) or "error" not in body or not body["error"]:
        return f"{status} body has no 'error': {content[:300]!r}"
    return None


def tiny_job(seed: int = 1, prefix: str = "reliability") -> dict[str, Any]:
    """A job request on the tiny checkpoint: one step at 64 px."""
    return {"workflow": comfy_prompt(seed=seed, steps=1, prefix=prefix)}


def submit(live_app: Any, http: httpx.Client, body: dict[str, Any]) -> str:
    r = http.post(api_path(live_app, "post", "/jobs"), json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait(live_app: Any, http: httpx.Client, job: str, timeout: float = 120) -> dict[str, Any]:
    path = api_path(live_app, "get", "/jobs/{job_id}").replace("{job_id}", job)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = http.get(path).json()
        if view["status"] not in ("queued", "running"):
            return dict(view)
        time.sleep(0.02)
    raise AssertionError(f"job {job} did not finish within {timeout} s")


def run_a_job(live: Any, http: httpx.Client, seed: int = 1) -> dict[str, Any]:
    return wait(live.app, http, submit(live.app, http, tiny_job(seed)))
