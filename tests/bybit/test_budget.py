"""The account's rate-limit budget on its own, on a hand-driven clock: who goes, when, and in
which order (contract §15)."""

from __future__ import annotations

import anyio
import pytest

from ordermgr.bybit.budget import (
    EXHAUSTED_LOG_EVERY_S, MARGIN_S, PACE_SHARE, WINDOW_S, BudgetTimeout, RateBudget, Ticket,
)
from ordermgr.bybit.client import counted_at
from ordermgr.domain.model import Priority

CREATE, CANCEL, REALTIME = "place_order", "cancel_order", "get_open_orders"
PACE_S = PACE_SHARE * WINDOW_S / 10  # Bybit's 10 creates/s


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def budget(clock: Clock) -> RateBudget:
    return RateBudget(max_in_flight=32, clock=clock)


def granted(tickets: list[Ticket]) -> list[int]:
    return [i for i, ticket in enumerate(tickets) if ticket.permit is not None]


def answer_all(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        if ticket.permit is not None:
            ticket.permit.done()


def fill_creates(budget: RateBudget, n: int = 10) -> list[Ticket]:
    """``n`` closes (not paced): each granted at once while the window has room."""
    return [budget.enqueue(CREATE, Priority.CLOSE, f"FILL{i}") for i in range(n)]


def test_ten_closes_go_at_once_and_the_eleventh_waits_for_the_window(budget: RateBudget, clock: Clock) -> None:
    tickets = fill_creates(budget, 11)
    assert granted(tickets) == list(range(10))
    clock.t += 0.2
    answer_all(tickets[:10])  # answered at t+0.2: counted until t+0.2+1 s+margin
    assert tickets[10].permit is None
    clock.t += WINDOW_S + MARGIN_S - 0.001
    budget.dispatch()
    assert tickets[10].permit is None
    clock.t += 0.002
    budget.dispatch()
    assert tickets[10].permit is not None


def test_a_request_in_flight_counts_however_long_it_takes(budget: RateBudget, clock: Clock) -> None:
    tickets = fill_creates(budget, 11)
    clock.t += 30  # no answers yet: the venue may still be counting them
    budget.dispatch()
    assert tickets[10].permit is None


def test_orders_that_open_positions_are_paced(budget: RateBudget, clock: Clock) -> None:
    tickets = [budget.enqueue(CREATE, Priority.OPEN, f"S{i}") for i in range(3)]
    assert granted(tickets) == [0]
    clock.t += PACE_S * 0.99
    budget.dispatch()
    assert granted(tickets) == [0]
    clock.t += PACE_S * 0.02
    budget.dispatch()
    assert granted(tickets) == [0, 1]
    assert budget.next_change(clock.t) == pytest.approx(clock.t + PACE_S)


def test_closes_go_before_opens_and_cancels_never_queue_behind_creates(budget: RateBudget, clock: Clock) -> None:
    full = fill_creates(budget)
    opening = budget.enqueue(CREATE, Priority.OPEN, "AAA")  # first in the queue
    closing = budget.enqueue(CREATE, Priority.CLOSE, "BBB")
    cancel = budget.enqueue(CANCEL, Priority.CANCEL, "AAA")
    assert cancel.permit is not None  # its own endpoint: the full create window is no concern of it
    answer_all(full)
    clock.t += WINDOW_S + MARGIN_S + 0.001
    budget.dispatch()
    assert closing.permit is not None and opening.permit is not None  # room for both now, close first
    assert budget.figures().lanes["close"].waited == 1


def test_when_one_slot_frees_the_close_takes_it(budget: RateBudget, clock: Clock) -> None:
    full = fill_creates(budget)
    opening = budget.enqueue(CREATE, Priority.OPEN, "AAA")
    closing = budget.enqueue(CREATE, Priority.CLOSE, "BBB")
    full[0].permit.done()  # type: ignore[union-attr]
    clock.t += WINDOW_S + MARGIN_S + 0.001
    budget.dispatch()
    assert closing.permit is not None and opening.permit is None


def test_symbols_take_turns_within_a_lane(budget: RateBudget, clock: Clock) -> None:
    full = fill_creates(budget)
    order = ["AAA", "AAA", "AAA", "BBB", "CCC"]
    tickets = [budget.enqueue(CREATE, Priority.CLOSE, symbol) for symbol in order]
    served: list[int] = []
    for slot in full:  # free the window one request at a time
        slot.permit.done()  # type: ignore[union-attr]
        clock.t += WINDOW_S + MARGIN_S + 0.001
        budget.dispatch()
        served += [i for i in granted(tickets) if i not in served]
    assert [order[i] for i in served] == ["AAA", "BBB", "CCC", "AAA", "AAA"]


def test_x_bapi_limit_and_status_correct_the_window(budget: RateBudget, clock: Clock) -> None:
    first = budget.enqueue(CREATE, Priority.CLOSE, "AAA")
    first.permit.done(limit=20, remaining=12)  # type: ignore[union-attr]  # 8 used there, 1 here
    figures = budget.figures().endpoints["/v5/order/create"]
    assert (figures.limit, figures.remaining) == (20, 12)
    clock.t += WINDOW_S + MARGIN_S + 0.001
    assert budget.figures().endpoints["/v5/order/create"].remaining == 20  # the others' requests left too


def test_a_10006_closes_the_endpoint_until_its_reset(budget: RateBudget, clock: Clock) -> None:
    first = budget.enqueue(CREATE, Priority.CANCEL, "AAA")
    first.permit.done(blocked_s=0.3, rate_limited=True)  # type: ignore[union-attr]
    retry = budget.enqueue(CREATE, Priority.CANCEL, "AAA")
    assert retry.permit is None and budget.figures().endpoints["/v5/order/create"].remaining == 0
    clock.t += 0.3
    budget.dispatch()
    assert retry.permit is not None
    assert budget.figures().endpoints["/v5/order/create"].rate_limited == 1


def test_two_worker_slots_are_kept_for_cancels_and_closes(clock: Clock) -> None:
    budget = RateBudget(max_in_flight=2, clock=clock)
    reads = [budget.enqueue(REALTIME, Priority.READ, f"S{i}") for i in range(3)]
    assert granted(reads) == [0, 1] and budget.threads == 4
    cancel = budget.enqueue(CANCEL, Priority.CANCEL, "AAA")
    close = budget.enqueue(CREATE, Priority.CLOSE, "BBB")
    assert cancel.permit is not None and close.permit is not None
    assert budget.enqueue(CANCEL, Priority.CANCEL, "CCC").permit is None  # every slot taken now
    reads[0].permit.done()  # type: ignore[union-attr]
    assert reads[2].permit is None  # the freed slot goes to the waiting cancel, not to the read
    assert budget.figures().in_flight == 4


def test_a_window_that_is_not_full_sets_no_timer(budget: RateBudget, clock: Clock) -> None:
    # Answered requests leave the window a second later, but with room left that changes nothing
    # for a waiter: only a full window's next leaving is worth waking up for.
    budget.enqueue(CREATE, Priority.CLOSE, "AAA").permit.done()  # type: ignore[union-attr]
    assert budget.next_change(clock.t) == float("inf")
    full = fill_creates(budget, 9)
    full[0].permit.done()  # type: ignore[union-attr]
    assert budget.next_change(clock.t) == pytest.approx(clock.t + WINDOW_S + MARGIN_S)


def test_a_withdrawn_ticket_leaves_the_queue_and_an_unused_permit_gives_its_room_back(
    budget: RateBudget, clock: Clock
) -> None:
    full = fill_creates(budget)
    waiting = budget.enqueue(CREATE, Priority.CLOSE, "AAA")
    budget.withdraw(waiting)
    assert budget.figures().endpoints["/v5/order/create"].queued == 0
    full[0].permit.unused()  # type: ignore[union-attr]
    assert budget.enqueue(CREATE, Priority.CLOSE, "BBB").permit is not None


async def test_acquire_waits_for_an_answer_and_gives_up_at_its_deadline() -> None:
    budget = RateBudget(max_in_flight=1)
    held = await budget.acquire(REALTIME, Priority.READ, "AAA")
    with pytest.raises(BudgetTimeout):
        await budget.acquire(REALTIME, Priority.READ, "BBB", give_up_at=budget.now() + 0.05)
    async with anyio.create_task_group() as tg:
        got: list[object] = []

        async def second() -> None:
            got.append(await budget.acquire(REALTIME, Priority.READ, "CCC"))

        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert got == [] and budget.figures().lanes["read"].queued == 1
        held.done()
    assert len(got) == 1 and budget.figures().lanes["read"].queued == 0


def test_a_full_window_is_logged_once_in_a_while_not_per_request(
    budget: RateBudget, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    fill_creates(budget)
    for n in range(5):
        budget.enqueue(CREATE, Priority.CLOSE, f"WAIT{n}")
    clock.t += EXHAUSTED_LOG_EVERY_S
    budget.enqueue(CREATE, Priority.CLOSE, "LATER")
    lines = [r for r in caplog.records if r.getMessage() == "rate-limit budget exhausted; requests wait for room"]
    assert [(r.endpoint, r.limit_per_s, r.queued) for r in lines] == [  # type: ignore[attr-defined]
        ("/v5/order/create", 10, 1), ("/v5/order/create", 10, 6)]


@pytest.mark.parametrize(
    ("venue_ms", "offset_ms", "error_ms", "expected"),
    [
        (None, 0, 0, 10.100),  # no stamp: the answer's arrival, the latest it can have been
        (1_000_050, 0, 2, 10.052),  # the venue's stamp, 2 ms later for the offset's uncertainty
        (1_000_050 + 500, 500, 2, 10.052),  # a venue clock 500 ms ahead of ours
        (999_000, 0, 0, 10.0),  # never before it was sent
        (1_000_400, 0, 0, 10.100),  # never after its answer
    ],
)
def test_when_the_venue_counted_a_request(venue_ms: int | None, offset_ms: int, error_ms: int, expected: float) -> None:
    # Sent at 10.0 and answered at 10.1 on the budget's clock; the local wall clock read 1_000_100 ms then.
    assert counted_at(10.0, 10.1, 1_000_100, venue_ms, offset_ms, error_ms) == pytest.approx(expected)
