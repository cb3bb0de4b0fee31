"""Schema-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

A real ``sidecar serve`` on 127.0.0.1 (quart-trio needs a trio server, so no in-process
ASGI transport) is fuzzed operation by operation with schema-valid and schema-violating
requests, a small budget each. What must hold: no 5xx, the content type and body of every
response match the document, and every status code is documented. ``tools/fuzz_http.py``
runs the same checks with a larger budget.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from sidecar.testing import serve_argv

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = 15  # per operation and generation mode: ~400 requests, ~10 s

OPERATIONS = [
    ("GET", "/v0/healthz"),
    ("GET", "/v0/startupz"),
    ("GET", "/v0/livez"),
    ("GET", "/v0/status"),
    ("GET", "/v0/metrics"),
    ("POST", "/v0/tasks"),
    ("POST", "/v0/tasks/batch"),
    ("GET", "/v0/tasks"),
    ("GET", "/v0/tasks/{task_id}"),
    ("GET", "/v0/tasks/{task_id}/runs"),
    ("DELETE", "/v0/tasks/{task_id}"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``sidecar serve`` subprocess, marked ready (the readiness probes 503 until then)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    port_file = tmp / "url"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "http"), str(REPO)])}
    with (tmp / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            serve_argv(
                tmp / "home", port_file, handlers=["e2e_plugin:HANDLERS"], args=["--grace", "0.5"]
            ),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None, (tmp / "server.log").read_text()
            assert time.monotonic() < deadline, "sidecar serve did not start in 20 s"
            time.sleep(0.02)
        url = port_file.read_text().strip()
        with httpx.Client(base_url=url, timeout=10) as client:
            task = client.post("/v0/tasks", json={"type": "mark-ready"}).json()["id"]
            assert client.get(f"/v0/tasks/{task}", params={"wait": 10}).status_code == 200
            assert client.get("/v0/healthz").status_code == 200
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    server_log = (tmp / "server.log").read_text()
    assert code == 0, server_log
    assert "Traceback" not in server_log, server_log


@pytest.fixture(scope="module")
def api_schema(server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server}/v0/openapi.json")


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_fuzzed_requests_get_documented_non_5xx_answers(
    server: str,
    api_schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    documented = {int(code) for code in operation.definition.raw.get("responses", {})}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the suite must not be flaky; tools/fuzz_http.py explores
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=server, timeout=10)
        case.validate_response(
            response,
            checks=[not_a_server_error, content_type_conformance, response_schema_conformance],
        )
        assert response.status_code in documented, (
            f"undocumented {response.status_code} for {method} {path}: {response.text[:200]}"
        )

    try:
        check()
    except Unsatisfiable:
        # Nothing to violate: no parameters, or only a free-form string in the path.
        assert mode is GenerationMode.NEGATIVE
