"""A bounded property-based fuzz of the HTTP API from its own OpenAPI schema (schemathesis strategies run by
hypothesis): every operation gets generated requests, valid and invalid, and every answer must keep the
contract: never a 5xx, only the status codes the operation documents (or the router's 404/405 when a
generated path parameter holds a ``/`` and the path no longer names the operation), errors in the one
shape (a JSON object with ``error``) and bodies that match their documented schemas. Afterwards the server
still answers and still runs a job.

Paths come from the schema, never from this file: the fuzz follows the API wherever it moves.
"""

from __future__ import annotations

import json
import time
from typing import Any

import hypothesis
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability import budget
from tests.reliability.conftest import LiveServer
from tests.reliability.contract import api_path, error_shape_problem, run_a_job


def router_answer(status: int, content: bytes) -> bool:
    """The router's own answer: the generated path no longer names the operation (a path parameter that
    holds a ``/`` or is empty), so no route answered. Told apart from a route's own 404 by its message."""
    if status == 405:
        return True
    return status == 404 and json.loads(content).get("error", "").startswith("nothing at ")


def fuzz_operation(op: Any, mode: GenerationMode, live: LiveServer, seen: dict[int, int]) -> None:
    @hypothesis.settings(
        max_examples=budget.examples("operation"),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=live.base, timeout=60)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        headers = {k.lower(): v[0] if isinstance(v, list) else v for k, v in response.headers.items()}
        problem = error_shape_problem(response.status_code, headers, response.content)
        assert problem is None, f"{case.method} {case.formatted_path}: {problem}"
        checks = [not_a_server_error, content_type_conformance]
        if not router_answer(response.status_code, response.content):
            checks += [status_code_conformance, response_schema_conformance]
        case.validate_response(response, checks=checks)

    run()


def test_every_operation_keeps_its_contract(live: LiveServer) -> None:
    schema = schemathesis.openapi.from_dict(live.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    failures: list[str] = []
    seen: dict[int, int] = {}
    started = time.monotonic()
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not (len(op.query) or len(op.body)):
                continue  # only free-form path strings: no request can get a parameter wrong
            try:
                fuzz_operation(op, mode, live, seen)
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, not the first only
                failures.append(f"{op.label} ({mode.value}): {type(exc).__name__}: {str(exc)[:1500]}")
    for failure in failures:
        print(failure, end="\n\n")
    assert not failures, "\n\n".join(failures)
    cases = sum(seen.values())
    assert cases >= len(operations) * 2, seen
    assert any(400 <= code < 500 for code in seen), seen  # the fuzz did reach the refusals
    print(
        f"API fuzz: {cases} requests in {time.monotonic() - started:.1f} s, statuses {sorted(seen.items())}"
    )

    # the server is intact: it answers, and a job still runs to the end
    with live.client() as http:
        system = api_path(live.app, "get", "/system")
        assert http.get(system).status_code == 200
        assert run_a_job(live, http)["status"] == "success"
