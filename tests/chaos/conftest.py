"""Collects every scenario's result and prints the fault suite's table at the end of the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.harness import ScenarioResult, format_table

RESULTS: list[ScenarioResult] = []


@pytest.fixture
def chaos_results() -> list[ScenarioResult]:
    return RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    table = format_table(RESULTS)
    terminalreporter.write_sep("=", "fault suite")
    terminalreporter.write_line(table)
    for result in RESULTS:
        if result.notes:
            terminalreporter.write_line(f"{result.name}: {result.notes}")
    report = os.environ.get("ORDERMGR_CHAOS_REPORT")
    if report:  # e.g. make chaos keeps the table in a file
        Path(report).write_text(table + "\n" + "".join(f"{r.name}: {r.notes}\n" for r in RESULTS))
