"""The leader's pool of executor pods: who is healthy, who is busy, who may take a run now.

Every pod that an Executor's selector matches in its namespace is a member of that Executor (see
:mod:`cadenza.executors.members`). Each member is probed on its Executor's ``healthCheck``
period and the results are folded by :func:`cadenza.core.health.observe`.

Invariants:
- A member is a candidate only while its PodView says Running, Ready, addressed and not
  terminating AND the leader's probes call it healthy AND its Executor's dispatch token (from
  the Secret the operator makes and owns for it) is known. The source is re-read on the first
  question after :meth:`ExecutorPool.changed`, so a pod that turns unready is dropped at once,
  without waiting for a probe.
- A new ``cadenza.dev/rotate-token`` on an Executor has its Secret read, and so rotated, on the
  next turn of the probe loop, not after the token cache ages.
- A new member is probed at once; then on its period, measured from the start of the previous
  probe. Each probe is its own task: a pod that hangs delays nobody else, and a member never has
  two probes in flight (the timeout is at most the period).
- Members that disappear from the source are forgotten and their probes cancelled.
- In flight per pod = the sidecar's ``inFlight`` from the last probe, plus dispatches, minus
  finished runs noted since. A dispatch racing a probe may be counted once too few until the
  next probe; the sidecar's own 429 is the hard limit.
- An endpoint (an executor outside the cluster) is probed at its own health URL; when its
  Executor sets ``heartbeatSeconds``, each probe also reads its last heartbeat
  (``executor_heartbeats``) and it is no candidate while that is older than
  ``MISSED_HEARTBEATS`` times the interval, whatever the probes say
  (:mod:`cadenza.executors.heartbeats`).
- With a database, findings go to ``executor_instances`` through
  :class:`cadenza.executors.persistence.HealthStore` (batched, changed rows, fenced); ``Fenced``
  ends :meth:`ExecutorPool.run`.

WARNING: everything but the database writes runs on the event loop without locks; no method may
await between reading and writing the members.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from cadenza.core import health as pod_health
from cadenza.core.ids import Epoch
from cadenza.dispatch.client import DispatchClient, ProbeResult
from cadenza.executors import endpoints, persistence
from cadenza.executors.heartbeats import HeartbeatCheck, Heartbeats
from cadenza.executors.members import (
    ExecutorEntry,
    ExecutorSnapshot,
    Key,
    Member,
    PodCandidate,
    selected,
)
from cadenza.executors.spec import read_spec
from cadenza.executors.tokens import TokenSource, TokenUnavailable
from cadenza.kube.views import ExecutorView, PodView
from cadenza.waiting import woken

log = logging.getLogger(__name__)

Source = Callable[[], tuple[Sequence[ExecutorView], Sequence[PodView]]]
"""Every Executor and every Pod the replica watches (kopf's indexes)."""
TOKEN_POLL_SECONDS = 5.0
"""How often the pool asks the TokenSource (which reads the Secret only when its cache aged)."""
TOKEN_RETRY_SECONDS = 2.0


class ExecutorPool:
    def __init__(
        self,
        source: Source,
        client: DispatchClient,
        tokens: TokenSource | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        engine: Engine | None = None,
        lock_name: str = "",
        epoch: Epoch | None = None,
        persist_interval: float = 1.0,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        """With ``engine`` and ``epoch`` the findings are written to ``executor_instances``;
        without them (unit tests) nothing is written. Without ``tokens`` no token is sent.
        ``heartbeats`` reads endpoints' heartbeats (default: from ``engine``; neither: they are
        not checked)."""
        self._source = source
        self._heartbeats = HeartbeatCheck(heartbeats, engine)
        self._client = client
        self._tokens = tokens
        self._clock = clock
        self._wall_clock = wall_clock
        self.store = (
            persistence.HealthStore(engine, lock_name, epoch, interval=persist_interval)
            if engine is not None and epoch is not None
            else None
        )
        self._executors: dict[str, ExecutorEntry] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._members: dict[Key, Member] = {}
        self._in_flight: dict[str, int] = {}
        self._stale = True
        self._ignored: dict[str, str] = {}
        """Pod uid -> the annotation problem already logged for it."""
        self._wake = asyncio.Event()
        self._updated = asyncio.Event()
        self.version = 0
        """Bumped on every change a reader of :meth:`snapshot` may care about."""

    # -- the dispatcher's side ----------------------------------------------------------------

    def changed(self) -> None:
        """The source changed (a kopf event): re-read it before the next answer."""
        self._stale = True
        self._wake.set()

    def candidates(self, namespace: str, executor_names: Sequence[str]) -> list[PodCandidate]:
        """The pods of the named Executors that may take a run now, by executor then pod name.

        Full pods (``in_flight >= capacity``) are included; see :attr:`PodCandidate.full`.
        """
        return [
            executor.candidate(member, self._in_flight.get(key[1], 0))
            for executor, key, member in self._admitted(namespace, executor_names)
        ]

    def holds_runs(self, namespace: str, executor_names: Sequence[str]) -> bool:
        """A pod of the named Executors that may take a run now holds runs until their tick:
        asked for every claim, so it builds no candidates and stops at the first."""
        return any(m.holds_runs for _, _, m in self._admitted(namespace, executor_names))

    def _admitted(
        self, namespace: str, executor_names: Sequence[str]
    ) -> Iterator[tuple[ExecutorEntry, Key, Member]]:
        """The members of the named Executors that may take a run now, by executor then pod."""
        self._refresh()
        for name in executor_names:
            executor = self._executors.get(self._by_name.get((namespace, name), ""))
            for key in executor.members if executor else ():
                member = self._members[key]
                if executor and executor.admits(member, self._tokens is not None):
                    yield executor, key, member

    def note_dispatched(self, pod_uid: str) -> None:
        self._in_flight[pod_uid] = self._in_flight.get(pod_uid, 0) + 1
        self._bump()

    def note_finished(self, pod_uid: str) -> None:
        self._in_flight[pod_uid] = max(0, self._in_flight.get(pod_uid, 0) - 1)
        self._bump()

    def note_dispatch_error(self, pod_uid: str, error: str) -> None:
        """Shown as the pod's ``lastError`` until its next successful probe."""
        for (_, uid), member in self._members.items():
            if uid == pod_uid:
                member.dispatch_error = error
        self._bump()

    def note_token_rejected(self, executor_uid: str) -> None:
        """A sidecar answered 401: read the Executor's token again now."""
        executor = self._executors.get(executor_uid)
        if executor is not None and self._tokens is not None:
            self._tokens.invalidate(executor.view)
            executor.token_due = 0.0
            self._wake.set()

    # -- readers ------------------------------------------------------------------------------

    def snapshot(self) -> list[ExecutorSnapshot]:
        """What the pool sees, per Executor (by namespace and name), per pod (by name)."""
        self._refresh()
        shots = []
        using_tokens = self._tokens is not None
        for executor in self._executors.values():
            members = [self._members[key] for key in executor.members]
            pods = tuple(
                executor.pod_snapshot(
                    m, self._in_flight.get(m.pod.uid, 0), executor.admits(m, using_tokens)
                )
                for m in members
            )
            view = executor.view
            shots.append(
                ExecutorSnapshot(
                    view.uid, view.namespace, view.name, view.generation, pods,
                    executor.token_error, executor.settled(members, using_tokens),
                    executor.spec_error,
                )
            )  # fmt: skip
        return sorted(shots, key=lambda s: (s.namespace, s.name))

    async def wait_updated(self, seen: int) -> int:
        """Wait until :attr:`version` differs from ``seen``; the new version."""
        while self.version == seen:
            await self._updated.wait()
        return self.version

    # -- the loops ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Probe until cancelled; raises ``Fenced`` when a newer leader owns the database."""
        loops = [asyncio.create_task(self._probe_loop(), name="executor-probes")]
        if self.store is not None:
            loops.append(asyncio.create_task(self._persist_loop(), name="executor-health-rows"))
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            tasks = [*loops, *(m.probing for m in self._members.values() if m.probing)]
            tasks += [e.loading for e in self._executors.values() if e.loading]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe_loop(self) -> None:
        while True:
            self._wake.clear()
            self._refresh()
            delay = self._start_due(self._clock())
            await woken(self._wake, delay)

    async def _persist_loop(self) -> None:
        assert self.store is not None
        seen = -1
        while True:
            seen = await self.wait_updated(seen)
            rows = {
                key: m.health_row(self._in_flight.get(key[1], 0))
                for key, m in self._members.items()
            }
            await self.store.write(rows)
            await asyncio.sleep(self.store.interval)  # the batching: one write per interval

    def _start_due(self, now: float) -> float:
        """Start every probe and token read that is due; seconds until the next one is."""
        delay = 60.0
        for executor in self._executors.values():
            if self._tokens is not None:
                if executor.loading is None and executor.token_due <= now:
                    executor.loading = asyncio.create_task(self._load_token(executor))
                elif executor.loading is None:
                    delay = min(delay, executor.token_due - now)
            period = executor.spec.health_check.period_seconds
            for key in executor.members:
                member = self._members[key]
                if member.probing is not None or not member.probeable:
                    continue
                if member.next_probe <= now:
                    member.next_probe = now + period
                    member.probing = asyncio.create_task(self._probe(executor, member))
                delay = min(delay, member.next_probe - now)
        return max(delay, 0.0)

    async def _probe(self, executor: ExecutorEntry, member: Member) -> None:
        check = executor.spec.health_check
        # observe() ignores results older than the last one; a member's probes never overlap, so
        # only a wall clock stepped back could make one look older, and it must not freeze health.
        at = max(
            self._wall_clock(), member.health.last_probe_at or datetime.min.replace(tzinfo=UTC)
        )
        try:
            result = await self._client.probe(
                member.probe_url(executor.spec), "", check.timeout_seconds
            )
            member.beat_error = await self._heartbeats.error(executor, member, at)
        except Exception as exc:  # a bug here must not stop this pod's probing for good
            log.exception("probing pod %s failed unexpectedly", member.pod.name)
            result = ProbeResult(False, None, None, False, f"probe failed: {exc}")
        finally:
            member.probing = None
        if not member.probeable:  # it stopped Running during the probe: the answer is stale
            return
        was = member.healthy
        member.health = pod_health.observe(
            member.health, result.ok, at, check.thresholds, result.error
        )
        member.probes += 1
        member.failed_probes += not result.ok
        if result.ok:
            member.dispatch_error = None
            member.holds_runs = result.holds_runs
        if result.in_flight is not None:
            self._in_flight[member.pod.uid] = result.in_flight
        if was != member.healthy:
            why = result.error or member.beat_error
            log.info(
                "pod %s/%s of executor %s is now %s%s", member.pod.namespace, member.pod.name,
                executor.view.name, "healthy" if member.healthy else "unhealthy",
                f": {why}" if why else "",
            )  # fmt: skip
        self._bump()
        self._wake.set()

    async def _load_token(self, executor: ExecutorEntry) -> None:
        assert self._tokens is not None
        try:
            executor.token = await self._tokens.token(executor.view)
            executor.token_error = None
            executor.token_due = self._clock() + TOKEN_POLL_SECONDS
        except TokenUnavailable as exc:
            if executor.token_error != str(exc):
                log.warning("executor %s/%s: %s", executor.view.namespace, executor.view.name, exc)
            executor.token, executor.token_error = None, str(exc)
            executor.token_due = self._clock() + TOKEN_RETRY_SECONDS
        finally:
            executor.loading = None
            self._bump()
            self._wake.set()

    # -- bookkeeping --------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read the source if it changed: members come and go, views are replaced."""
        if not self._stale:
            return
        self._stale = False
        views, pods = self._source()
        by_namespace: dict[str, list[PodView]] = defaultdict(list)
        for pod in sorted(pods, key=lambda p: p.name):
            by_namespace[pod.namespace].append(pod)
        now = self._clock()
        executors: dict[str, ExecutorEntry] = {}
        members: dict[Key, Member] = {}
        for view in views:
            executor = self._executors.get(view.uid)
            spec, problems = read_spec(view.spec, view.name)
            if executor is None:
                executor = ExecutorEntry(view, spec)
            elif executor.view.rotate_token != view.rotate_token and self._tokens is not None:
                # A rotation was asked for: read (and so rotate) the Secret on the next turn.
                self._tokens.invalidate(view)
                executor.token_due = 0.0
            spec_error = "; ".join(str(p) for p in problems) or None
            if spec_error is not None and spec_error != executor.spec_error:
                log.warning("executor %s/%s: %s", view.namespace, view.name, spec_error)
            executor.view, executor.spec, executor.members = view, spec, []
            executor.spec_error = spec_error
            executors[view.uid] = executor
            static = {endpoints.member_uid(view.uid, e.instance_id): e for e in spec.endpoints}
            for pod in selected(view, by_namespace[view.namespace]):
                key = (view.uid, pod.uid)
                member = self._members.get(key) or Member(pod, next_probe=now)
                member.listed(pod, static.get(pod.uid))
                members[key] = member
                executor.members.append(key)
        for key in self._members.keys() - members.keys():
            if probing := self._members[key].probing:
                probing.cancel()
        for uid in self._executors.keys() - executors.keys():
            gone = self._executors[uid]
            if gone.loading:
                gone.loading.cancel()
            if self._tokens is not None:
                self._tokens.forget(gone.view)
        live = {pod_uid for _, pod_uid in members}
        self._warn_of_annotations([m.pod for m in members.values()], live)
        self._in_flight = {uid: n for uid, n in self._in_flight.items() if uid in live}
        self._executors, self._members = executors, members
        self._by_name = {(e.view.namespace, e.view.name): uid for uid, e in executors.items()}
        self._bump()

    def _warn_of_annotations(self, pods: Sequence[PodView], live: set[str]) -> None:
        """Log an annotation the pool ignores once per pod and value, not on every event."""
        for pod in pods:
            if pod.weight_error and self._ignored.get(pod.uid) != pod.weight_error:
                log.warning("pod %s/%s: %s", pod.namespace, pod.name, pod.weight_error)
            if pod.weight_error:
                self._ignored[pod.uid] = pod.weight_error
        self._ignored = {uid: why for uid, why in self._ignored.items() if uid in live}

    def _bump(self) -> None:
        self.version += 1
        self._updated.set()
        self._updated = asyncio.Event()
