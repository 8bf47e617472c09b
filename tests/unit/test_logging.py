"""The daemons' log formats: ``text`` as before, ``json`` one parseable object per line (localsched/logs.py)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localsched import logs

MAY_1_NOON = 1714564800.123  # 2024-05-01T12:00:00.123Z


def record(msg: str = "hello %s", args: tuple[object, ...] = ("world",), **fields: Any) -> logging.LogRecord:
    rec = logging.LogRecord("activator.app", logging.INFO, __file__, 1, msg, args, fields.pop("exc_info", None))
    rec.created = MAY_1_NOON
    rec.__dict__.update(fields)
    return rec


def as_json(rec: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_record_is_one_json_object_with_time_level_logger_and_message() -> None:
    assert as_json(record()) == {
        "time": "2024-05-01T12:00:00.123Z",
        "level": "INFO",
        "logger": "activator.app",
        "message": "hello world",
    }


def test_an_exception_is_its_traceback_in_one_string() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = as_json(record(exc_info=sys.exc_info()))
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: boom")
    assert entry["message"] == "hello world"


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter("json"))
    logger = logging.getLogger("test_logging.json")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.DEBUG
    yield logger, out
    logger.removeHandler(handler)


def test_extra_fields_are_keys_of_their_own_but_never_replace_the_standard_ones(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = json_logger
    logger.warning("cold start of %s", "default/hello", extra={"revision": "default/hello", "attempt": 2,
                                                                 "level": "loud", "node": object()})  # fmt: skip
    logger.exception("not in an except block")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["message"], first["level"], first["logger"]) == ("cold start of default/hello", "WARNING",
                                                                   "test_logging.json")  # fmt: skip
    assert (first["revision"], first["attempt"]) == ("default/hello", 2)
    assert first["node"].startswith("<object object at ")  # what JSON cannot hold is its str()
    assert set(second) == {"time", "level", "logger", "message", "exception"}  # no record internals leak


def test_text_is_the_format_the_daemons_always_had() -> None:
    line = logs.formatter("text").format(record())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO activator\.app: hello world", line), line


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text or json"):
        logs.formatter("xml")


def test_configure_makes_the_process_log_json_lines_on_stderr() -> None:
    code = ("import logging; from localsched import logs; logs.configure('INFO', 'json'); "
            "logging.getLogger('x').debug('hidden'); logging.getLogger('x').info('shown')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    [line] = done.stderr.splitlines()
    assert json.loads(line)["message"] == "shown"
