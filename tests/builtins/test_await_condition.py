import pytest
import trio
from fake_http import Reply

from sidecar.builtins.await_condition import await_condition
from sidecar.errors import TaskError
from sidecar.handlers import TaskContext


@pytest.fixture
def context(home):
    return {"home": home, "allow_exec": False}


async def test_waits_until_the_file_appears_reporting_progress(
    autojump_clock, home, make_ctx, monkeypatch
):
    ctx = make_ctx("await-condition")
    params = await_condition.validate(
        {"file": "ready/flag", "interval": 1, "timeout": 60}, {"home": home}
    )
    seen = []

    async def create_later():
        await trio.sleep(4.5)
        await trio.Path(home / "ready").mkdir()
        await trio.Path(home / "ready/flag").write_text("")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create_later)
        original = TaskContext.report_progress

        def recording(self, value):
            seen.append(value)
            original(self, value)

        monkeypatch.setattr(TaskContext, "report_progress", recording)
        result = await await_condition(ctx, params)
    assert result["last"] == {"exists": True}
    assert result["attempts"] == seen[-1]["attempts"] >= 2
    assert seen[0] == {"attempts": 1, "last": {"exists": False}}
    assert 4 <= result["elapsed"] <= 6
    assert ctx.progress == seen[-1]


async def test_a_file_that_never_appears_fails_on_timeout(autojump_clock, run_handler):
    start = trio.current_time()
    with pytest.raises(TaskError, match=r"not met within 10s after \d+ attempt") as info:
        await run_handler(await_condition, {"file": "never", "interval": 2, "timeout": 10})
    assert trio.current_time() - start == pytest.approx(10)
    assert info.value.retryable
    assert info.value.result["last"] == {"exists": False}
    assert info.value.result["attempts"] >= 5


async def test_a_file_symlinked_out_of_home_after_submit_fails(home, tmp_path, make_ctx):
    params = await_condition.validate({"file": "flag", "timeout": 5}, {"home": home})
    (tmp_path / "elsewhere").write_text("")
    (home / "flag").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TaskError, match="resolves outside the home directory"):
        await await_condition(make_ctx(), params)


async def test_waits_until_the_url_answers_2xx(http_server, run_handler):
    statuses = iter([503, 503, 200])
    http_server.respond = lambda request: Reply(next(statuses))
    result = await run_handler(
        await_condition, {"url": http_server.url + "/health", "interval": 0.01, "timeout": 5}
    )
    assert result["attempts"] == 3
    assert result["last"] == {"status": 200}
    assert [r.path for r in http_server.requests] == ["/health"] * 3


async def test_an_explicit_status_must_match_exactly(http_server, run_handler):
    statuses = iter([200, 204])
    http_server.respond = lambda request: Reply(next(statuses))
    result = await run_handler(
        await_condition, {"url": http_server.url, "status": 204, "interval": 0.01, "timeout": 5}
    )
    assert result["attempts"] == 2


async def test_waits_until_the_json_value_at_the_path_equals(http_server, run_handler):
    bodies = iter(
        [
            "starting",
            {"result": {}},
            {"result": {"sync": {"catching_up": True}}},
            {"result": {"sync": {"catching_up": False}}},
        ]
    )
    http_server.respond = lambda request: Reply(200, next(bodies))
    seen = []
    result = await run_handler(
        await_condition,
        {
            "url": http_server.url,
            "jsonPath": "result.sync.catching_up",
            "equals": False,
            "interval": 0.01,
            "timeout": 5,
        },
    )
    seen = result["last"]
    assert result["attempts"] == 4
    assert seen == {"status": 200, "value": False}


async def test_json_path_indexes_arrays_and_numbers_compare_by_value(http_server, run_handler):
    http_server.respond = lambda request: Reply(200, {"peers": [{"height": 10.0}]})
    result = await run_handler(
        await_condition,
        {"url": http_server.url, "jsonPath": "peers.0.height", "equals": 10, "timeout": 5},
    )
    assert result["last"]["value"] == 10.0


async def test_true_is_not_one(http_server, run_handler):
    http_server.respond = lambda request: Reply(200, {"ok": 1})
    with pytest.raises(TaskError) as info:
        await run_handler(
            await_condition,
            {
                "url": http_server.url,
                "jsonPath": "ok",
                "equals": True,
                "interval": 0.05,
                "timeout": 0.2,
            },
        )
    assert info.value.result["last"] == {"status": 200, "value": 1}


async def test_json_path_without_equals_waits_for_presence(http_server, run_handler):
    bodies = iter([{}, {"ready": None}])
    http_server.respond = lambda request: Reply(200, next(bodies))
    result = await run_handler(
        await_condition,
        {"url": http_server.url, "jsonPath": "ready", "interval": 0.01, "timeout": 5},
    )
    assert result["last"] == {"status": 200, "value": None}


async def test_observations_explain_why_the_wait_failed(http_server, run_handler):
    http_server.respond = lambda request: Reply(200, "<html>")
    with pytest.raises(TaskError, match="body is not JSON"):
        await run_handler(
            await_condition,
            {"url": http_server.url, "jsonPath": "a", "interval": 0.05, "timeout": 0.2},
        )


async def test_connection_refused_is_an_observation_not_a_crash(closed_port_url, run_handler):
    with pytest.raises(TaskError, match="ConnectError") as info:
        await run_handler(
            await_condition, {"url": closed_port_url, "interval": 0.05, "timeout": 0.3}
        )
    assert info.value.result["attempts"] >= 2
    assert info.value.result["last"]["error"].startswith("ConnectError")


async def test_a_wait_is_cancellable(http_server, run_handler):
    http_server.respond = lambda request: Reply(503)
    with trio.move_on_after(0.3) as scope:
        await run_handler(
            await_condition, {"url": http_server.url, "interval": 0.05, "timeout": 60}
        )
    assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"timeout": 5}, None, "exactly one of 'file' or 'url'"),
        ({"file": "a", "url": "http://x/", "timeout": 5}, None, "exactly one of"),
        ({"file": "a"}, "timeout", "Field required"),
        ({"file": "a", "timeout": 0}, "timeout", "greater than 0"),
        ({"file": "a", "timeout": 5, "interval": 0}, "interval", "greater than 0"),
        ({"file": "a", "timeout": 5, "interval": "1"}, "interval", "valid number"),
        ({"file": "a", "timeout": 5, "status": 200}, None, "'status' applies to 'url' only"),
        ({"file": "a", "timeout": 5, "jsonPath": "x"}, None, "'jsonPath' applies to 'url'"),
        ({"file": "a", "timeout": 5, "equals": None}, None, "'equals' applies to 'url'"),
        ({"url": "http://x/", "timeout": 5, "equals": 1}, None, "'equals' needs 'jsonPath'"),
        ({"url": "http://x/", "timeout": 5, "jsonPath": "a..b"}, "jsonPath", "dot-separated"),
        ({"url": "http://x/", "timeout": 5, "status": 99}, "status", "greater than or equal"),
        ({"url": "ftp://x/", "timeout": 5}, "url", "http:// or https://"),
        ({"url": "/health", "timeout": 5}, "url", "http:// or https://"),
        ({"url": "http://x:port/", "timeout": 5}, "url", "not a valid URL"),
        ({"file": "../a", "timeout": 5}, "file", "must not contain '..'"),
        ({"file": "/etc/passwd", "timeout": 5}, "file", "not absolute"),
        ({"file": "a", "timeout": 5, "every": 1}, "every", "Extra inputs"),
    ],
)
def test_bad_params_are_rejected_at_submit(invalid, context, params, field, words):
    err = invalid(await_condition, params, context)
    assert err.field == field, str(err)
    assert words in str(err)


def test_a_file_symlinked_out_of_home_is_rejected_at_submit(invalid, context, home, tmp_path):
    (home / "flag").symlink_to(tmp_path)
    assert invalid(await_condition, {"file": "flag", "timeout": 1}, context).field == "file"


def test_await_condition_is_idempotent():
    assert await_condition.idempotent
