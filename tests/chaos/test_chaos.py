"""The fault suite: each scenario streams signals against the paper venue while something breaks,
then checks the invariants (tests/chaos/harness.py): no signal lost, no duplicate order, no fill
lost, positions equal to the venue's, every event published.

The short sizes run in ``make test``; ``ORDERMGR_CHAOS=full`` (``make chaos``) runs the full ones.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.chaos import scenarios
from tests.chaos.harness import ScenarioResult, Sizes, chosen_sizes

SIZES = chosen_sizes()
Scenario = Callable[[str, Path, Sizes, ScenarioResult], Awaitable[ScenarioResult]]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(SIZES.timeout_s * 2 + 60),
    pytest.mark.parametrize("sizes", [SIZES], ids=[SIZES.name]),
]


# Scenarios that fail because of a known, open bug in the service, by scenario name, with the
# finding (tests/chaos/test_findings.py holds the minimal strict-xfail test of each). Not strict:
# the scenarios are randomised and a race does not fire in every run. Empty: F1, F2, F4 and F5
# are fixed; F3 (rounding drift) is tolerated by the position check and open in test_findings.
KNOWN_BUGS: dict[str, str] = {}


def known_bug(name: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(name in KNOWN_BUGS, reason=KNOWN_BUGS.get(name, ""), strict=False)


async def run(name: str, scenario: Scenario, conninfo: str, tmp_path: Path, sizes: Sizes,
              results: list[ScenarioResult]) -> ScenarioResult:  # fmt: skip
    result = ScenarioResult(name, 0)
    results.append(result)  # in the table even if the scenario cannot finish
    started = time.monotonic()
    try:
        await scenario(conninfo, tmp_path, sizes, result)
    except BaseException as exc:
        result.wall_s = time.monotonic() - started
        result.problems.append(f"scenario stopped: {exc!r}")
        raise
    print(f"\n{result.name}: signals={result.signals} orders={result.orders} duplicates={result.duplicates} "
          f"lost={result.lost} position_mismatches={result.position_mismatches} recover_s={result.recover_s} "
          f"wall_s={result.wall_s:.1f} notes={result.notes}")  # fmt: skip
    assert result.ok, f"{result.name} (daemon logs in {tmp_path}):\n" + "\n".join(result.problems[:50])
    return result


@known_bug("sigkill")
async def test_sigkill_at_random_instants_then_restart(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("sigkill", scenarios.sigkill, clean_database, tmp_path, sizes, chaos_results)


@known_bug("rabbitmq-restart")
async def test_rabbitmq_restarted_mid_stream(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("rabbitmq-restart", scenarios.rabbitmq_restart, clean_database, tmp_path, sizes, chaos_results)


@known_bug("postgres-stop")
async def test_postgres_stopped_mid_stream(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("postgres-stop", scenarios.postgres_stop, clean_database, tmp_path, sizes, chaos_results)


@known_bug("venue-faults")
async def test_venue_lost_responses_10006_and_5xx_bursts(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("venue-faults", scenarios.venue_faults, clean_database, tmp_path, sizes, chaos_results)


@known_bug("rate-limit-flood")
async def test_a_flood_against_the_enforced_rate_limits(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("rate-limit-flood", scenarios.rate_limit_flood, clean_database, tmp_path, sizes, chaos_results)


@known_bug("event-faults")
async def test_ws_gateway_events_duplicated_dropped_and_reordered(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("event-faults", scenarios.event_faults, clean_database, tmp_path, sizes, chaos_results)


@known_bug("sigterm")
async def test_sigterm_mid_stream_drains_and_exits_0(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("sigterm", scenarios.sigterm, clean_database, tmp_path, sizes, chaos_results)


@known_bug("two-instances")
async def test_two_instances_from_the_start(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("two-instances", scenarios.two_instances, clean_database, tmp_path, sizes, chaos_results)


@known_bug("rolling-deploy")
async def test_a_rolling_deploy_hands_over_within_two_seconds_of_the_drain(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("rolling-deploy", scenarios.rolling_deploy, clean_database, tmp_path, sizes, chaos_results)


@known_bug("leader-sigkill")
async def test_the_leader_sigkilled_mid_stream_is_replaced_within_ten_seconds(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("leader-sigkill", scenarios.leader_sigkill, clean_database, tmp_path, sizes, chaos_results)


@known_bug("leader-cut-from-postgres")
async def test_a_leader_cut_from_postgres_stops_before_its_lease_passes(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("leader-cut-from-postgres", scenarios.leader_cut_from_postgres, clean_database, tmp_path, sizes,
              chaos_results)  # fmt: skip


@known_bug("leader-frozen")
async def test_a_frozen_leader_is_replaced_and_stands_by_when_thawed(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("leader-frozen", scenarios.leader_frozen, clean_database, tmp_path, sizes, chaos_results)


@known_bug("ticker-stall")
async def test_the_ticker_stream_stalls_mid_stream(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("ticker-stall", scenarios.ticker_stall, clean_database, tmp_path, sizes, chaos_results)


@known_bug("halt-close-resume")
async def test_halt_under_a_stream_close_all_and_resume(
    clean_database: str, tmp_path: Path, sizes: Sizes, chaos_results: list[ScenarioResult]
) -> None:
    await run("halt-close-resume", scenarios.halt_close_resume, clean_database, tmp_path, sizes, chaos_results)
