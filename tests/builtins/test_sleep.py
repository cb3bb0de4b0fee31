import math

import pytest
import trio

from sidecar.builtins.sleep import sleep

CONTEXT = {"home": None, "allow_exec": False}


async def test_sleep_waits_the_given_seconds_on_trio_time(autojump_clock, run_handler):
    start = trio.current_time()
    assert await run_handler(sleep, {"seconds": 90}) == {"slept": 90.0}
    assert trio.current_time() - start == pytest.approx(90)


async def test_sleep_of_zero_completes_at_once(autojump_clock, run_handler):
    assert await run_handler(sleep, {"seconds": 0}) == {"slept": 0.0}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({}, "seconds", "Field required"),
        ({"seconds": -1}, "seconds", "greater than or equal to 0"),
        ({"seconds": "5"}, "seconds", "valid number"),
        ({"seconds": math.inf}, "seconds", "finite"),
        ({"seconds": math.nan}, "seconds", "finite"),
        ({"seconds": True}, "seconds", "valid number"),
        ({"seconds": 1, "second": 1}, "second", "Extra inputs"),
    ],
)
def test_sleep_rejects_bad_params_naming_the_field(invalid, params, field, words):
    err = invalid(sleep, params, CONTEXT)
    assert err.field == field
    assert words in str(err)
    assert str(err).startswith(f"params.{field}:")


def test_sleep_params_must_be_an_object(invalid):
    assert invalid(sleep, [1], CONTEXT).field == "params"


async def test_sleep_is_cancellable(autojump_clock, run_handler):
    with trio.move_on_after(5) as scope:
        await run_handler(sleep, {"seconds": 3600})
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(5)
