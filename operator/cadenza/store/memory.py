"""An in-memory :class:`cadenza.store.port.RunStore`, for unit tests of the leader's pipeline.

It keeps the same contract as the MySQL store (``tests/contract/test_run_store.py`` holds both
to it): the same guarded transitions, taken from the core's state lists, the same
deduplication of ticks and trigger keys, the same refusal of runs of Tasks not mirrored yet.
Time comes from an injected clock, so tests decide what "now" is.

Not for production: nothing survives the process, and there is no fencing (a test that needs a
newer epoch calls :meth:`MemoryRunStore.fence`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cadenza.core.ids import Epoch, ExecutionId, TaskUid
from cadenza.core.runs import OPEN, Finish, Next, Outcome, may_send, sources_of
from cadenza.core.transitions import TERMINAL, RunStatus
from cadenza.store.executions import Execution, Origin, RunState
from cadenza.store.fencing import Fenced
from cadenza.store.port import Begin, Claims, HistoryLimit, NewRun

FIRST_EPOCH = Epoch(1)


class MemoryRunStore:
    def __init__(
        self,
        epoch: Epoch = FIRST_EPOCH,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.epoch = epoch
        self._now = clock
        self._fenced_by: int | None = None
        self.mirrored: set[TaskUid] = set()
        self.runs: dict[ExecutionId, Execution] = {}
        self.attempts: dict[tuple[ExecutionId, int], dict[str, Any]] = {}
        self._balance: dict[TaskUid, tuple[str, dict[str, Any]]] = {}
        self._next_id = 1
        self._changes: list[tuple[int, ExecutionId, datetime]] = []
        self._change_seq = 0

    # -- test controls ------------------------------------------------------------------------

    def mirror(self, *tasks: TaskUid) -> None:
        """The mirror wrote these Tasks' rows: their runs may be claimed."""
        self.mirrored.update(tasks)

    def fence(self, newer: int) -> None:
        """A newer leader took over: every write from now on raises ``Fenced``."""
        self._fenced_by = newer

    def _write(self) -> datetime:
        if self._fenced_by is not None:
            raise Fenced("memory", self.epoch, self._fenced_by)
        return self._now()

    def _update(self, run: ExecutionId, **values: Any) -> None:
        self.runs[run] = dataclasses.replace(self.runs[run], updated_at=self._now(), **values)

    # -- the port -----------------------------------------------------------------------------

    async def claim(self, runs: Sequence[NewRun]) -> Claims:
        now = self._write()
        out: list[ExecutionId | None] = []
        for r in runs:
            out.append(self._claim_one(r, now) if r.task in self.mirrored else None)
        return Claims(out, frozenset({r.task for r in runs} - self.mirrored))

    def _claim_one(self, r: NewRun, now: datetime) -> ExecutionId | None:
        for row in self.runs.values():
            if row.task_uid != r.task:
                continue
            if r.tick is not None and row.scheduled_at == r.tick:
                return None
            if r.trigger_key is not None and row.trigger_key == r.trigger_key:
                return None
        run = ExecutionId(self._next_id)
        self._next_id += 1
        self.runs[run] = Execution(
            id=run,
            task_uid=r.task,
            namespace=r.namespace,
            task_name=r.name,
            scheduled_at=r.tick,
            trigger_key=r.trigger_key,
            origin=r.origin,
            requested_at=now,
            status=r.status,
            attempt=1,
            max_attempts=r.max_attempts,
            epoch=self.epoch,
            executor_name=None,
            pod_name=None,
            pod_ip=None,
            callback_token_hash=None,
            next_attempt_at=None,
            deadline_at=None,
            dispatched_at=None,
            started_at=None,
            finished_at=now if r.status in TERMINAL else None,
            result=None,
            error=None,
            exit_code=None,
            created_at=now,
            updated_at=now,
        )
        return run

    def _sendable(self, run: ExecutionId, attempt: int) -> bool:
        row = self.runs.get(run)
        return row is not None and may_send(row.status, row.attempt, attempt)

    async def begin_dispatch(self, begin: Begin) -> bool:
        now = self._write()
        if begin.balance is not None:
            b = begin.balance
            self._balance[b.task] = (b.strategy, dict(b.state))
        if not self._sendable(begin.run, begin.attempt):
            return False
        to = begin.to
        self._update(
            begin.run,
            status=RunStatus.DISPATCHED,
            attempt=begin.attempt,
            executor_name=to.executor,
            pod_name=to.pod,
            pod_ip=to.ip,
            callback_token_hash=to.token_hash,
            deadline_at=to.deadline_at,
            next_attempt_at=None,
            dispatched_at=now,
            epoch=self.epoch,
        )
        self.attempts[(begin.run, begin.attempt)] = {
            "executor_name": to.executor,
            "pod_name": to.pod,
            "callback_token_hash": to.token_hash,
            "status": RunStatus.DISPATCHED.value,
            "dispatched_at": now,
        }
        return True

    async def confirm(self, run: ExecutionId, attempt: int) -> bool:
        self._write()
        row = self.runs.get(run)
        if row is None or row.attempt != attempt or row.status is not RunStatus.DISPATCHED:
            return False
        self._update(run, status=RunStatus.RUNNING)
        self.attempts[(run, attempt)]["status"] = RunStatus.RUNNING.value
        return True

    async def end_attempt(self, run: ExecutionId, attempt: int, decision: Next) -> bool:
        now = self._write()
        row = self.runs.get(run)
        outcome = decision.outcome
        allowed = sources_of(outcome.status, by_leader=isinstance(decision, Finish))
        if row is None or row.attempt != attempt or row.status not in allowed:
            return False
        if isinstance(decision, Finish):
            values: dict[str, Any] = {
                "status": outcome.status,
                "error": outcome.error,
                "result": outcome.result,
                "exit_code": outcome.exit_code,
                "finished_at": outcome.finished_at or now,
                "next_attempt_at": None,
            }
            if outcome.started_at is not None:
                values["started_at"] = outcome.started_at
            self._update(run, **values)
        else:
            self._update(
                run,
                status=RunStatus.QUEUED,
                error=outcome.error,
                exit_code=outcome.exit_code,
                next_attempt_at=decision.at,
                callback_token_hash=None,
            )
        self._close_attempt(run, attempt, outcome, now)
        return True

    async def give_up(
        self, run: ExecutionId, attempt: int, outcome: Outcome, retry_at: datetime | None
    ) -> bool:
        now = self._write()
        if not self._sendable(run, attempt):
            return False
        values: dict[str, Any] = {
            "attempt": attempt,
            "error": outcome.error,
            "pod_name": None,
            "pod_ip": None,
            "callback_token_hash": None,
        }
        if retry_at is not None:
            values.update(status=RunStatus.QUEUED, next_attempt_at=retry_at)
        else:
            values.update(status=outcome.status, next_attempt_at=None, finished_at=now)
        self._update(run, **values)
        self.attempts.setdefault((run, attempt), {"dispatched_at": now})
        self._close_attempt(run, attempt, outcome, now)
        return True

    def _close_attempt(
        self, run: ExecutionId, attempt: int, outcome: Outcome, now: datetime
    ) -> None:
        entry = self.attempts.setdefault((run, attempt), {"dispatched_at": now})
        entry.update(
            status=outcome.status.value,
            error=outcome.error,
            finished_at=outcome.finished_at or now,
        )

    async def open_runs(self) -> list[Execution]:
        return [self.runs[i] for i in sorted(self.runs) if self.runs[i].status in OPEN]

    async def current(self, runs: Sequence[ExecutionId]) -> dict[ExecutionId, RunState]:
        return {
            i: RunState(
                r.id, r.task_uid, r.status, r.attempt, r.pod_name, r.next_attempt_at, r.deadline_at
            )
            for i in runs
            if (r := self.runs.get(i)) is not None
        }

    async def last_ticks(self, tasks: Sequence[TaskUid]) -> dict[TaskUid, datetime]:
        last: dict[TaskUid, datetime] = {}
        for row in self.runs.values():
            if row.task_uid in tasks and row.scheduled_at is not None:
                last[row.task_uid] = max(row.scheduled_at, last.get(row.task_uid, row.scheduled_at))
        return last

    async def balance_state(self, task: TaskUid, strategy: str) -> dict[str, Any]:
        saved = self._balance.get(task)
        if saved is None or saved[0] != strategy:
            return {}
        return dict(saved[1])

    async def prune(self, limits: Sequence[HistoryLimit]) -> int:
        pruned = 0
        for limit in limits:
            pruned += self._prune(limit)
        return pruned

    def _prune(self, limit: HistoryLimit) -> int:
        mine = sorted((i for i, r in self.runs.items() if r.task_uid == limit.task), reverse=True)
        beyond = set(mine[limit.max_runs :])
        too_old = self._now() - timedelta(seconds=limit.max_age_seconds)
        gone = [i for i in mine if i in beyond or _finished_before(self.runs[i], too_old)]
        gone = [i for i in gone if self.runs[i].status in TERMINAL]
        if gone:
            self._write()  # a write only when there is something to delete, as in MySQL
        for i in gone:
            del self.runs[i]
            for key in [k for k in self.attempts if k[0] == i]:
                del self.attempts[key]
        return len(gone)

    def record_change(self, run: ExecutionId) -> int:
        """A callback changed ``run`` (as the callback API notes it in the change log)."""
        self._change_seq += 1
        self._changes.append((self._change_seq, run, self._now()))
        return self._change_seq

    async def changes_since(
        self, after: int, gaps: Sequence[int], limit: int
    ) -> list[tuple[int, ExecutionId]]:
        wanted = set(gaps)
        found = [(seq, run) for seq, run, _ in self._changes if seq > after or seq in wanted]
        return found[:limit]

    async def last_change(self) -> int:
        return self._changes[-1][0] if self._changes else 0

    async def prune_changes(self, max_age_seconds: int) -> int:
        self._write()
        cutoff = self._now() - timedelta(seconds=max_age_seconds)
        kept = [c for c in self._changes if c[2] >= cutoff]
        gone = len(self._changes) - len(kept)
        self._changes = kept
        return gone

    async def close(self) -> None:
        return None


def _finished_before(row: Execution, moment: datetime) -> bool:
    return row.finished_at is not None and row.finished_at < moment


__all__ = ["MemoryRunStore", "Origin"]
