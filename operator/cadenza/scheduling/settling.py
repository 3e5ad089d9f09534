"""Settling runs nobody reported on (runs past their deadline, runs an earlier leader sent) and
cancelling the runs of Tasks that went or were suspended.

- A run past its deadline plus a grace is cancelled on its pod and its attempt counts as
  ``lost`` (retried if the Task's policy allows). ``lost`` may still be corrected by the real
  result, if it ever comes.
- A run taken over from an earlier leader may have a callback addressed to a replica that is
  gone, so its pod is asked under the same execution key how it went: its result, that it is
  still running, or that it never had it. A run it never had is sent to it again when the
  earlier leader never saw it accepted (that leader may have died before sending), else lost.

What to do in each case is the core's decision (:mod:`cadenza.core.runs`); this module asks the
pod and carries the decision out through the store port.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime

from cadenza.core import retry as retry_
from cadenza.core import runs as rules
from cadenza.core.ids import TaskUid
from cadenza.core.transitions import RunStatus
from cadenza.executors.members import PodCandidate
from cadenza.executors.pool import ExecutorPool
from cadenza.scheduling.dispatcher import Dispatcher, execution_key
from cadenza.scheduling.openruns import Run
from cadenza.scheduling.plans import TaskPlan
from cadenza.store.port import RunStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settled:
    """The decision taken about the run's current attempt, and whether it applied (it does not
    when the run changed meanwhile: a result that arrived after all)."""

    decision: rules.Next
    applied: bool


class Settler:
    def __init__(
        self,
        *,
        store: RunStore,
        pool: ExecutorPool,
        dispatcher: Dispatcher,
        plans: Mapping[TaskUid, TaskPlan],
        rng: random.Random,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._pool = pool
        self._client = dispatcher.client
        self._dispatcher = dispatcher
        self._plans = plans
        self._rng = rng
        self._now = clock

    async def overdue(self, run: Run) -> Settled:
        """The pod did not report in time: cancel there, and count the attempt as lost."""
        if run.pod:
            cancelled = await self.stop_on_pod(run)
            log.warning(
                "run %s attempt %s overdue on %s (cancel %s)",
                run.id,
                run.attempt,
                run.pod,
                "sent" if cancelled else "failed",
            )
        return await self.fail(
            run,
            RunStatus.LOST,
            f"no result from pod {run.pod} by the deadline; the pod did not report back",
        )

    async def cancel(self, run: Run, why: str) -> bool:
        """End the run cancelled (its Task went, or was suspended before the run started) and
        tell its pod; False when the run changed meanwhile (nothing is done then)."""
        cancelled = rules.Finish(rules.Outcome(RunStatus.CANCELLED, error=why))
        if not await self._store.end_attempt(run.id, run.attempt, cancelled):
            return False
        if run.base_url:
            await self.stop_on_pod(run)
        return True

    async def stop_on_pod(self, run: Run) -> bool:
        """Tell the run's pod to stop its current attempt; False when the pod is not known here
        or did not acknowledge."""
        self._locate(run)
        if not run.base_url:
            return False
        key = execution_key(run.id, run.attempt)
        return await self._client.cancel(run.base_url, run.token, key)

    async def ask_pod(self, run: Run) -> Settled | None:
        """What the pod of a taken-over run says; None while it cannot tell yet (still running,
        not reachable now, or just sent the run again)."""
        pod = self._locate(run)
        if run.base_url is None:
            return None  # the pod is not a candidate now: the deadline settles it
        view = await self._client.view(run.base_url, run.token, execution_key(run.id, run.attempt))
        if view is None:
            return None
        if not view:
            plan = self._plans.get(run.task)
            if plan is None or pod is None or not rules.send_again_when_unknown(run.status):
                return await self.fail(run, RunStatus.LOST, f"pod {run.pod} does not know the run")
            sent = await self._dispatcher.send_again(run, plan, pod)
            log.info(
                "run %s taken over: pod %s did not have it; sent again: %s", run.id, pod.pod, sent
            )
            return None
        state = str(view.get("state"))
        outcome = rules.after_pod_view(state, view)
        if outcome is None:
            return None
        log.info("run %s taken over: pod %s says %s", run.id, run.pod, state)
        if outcome.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            return await self.fail(run, outcome.status, outcome.error or state)
        finish = rules.Finish(outcome)
        return Settled(finish, await self._store.end_attempt(run.id, run.attempt, finish))

    async def fail(self, run: Run, status: RunStatus, error: str) -> Settled:
        """End the run's current attempt badly: retried if the policy allows, else final."""
        plan = self._plans.get(run.task)
        policy = plan.retry if plan else retry_.NO_RETRY
        outcome = rules.Outcome(status=status, error=error)
        decision = rules.after_bad_attempt(policy, run.attempt, outcome, self._now(), self._rng)
        return Settled(decision, await self._store.end_attempt(run.id, run.attempt, decision))

    def _locate(self, run: Run) -> PodCandidate | None:
        """Find the pod of a run taken over from an earlier leader (to ask or cancel it)."""
        plan = self._plans.get(run.task)
        if plan is None or run.pod is None:
            return None
        for pod in self._pool.candidates(plan.namespace, [e.name for e in plan.executors]):
            if pod.pod == run.pod:
                if run.base_url is None:
                    run.pod_uid, run.base_url, run.token = pod.pod_uid, pod.base_url, pod.token
                return pod
        return None
