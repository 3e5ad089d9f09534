"""The leader's store port over MySQL: fenced, batched, on lanes of its own.

The leader's run pipeline reaches MySQL only through :class:`LeaderStore`. It owns what every
caller used to repeat: the hop off the event loop, the epoch-fenced transaction
(:func:`cadenza.store.fencing.leader_transaction`) and the retry of deadlock victims.

Two lanes, each one thread, so the fire path never queues behind bookkeeping: the *fire* lane
carries claims, dispatch records and the balancer reads they need; the *books* lane carries
confirmations, attempt ends, retention and the reconciler's reads. The fire lane may have an
engine of its own (``fire_engine``: the replica gives it a pool of one connection), so a claim
never waits for a connection that callbacks, status reads or the mirror hold in the shared pool.

Group commit: writes that arrive while a lane's transaction is in flight wait and then go
together, in arrival order, in the lane's next transaction. One run costs no transaction of its
own once many are in flight, and a lone run is not held back by any timer.

WARNING: one write that raises fails its whole batch (every caller in it gets the error), and
:class:`~cadenza.store.fencing.Fenced` fails every caller: the leader must step down. A write
that merely does not apply (a guarded update matching no row) is an ordinary ``False``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine

from cadenza.batching import Coalescer
from cadenza.core.ids import Epoch, ExecutionId, TaskUid
from cadenza.core.runs import Finish, Next, Outcome
from cadenza.metrics import Metrics
from cadenza.store import balance, changelog, deadlocks, executions, fencing, retention
from cadenza.store import runs as store_runs
from cadenza.store.port import Begin, Claims, HistoryLimit, NewRun

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[Connection], Any]

MAX_BATCH = 500
"""Writes per transaction at most: a longer transaction holds the epoch row's share lock longer,
which a new leader's epoch bump waits for."""
PRUNE_BATCH = 1000


class _Lane:
    """One thread and the engine it uses, and the writes waiting for its next fenced
    transaction."""

    def __init__(
        self, name: str, store: LeaderStore, engine: Engine, metrics: Metrics | None
    ) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"cadenza-{name}")
        self._store = store
        self._engine = engine
        self._seconds = None if metrics is None else metrics.store_lane.labels(lane=name)
        self.write: Coalescer[Write, Any] = Coalescer(self._transact, MAX_BATCH)

    async def _run(self, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn)
        finally:
            if self._seconds is not None:
                self._seconds.observe(time.monotonic() - started)

    async def transact(self, op: Write) -> Any:
        """``op`` alone in a fenced transaction of its own (it batches for itself)."""
        done = await self._run(functools.partial(self._store.transact, [op], self._engine))
        return done[0]

    async def query(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` outside any transaction of the leader's."""

        def read() -> T:
            with self._engine.connect() as conn:
                return fn(conn, *args)

        return await self._run(read)

    async def _transact(self, ops: list[Write]) -> list[Any]:
        return await self._run(functools.partial(self._store.transact, ops, self._engine))

    def close(self) -> None:
        self.write.close()
        self._thread.shutdown(wait=False, cancel_futures=True)


class LeaderStore:
    """:class:`cadenza.store.port.RunStore` for the leader of ``epoch``."""

    def __init__(
        self,
        engine: Engine,
        lock_name: str,
        epoch: Epoch,
        metrics: Metrics | None = None,
        *,
        fire_engine: Engine | None = None,
    ) -> None:
        self._engine = engine
        self._lock_name = lock_name
        self._epoch = epoch
        self._metrics = metrics
        self._fire = _Lane("fire", self, fire_engine or engine, metrics)
        self._books = _Lane("books", self, engine, metrics)
        # The hot writes of every run go as one set of statements per batch, not per run.
        self._begins: Coalescer[Begin, bool] = Coalescer(self._begin_batch, MAX_BATCH)
        self._confirms: Coalescer[tuple[ExecutionId, int], bool] = Coalescer(
            self._confirm_batch, MAX_BATCH
        )
        # A burst of new Tasks asks for each one's balancer state at once: one query for all.
        self._balances: Coalescer[tuple[TaskUid, str], dict[str, Any]] = Coalescer(
            self._balance_batch, MAX_BATCH
        )

    @property
    def epoch(self) -> Epoch:
        return self._epoch

    def transact(self, ops: Sequence[Write], engine: Engine | None = None) -> list[Any]:
        """Run ``ops`` in order in one fenced transaction (blocking; on a lane's thread)."""

        def once() -> list[Any]:
            with fencing.leader_transaction(
                engine or self._engine, self._lock_name, self._epoch
            ) as conn:
                return [op(conn) for op in ops]

        try:
            return deadlocks.retry_deadlocks(once)
        except fencing.Fenced:
            if self._metrics is not None:
                self._metrics.fenced.inc()
            raise

    async def close(self) -> None:
        self._begins.close()
        self._confirms.close()
        self._balances.close()
        self._fire.close()
        self._books.close()

    # -- the fire path ------------------------------------------------------------------------

    async def claim(self, runs: Sequence[NewRun]) -> Claims:
        items = list(runs)
        if not items:
            return Claims([], frozenset())

        def claim_all(conn: Connection) -> Claims:
            mirrored = store_runs.mirrored_tasks(conn, {r.task for r in items})
            wanted = [i for i, r in enumerate(items) if r.task in mirrored]
            claimed = executions.claim_many(
                conn,
                [
                    executions.NewClaim(
                        items[i].task,
                        items[i].namespace,
                        items[i].name,
                        items[i].tick,
                        items[i].origin,
                        items[i].status,
                        items[i].max_attempts,
                        items[i].trigger_key,
                    )
                    for i in wanted
                ],
                self._epoch,
            )
            out: list[ExecutionId | None] = [None] * len(items)
            for i, run in zip(wanted, claimed, strict=True):
                out[i] = run
            return Claims(out, frozenset({r.task for r in items} - mirrored))

        result: Claims = await self._fire.write(claim_all)
        return result

    async def begin_dispatch(self, begin: Begin) -> bool:
        return await self._begins(begin)

    async def _begin_batch(self, begins: list[Begin]) -> list[bool]:
        # Each Task's latest balancer state: later picks in the batch saw the earlier ones.
        states = {
            b.balance.task: (b.balance.strategy, dict(b.balance.state))
            for b in begins
            if b.balance is not None
        }

        def write(conn: Connection) -> list[bool]:
            balance.save_many(conn, states, self._epoch)
            items = [(b.run, b.attempt, b.to) for b in begins]
            return store_runs.begin_many(conn, items, self._epoch)

        answers: list[bool] = await self._fire.transact(write)
        return answers

    async def balance_state(self, task: TaskUid, strategy: str) -> dict[str, Any]:
        return await self._balances((task, strategy))

    async def _balance_batch(self, wanted: list[tuple[TaskUid, str]]) -> list[dict[str, Any]]:
        return await self._fire.query(balance.load_many, wanted)

    # -- bookkeeping --------------------------------------------------------------------------

    async def confirm(self, run: ExecutionId, attempt: int) -> bool:
        return await self._confirms((run, attempt))

    async def _confirm_batch(self, confirms: list[tuple[ExecutionId, int]]) -> list[bool]:
        def write(conn: Connection) -> list[bool]:
            return store_runs.confirm_many(conn, confirms)

        answers: list[bool] = await self._books.transact(write)
        return answers

    async def end_attempt(self, run: ExecutionId, attempt: int, decision: Next) -> bool:
        def write(conn: Connection) -> bool:
            if isinstance(decision, Finish):
                return store_runs.finish(conn, run, attempt, decision.outcome, by_leader=True)
            return store_runs.schedule_retry(conn, run, attempt, decision.outcome, decision.at)

        return bool(await self._books.write(write))

    async def give_up(
        self, run: ExecutionId, attempt: int, outcome: Outcome, retry_at: datetime | None
    ) -> bool:
        return bool(
            await self._books.write(
                lambda c: store_runs.give_up_attempt(c, run, attempt, outcome, retry_at)
            )
        )

    async def prune(self, limits: Sequence[HistoryLimit]) -> int:
        wanted = list(limits)
        pending = await self._books.query(retention.beyond_limits, wanted)
        pruned = 0
        while pending:
            gone, pending = await self._books.write(functools.partial(_prune_some, pending))
            pruned += gone
        return pruned

    async def open_runs(self) -> list[executions.Execution]:
        return await self._books.query(store_runs.open_runs)

    async def current(self, runs: Sequence[ExecutionId]) -> dict[ExecutionId, executions.RunState]:
        ids = list(runs)
        if not ids:
            return {}
        return await self._books.query(store_runs.current, ids)

    async def last_ticks(self, tasks: Sequence[TaskUid]) -> dict[TaskUid, datetime]:
        uids = list(tasks)
        return await self._books.query(store_runs.last_ticks, uids)

    async def changes_since(
        self, after: int, gaps: Sequence[int], limit: int
    ) -> list[tuple[int, ExecutionId]]:
        wanted = list(gaps)
        return await self._books.query(changelog.changes, after, wanted, limit)

    async def last_change(self) -> int:
        return await self._books.query(changelog.last_change)

    async def prune_changes(self, max_age_seconds: int) -> int:
        return int(
            await self._books.write(
                lambda c: changelog.prune_changes(c, max_age_seconds, PRUNE_BATCH)
            )
        )


def _prune_some(due: list[retention.Due], conn: Connection) -> tuple[int, list[retention.Due]]:
    return retention.prune_some(conn, due, PRUNE_BATCH)
