"""Property: no request the OpenAPI document describes — valid or deliberately broken —
gets a 5xx. Cases come from schemathesis; they go to a real `sidecar serve` subprocess.

Sync tests (hypothesis drives them), so blocking calls here never block a trio loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
READINESS_PROBES = {"/v0/healthz", "/v0/startupz"}


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    port_file = tmp / "url"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    with (tmp / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecar",
                "serve",
                "--home",
                str(tmp / "home"),
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--no-entry-points",
                "--handlers",
                "e2e_plugin:HANDLERS",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert proc.poll() is None, (tmp / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield port_file.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    log_text = (tmp / "server.log").read_text()
    assert "Traceback" not in log_text, log_text


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(live_url, mode):
    schema = schemathesis.openapi.from_url(f"{live_url}/v0/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            response = case.call(base_url=live_url, timeout=10)
            if case.path in READINESS_PROBES and response.status_code == 503:
                return  # not ready yet: the probe's answer, not a server error
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)
            if response.status_code >= 400:
                assert "error" in response.json(), response.text

        try:
            check()
        except Unsatisfiable:
            # Negative mode has nothing to break in an operation without inputs.
            assert mode is GenerationMode.NEGATIVE
