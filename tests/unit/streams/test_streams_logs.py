"""The console: callstream's own lines, framework warnings once a minute, thread failures logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from streams import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the root handlers, levels and thread hook that configure() replaces."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in logs.FRAMEWORK_LOGGERS}
    hook = threading.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
    threading.excepthook = hook


def _record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_a_repeated_framework_line_passes_once_per_interval_with_a_count() -> None:
    f = logs.RepeatFilter(interval=60)
    first = _record("librdkafka", "FAIL: SASL authentication error (after 341ms in state AUTH)")
    assert f.filter(first)
    for ms in (298, 302, 310):  # the same line but for its numbers
        assert not f.filter(
            _record("librdkafka", f"FAIL: SASL authentication error (after {ms}ms in state AUTH)")
        )
    assert f.filter(_record("librdkafka", "FAIL: connection refused"))  # a different line
    f.interval = 0  # the minute is over
    later = _record("librdkafka", "FAIL: SASL authentication error (after 5ms in state AUTH)")
    assert f.filter(later)
    assert later.getMessage().endswith("(3 more like this in the last 0s)")


def test_callstream_lines_are_never_held_back() -> None:
    f = logs.RepeatFilter(interval=60)
    assert all(
        f.filter(_record("streams.runner", "connector acme/daily: poll failed")) for _ in range(5)
    )


def test_frameworks_are_quiet_unless_debug(restore_logging: None) -> None:
    logs.configure("INFO")
    assert logging.getLogger("faust").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("aiokafka.consumer").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("librdkafka").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("streams.runner").getEffectiveLevel() == logging.INFO
    logs.configure("DEBUG")
    assert logging.getLogger("mode").getEffectiveLevel() == logging.DEBUG
    logs.configure("ERROR")
    assert logging.getLogger("faust").getEffectiveLevel() == logging.ERROR


def test_a_thread_failure_is_one_log_record(
    restore_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    logs.configure("INFO")
    logging.getLogger().addHandler(caplog.handler)

    def boom() -> None:
        raise RuntimeError("lost the connection")

    thread = threading.Thread(target=boom, name="worker-1")
    thread.start()
    thread.join()
    (record,) = [r for r in caplog.records if r.name == "streams.logs"]
    assert record.getMessage() == "thread worker-1 failed"
    assert record.exc_info is not None and "lost the connection" in str(record.exc_info[1])
