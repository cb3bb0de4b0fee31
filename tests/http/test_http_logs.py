"""Log formats of `sidecar serve`: JSON lines carry task id and type as fields."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sidecar.http.logs import configure_logging


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_task_fields(restore_root_logging):
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    adapter = logging.LoggerAdapter(
        logging.getLogger("sidecar.task.resize"), {"task_id": "abc", "task_type": "resize"}
    )
    adapter.warning("task failed: %s", "boom")
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["msg"] == "task failed: boom"
    assert line["level"] == "warning"
    assert (line["task_id"], line["task_type"]) == ("abc", "resize")
    assert line["ts"].endswith("+00:00")


def test_text_lines_append_extras(restore_root_logging):
    out = io.StringIO()
    configure_logging("text", "DEBUG", stream=out)
    logging.getLogger("sidecar.http").debug("task submitted", extra={"task_id": "x1"})
    assert out.getvalue().rstrip().endswith("task submitted task_id=x1")


def test_unknown_format_is_rejected(restore_root_logging):
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")
