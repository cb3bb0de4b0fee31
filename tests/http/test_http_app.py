"""Every v0 route and error path, in process through the Quart test client."""

from __future__ import annotations

import json
import uuid

import trio

import sidecar
from sidecar.http import create_app


async def submit(client, body, expect=201) -> str:
    resp = await client.post("/v0/tasks", json=body)
    data = await resp.get_json()
    assert resp.status_code == expect, data
    return data["id"]


async def wait_record(client, task_id: str, seconds: float = 5) -> dict:
    resp = await client.get(f"/v0/tasks/{task_id}?wait={seconds}")
    assert resp.status_code == 200
    return await resp.get_json()


async def test_submit_runs_task_and_get_returns_wire_record(client):
    task_id = await submit(client, {"type": "noop", "params": {"a": 1}})
    rec = await wait_record(client, task_id)
    assert rec["id"] == task_id
    assert rec["status"] == "completed"
    assert rec["result"] == {"ok": True, "params": {"a": 1}}
    assert rec["params"] == {"a": 1}
    assert rec["run"] == 1
    assert rec["submittedAt"].endswith("Z") and rec["completedAt"].endswith("Z")
    assert "error" not in rec


async def test_resubmitting_same_id_deduplicates_with_202(client):
    task_id = str(uuid.uuid4())
    assert await submit(client, {"type": "noop", "id": task_id}) == task_id
    await wait_record(client, task_id)
    assert await submit(client, {"type": "noop", "id": task_id}, expect=202) == task_id


async def test_failed_task_carries_error_string_and_detail(client):
    task_id = await submit(client, {"type": "boom"})
    rec = await wait_record(client, task_id)
    assert rec["status"] == "failed"
    assert rec["error"] == "it broke (hint: try again later)"
    assert rec["errorDetail"] == {
        "message": "it broke",
        "type": "TaskError",
        "hint": "try again later",
        "retryable": True,
    }


async def test_bad_submissions_are_400_with_a_json_error(client):
    cases = [
        ({"params": {}}, "type is required"),
        ({"type": 5}, "type must be a string"),
        ({"type": ""}, "type"),
        ({"type": "nope"}, "unknown task type 'nope'"),
        ({"type": "noop", "params": [1]}, "params must be a JSON object"),
        ({"type": "noop", "id": "not-a-uuid"}, "UUID"),
        ({"type": "noop", "timeout": -1}, "timeout"),
        ({"type": "typed", "params": {"count": "many"}}, "count"),
        ({"type": "typed", "params": {}}, "count"),
        ({"type": "noop", "schedule": {"cron": "not a cron"}}, "cron"),
        ({"type": "noop", "schedule": {"cron": "* * * * *", "timezone": "Mars/Base"}}, "Mars"),
        ({"type": "noop", "schedule": {"blockHeight": 100}}, "blockHeight"),
        ({"type": "noop", "schedule": {"cron": "* * * * *", "misfire": "later"}}, "misfire"),
        ([1, 2], "body must be a JSON object"),
        ("text", "body must be a JSON object"),
    ]
    for body, fragment in cases:
        resp = await client.post("/v0/tasks", json=body)
        data = await resp.get_json()
        assert resp.status_code == 400, (body, data)
        assert fragment in data["error"], (body, data)


async def test_invalid_json_and_empty_body_are_400(client):
    for raw in (b"{not json", b"", b"\xff\xfe", b'{"type": "noop"'):
        resp = await client.post(
            "/v0/tasks", data=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400
        assert "error" in await resp.get_json()


async def test_body_is_json_whatever_the_content_type(client):
    # `curl -d '{...}'` sends application/x-www-form-urlencoded; the Go sidecar took it.
    resp = await client.post(
        "/v0/tasks",
        data=json.dumps({"type": "noop"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 201


async def test_typed_params_error_names_the_field(client):
    resp = await client.post("/v0/tasks", json={"type": "typed", "params": {"count": "x"}})
    assert resp.status_code == 400
    assert "params.count" in (await resp.get_json())["error"]


async def test_unknown_task_is_404_task_not_found(client):
    missing = str(uuid.uuid4())
    for method, path in (
        ("GET", f"/v0/tasks/{missing}"),
        ("GET", f"/v0/tasks/{missing}?wait=1"),
        ("GET", f"/v0/tasks/{missing}/runs"),
        ("DELETE", f"/v0/tasks/{missing}"),
    ):
        resp = await client.open(path, method=method)
        assert resp.status_code == 404, (method, path)
        assert await resp.get_json() == {"error": "task not found"}


async def test_framework_errors_are_json(client):
    resp = await client.get("/nope")
    assert resp.status_code == 404
    assert await resp.get_json() == {"error": "not found"}
    resp = await client.put("/v0/tasks")
    assert resp.status_code == 405
    assert "error" in await resp.get_json()
    assert "POST" in resp.headers["Allow"]


async def test_body_over_the_limit_is_413_json_with_connection_close(rt):
    client = create_app(rt, max_body=100).test_client()
    resp = await client.post("/v0/tasks", json={"type": "noop", "params": {"x": "y" * 200}})
    assert resp.status_code == 413
    assert "too large" in (await resp.get_json())["error"]
    assert resp.headers["Connection"] == "close"


async def test_list_is_newest_first_with_filters_and_cursor(client):
    ids = [await submit(client, {"type": "noop"}) for _ in range(5)]
    for task_id in ids:
        await wait_record(client, task_id)
    failed = await submit(client, {"type": "boom"})
    await wait_record(client, failed)

    resp = await client.get("/v0/tasks")
    records = await resp.get_json()
    assert [r["id"] for r in records] == [failed, *reversed(ids)]

    page = await (await client.get("/v0/tasks?limit=2")).get_json()
    assert [r["id"] for r in page] == [failed, ids[4]]
    rest = await (await client.get(f"/v0/tasks?limit=2&before={page[-1]['id']}")).get_json()
    assert [r["id"] for r in rest] == [ids[3], ids[2]]

    only_failed = await (await client.get("/v0/tasks?status=failed")).get_json()
    assert [r["id"] for r in only_failed] == [failed]
    only_noop = await (await client.get("/v0/tasks?type=noop")).get_json()
    assert len(only_noop) == 5


async def test_list_rejects_bad_query_values(client):
    for query in ("limit=0", "limit=1001", "limit=abc", "status=done", "before=xyz"):
        resp = await client.get(f"/v0/tasks?{query}")
        assert resp.status_code == 400, query
        assert "error" in await resp.get_json()


async def test_long_poll_returns_when_the_task_finishes(client, gate):
    task_id = await submit(client, {"type": "gate"})
    result = {}

    async def poll():
        started = trio.current_time()
        result["rec"] = await wait_record(client, task_id, seconds=10)
        result["elapsed"] = trio.current_time() - started

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(0.2)
        assert "rec" not in result
        gate.release.set()
    assert result["rec"]["status"] == "completed"
    assert result["elapsed"] < 5


async def test_long_poll_times_out_with_the_current_record(client):
    task_id = await submit(client, {"type": "gate"})
    with trio.fail_after(5):
        rec = await wait_record(client, task_id, seconds=0.2)
    assert rec["status"] == "running"


async def test_long_poll_rejects_bad_wait(client):
    task_id = await submit(client, {"type": "noop"})
    for bad in ("abc", "-1", "nan"):
        resp = await client.get(f"/v0/tasks/{task_id}?wait={bad}")
        assert resp.status_code == 400, bad


async def test_delete_cancels_a_running_task_and_removes_it(client, gate):
    task_id = await submit(client, {"type": "gate"})
    resp = await client.delete(f"/v0/tasks/{task_id}")
    assert resp.status_code == 204
    assert (await client.get(f"/v0/tasks/{task_id}")).status_code == 404


async def test_schedule_submit_and_runs(client):
    task_id = await submit(client, {"type": "noop", "schedule": {"cron": "@hourly"}})
    rec = await (await client.get(f"/v0/tasks/{task_id}")).get_json()
    assert rec["status"] == "scheduled"
    assert rec["schedule"] == {"cron": "@hourly", "timezone": "UTC", "misfire": "run-once"}
    assert rec["nextRunAt"].endswith("Z")
    resp = await client.get(f"/v0/tasks/{task_id}/runs")
    assert resp.status_code == 200
    assert await resp.get_json() == []
    assert (await client.delete(f"/v0/tasks/{task_id}")).status_code == 204


async def test_batch_answers_per_entry_in_order(client):
    dup = str(uuid.uuid4())
    await submit(client, {"type": "noop", "id": dup})
    resp = await client.post(
        "/v0/tasks/batch",
        json={
            "tasks": [
                {"type": "noop"},
                {"type": "nope"},
                {"type": "noop", "id": dup},
                "junk",
                {"type": "typed", "params": {"count": 2}},
            ]
        },
    )
    assert resp.status_code == 200
    entries = await resp.get_json()
    assert [e["status"] for e in entries] == [201, 400, 202, 400, 201]
    assert entries[2]["id"] == dup
    assert "unknown task type" in entries[1]["error"]
    assert "tasks[3]" in entries[3]["error"]
    rec = await wait_record(client, entries[4]["id"])
    assert rec["result"] == 4


async def test_batch_rejects_bad_envelopes(client):
    for body in ({}, {"tasks": "x"}, [], {"tasks": [{"type": "noop"}] * 1001}):
        resp = await client.post("/v0/tasks/batch", json=body)
        assert resp.status_code == 400, body
        assert "error" in await resp.get_json()


async def test_probes_follow_readiness(client):
    assert (await client.get("/v0/healthz")).status_code == 503
    assert (await client.get("/v0/startupz")).status_code == 503
    assert await (await client.get("/v0/status")).get_json() == {"status": "Initializing"}
    task_id = await submit(client, {"type": "mark-ready"})
    assert (await wait_record(client, task_id))["status"] == "completed"
    assert (await client.get("/v0/healthz")).status_code == 200
    assert (await client.get("/v0/startupz")).status_code == 200
    assert await (await client.get("/v0/status")).get_json() == {"status": "Ready"}


async def test_livez_pings_the_store(client):
    resp = await client.get("/v0/livez")
    assert resp.status_code == 200
    resp = await client.get("/v0/livez?verbose=1")
    assert resp.status_code == 200


async def test_metrics_exposition(client):
    await wait_record(client, await submit(client, {"type": "noop"}))
    resp = await client.get("/v0/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = (await resp.get_data()).decode()
    assert 'sidecar_tasks_submitted_total{type="noop"} 1.0' in text


async def test_openapi_document(client):
    resp = await client.get("/v0/openapi.json")
    assert resp.status_code == 200
    doc = await resp.get_json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in ("/v0/tasks", "/v0/tasks/batch", "/v0/tasks/{task_id}", "/v0/status"):
        assert path in paths, sorted(paths)
    body = paths["/v0/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body


async def test_submit_during_shutdown_is_503_and_long_poll_returns(rt, client):
    task_id = await submit(client, {"type": "gate"})
    got = {}

    async def poll():
        got["rec"] = await wait_record(client, task_id, seconds=30)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.1)
            rt.begin_shutdown()
    assert got["rec"]["status"] == "running"
    resp = await client.post("/v0/tasks", json={"type": "noop"})
    assert resp.status_code == 503
    assert "shutting down" in (await resp.get_json())["error"]


async def test_unexpected_errors_are_json_500_with_request_id(rt, caplog):
    app = create_app(rt)

    @app.get("/v0/explode")
    async def explode():
        raise RuntimeError("kaboom")

    resp = await app.test_client().get("/v0/explode")
    assert resp.status_code == 500
    error = (await resp.get_json())["error"]
    assert "request id" in error
    request_id = error.rsplit(" ", 1)[-1].rstrip(")")
    assert any(request_id in r.getMessage() for r in caplog.records)
    assert "kaboom" not in error


async def test_store_unavailable_is_503(rt, client, monkeypatch):
    async def broken(*args, **kwargs):
        raise sidecar.StoreUnavailable("disk I/O error")

    monkeypatch.setattr(rt, "submit_ex", broken)
    resp = await client.post("/v0/tasks", json={"type": "noop"})
    assert resp.status_code == 503
    assert "disk I/O error" in (await resp.get_json())["error"]
