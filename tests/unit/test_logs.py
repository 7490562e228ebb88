"""Structured logs: one JSON object per line with the record's extra fields."""

from __future__ import annotations

import json
import logging

from managed_os.logs import JsonFormatter


def test_a_log_record_becomes_one_json_object_with_its_extras():
    record = logging.LogRecord("svc", logging.WARNING, __file__, 1, "sync %s", ("failed",), None)
    record.source = "gdmf"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["msg"] == "sync failed"
    assert entry["logger"] == "svc" and entry["source"] == "gdmf"
    assert "\n" not in line
