"""Child tasks: waiting for one, and stopping one, without losing a cancellation (STYLE 3).

A child is a task that one coroutine starts, keeps a handle on (so that someone else may
cancel it: a pre-emption, an abort) and waits for. Two rules hold for every child:

- when we are cancelled while we wait, the child is cancelled too and we wait for its
  cleanup (relays OFF) before our CancelledError goes on: nothing is left running behind us;
- our own cancellation always wins: a child's CancelledError is not ours, and ours is never
  swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel a task of ours and wait for its cleanup; our own cancellation still wins.

    Returns once the task has ended; its CancelledError is swallowed unless we are being
    cancelled too (then it propagates). Any other exception of the task propagates.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def wait_child(task: asyncio.Task[T]) -> asyncio.Task[T]:
    """Wait until `task` has ended, however it ends, and return it (the caller reads
    `cancelled()`, `exception()`, `result()`); its outcome is not raised here.

    If we are cancelled meanwhile, the child is cancelled and waited for
    (`cancel_and_wait`), then our CancelledError propagates. Someone else cancelling the
    child (a pre-emption) only ends the wait.
    """
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        await cancel_and_wait(task)
        raise
    return task


async def report_stuck(after_s: float, what: str) -> None:
    """If still running after `after_s` (a stop that takes too long), log at ERROR what every
    task is waiting on, one line each: `<what>: task <name> waits at <file:line fn> <- …`."""
    await asyncio.sleep(after_s)
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}"
                            f" {f.f_code.co_name}" for f in reversed(frames))
        log.error("%s: task %s waits at %s", what, task.get_name(), where or "?")
