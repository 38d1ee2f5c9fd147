"""Extra passes over one code (`collect_code`): the queue the scheduler's loop drains, and why
a request is refused. The scheduler owns the lock; this module owns the rules."""

from __future__ import annotations

from collector.config import Mode, is_code_id

MAX_QUEUED_CODES = 20  # extra passes waiting at once


class CollectRefused(RuntimeError):
    """`collect_code` cannot take the request now; `reason` says why (shown to the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_request(code_id: object, source: str) -> None:
    """CollectRefused for a request no state of the collector could take."""
    if not is_code_id(code_id):
        raise CollectRefused(f"{repr(code_id)[:40]} is not a LEGITEXT code id (LEGITEXT + 12 digits)")
    if source == "dumps":
        raise CollectRefused("the source is DILA's dumps (COLLECTOR_SOURCE=dumps): a pass applies whole "
                             "archives, not one code; every configured code comes with the next archive")


def check_now(*, shutting_down: bool, once_running: bool, massive_on: bool, waiting: int) -> None:
    """CollectRefused when the collector cannot queue an extra pass in its present state."""
    if shutting_down:
        raise CollectRefused("the collector is shutting down")
    if once_running:
        raise CollectRefused("a `run --once` pass is in progress in this process; try again after it")
    if massive_on:
        raise CollectRefused("a MASSIVE pass is on: it walks every code already; switch to "
                             "MAINTENANCE or stop the collector to collect one code now")
    if waiting >= MAX_QUEUED_CODES:
        raise CollectRefused(f"{MAX_QUEUED_CODES} codes are already waiting; try again later")


def massive_on(running: bool, mode: Mode, busy_mode: Mode | None) -> bool:
    """Desired running in MASSIVE, or a MASSIVE pass (not an extra one) in flight."""
    return (running and mode is Mode.MASSIVE) or busy_mode is Mode.MASSIVE
