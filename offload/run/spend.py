"""The daily limit as a promise (DESIGN.md, "Money"): what is submitted today never passes the limit by more than one
task's price, whatever the runs, gateways, targets and pools of a prompt.

Every task takes a *lease* on the day's room before its submit and gives it back once its wait has ended (its price
is then in the journal). Leases are counted with what the journal says was spent, so two gateways of one prompt, the
runs of a fan-out and a pool's tasks all draw on one room. The check and the lease are one step on the owner's loop
(offload/owner.py: one thread), so nothing comes between them.

A price not known yet is never counted as 0. A task that may have been paid without its price being known (a submit
whose answer was lost: ``unknown`` in the journal) counts at its part's price where the journal knows it; where it
does not, it is that one task past the limit, so no other part of unknown price goes today. A part with no price of its own (never run, nor its shape, nor its form
at another size) *runs alone first*: while one such task is under way, another waits for it (its price then tells
the next one's); it goes only while the day's room is not used up. So at most one task's price can pass the limit: the
one whose price nobody could know. Chosen over a default price, which would be wrong for every workflow but one:
GPUGeek prices by GPU and time, from cents to yuan.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from .. import errors
from ..owner import Interrupted
from ..poll import INTERRUPT_CHECK_S

# The estimates that say what this part costs: its own runs, its shape's, its form's scaled by work. The workflow's
# other parts ("workflow") say nothing of this one's price.
PRICED_BASES = ("exact", "shape", "scaled")
# Prices are compared at this precision (the platform's prices have at most a few decimals).
EPSILON = 1e-9


def price_of(estimate: dict | None) -> float | None:
    """What a lease holds for one task: the dearest run its estimate knows (a median would let a fan-out of runs
    priced above it pass the limit together), None where nothing says what this part costs."""
    if not estimate or estimate.get("basis") not in PRICED_BASES:
        return None
    price = estimate.get("price_max", estimate.get("price"))
    return float(price) if price is not None else None


@dataclass
class _Room:
    """The leases of one journal (one ComfyUI user folder) in this process."""
    held: dict = field(default_factory=dict)   # lease id -> its price (None: not known yet)
    next_id: int = 0

    def known(self) -> float:
        return sum(p for p in self.held.values() if p is not None)

    def unknown(self) -> int:
        return sum(1 for p in self.held.values() if p is None)


_rooms: dict = {}


def _room(journal) -> _Room:
    key = str(getattr(getattr(journal, "store", None), "path", id(journal)))
    return _rooms.setdefault(key, _Room())


class Lease:
    """One task's share of the day's room; ``release`` once its wait ended (idempotent)."""

    def __init__(self, room: _Room | None = None, lease_id: int | None = None):
        self.room, self.lease_id = room, lease_id

    def release(self) -> None:
        if self.room is not None:
            self.room.held.pop(self.lease_id, None)
            self.room = None


def _lost_today(journal) -> tuple[float, int]:
    """Today's tasks that may have been paid without a price in the journal (a submit whose answer was lost, a cancel
    that never got through: ``unknown``): what their parts' runs cost where the journal knows it, and how many have no
    known price at all."""
    day = datetime.fromtimestamp(time.time()).date()
    priced, unpriced = 0.0, 0
    for r in journal.store.all():
        if r.get("status") != "unknown" or r.get("price") or datetime.fromtimestamp(r.get("created", 0)).date() != day:
            continue
        price = price_of(journal.estimate(r.get("plan_hash"), r.get("shape_hash")) if r.get("plan_hash") else None)
        if price is None:
            unpriced += 1
        else:
            priced += price
    return priced, unpriced


def spent_and_held(journal) -> tuple[float, int]:
    """What today's tasks cost (the journal; a task that may have been paid at its part's price where known) and what
    the tasks under way are expected to cost (their leases); and how many of today's tasks may have been paid at a
    price nobody knows."""
    lost_priced, lost_unpriced = _lost_today(journal)
    return journal.spent_today() + lost_priced + _room(journal).known(), lost_unpriced


def _refusal(spent: float, price: float | None, limit: float, lost: bool = False) -> errors.SpendLimitError:
    if lost:
        return errors.SpendLimitError(key="err_spend_limit_lost", values={"limit": f"{limit:g}"})
    if price is None:
        return errors.SpendLimitError(key="err_spend_limit_reached", values={"spent": f"{spent:g}", "limit": f"{limit:g}"})
    return errors.SpendLimitError(key="err_spend_limit", values={"spent": f"{spent:g}", "price": f"{price:g}",
                                                                 "limit": f"{limit:g}"})


def check_spend(journal, limit: float | None, estimate: dict | None) -> None:
    """Refuse before anything is sent (uploads included) what cannot fit: ``estimate``'s price (all runs of a
    fan-out) over the room left, or no room left at all."""
    if not limit:
        return
    spent, _ = spent_and_held(journal)
    price = (estimate or {}).get("price") if price_of(estimate) is not None else None
    if spent >= limit - EPSILON or (price is not None and spent + price > limit + EPSILON):
        raise _refusal(spent, price, limit)


async def take(journal, limit: float | None, estimate_now: Callable[[], dict | None],
               interrupted: Callable[[], bool] = lambda: False, on_wait: Callable[[], None] = lambda: None) -> Lease:
    """A lease for one task about to be submitted, or SpendLimitError when it would pass the limit. A task whose
    price is not known waits while another such task is under way (``on_wait`` is told once), then looks again at
    ``estimate_now()`` (the first one's price is in the journal by then). A stop while waiting raises Interrupted."""
    if not limit:
        return Lease()
    room = _room(journal)
    told = False
    while True:
        price = price_of(estimate_now())
        spent, lost_unpriced = spent_and_held(journal)
        if price is not None:
            if spent + price > limit + EPSILON:
                raise _refusal(spent, price, limit)
        elif spent >= limit - EPSILON:
            raise _refusal(spent, None, limit)
        elif lost_unpriced:   # a task that may be paid holds the one place for a price nobody knows
            raise _refusal(spent, None, limit, lost=True)
        elif room.unknown():   # the one task whose price nobody knows is under way: wait for its price
            if not told:
                on_wait()
                told = True
            if interrupted():
                raise Interrupted(None)
            await asyncio.sleep(INTERRUPT_CHECK_S)
            continue
        room.next_id += 1
        room.held[room.next_id] = price
        return Lease(room, room.next_id)
