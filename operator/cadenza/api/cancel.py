"""``POST /api/v1/executions/{id}/cancel``: end a run ``cancelled`` and tell its pod to stop it.

Any replica serves it. The run is ended with a guarded transition in MySQL, noted in the change
log (:mod:`cadenza.store.cancels`): the leader reads it there, as it reads callbacks' results,
and frees the run's slot; it never dispatches a run that is over. Then this replica tells the
pod or endpoint the run went to (``DELETE /v1/executions/{run}-{attempt}``, the sidecar
protocol's cancel, with the Executor's dispatch token): telling a pod is no dispatch, and the
replica has all it needs (the run's pod and its Executor). The pod's own ``cancelled`` callback
then finds the run over and changes nothing.

Verb: ``cancel`` on the run's Task (a custom verb, like ``trigger``: reading or triggering a
Task does not let anyone stop its runs). Answers: 200 with the run's new state (``podNotified``
says whether the pod acknowledged), 404 no such run, 409 the run is already over.

A cancel racing the leader's dispatch can reach the database after the pod was chosen but before
the pod has the run: this replica then finds no pod to tell, or a pod that answers it does not
know the run. The leader reads the cancel from the change log once its dispatch is over and
tells the pod itself, so the run is stopped there too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from cadenza import tls
from cadenza.api import parameters
from cadenza.api.context import ApiContext, json
from cadenza.api.errors import Problem
from cadenza.api.executor_models import CancelOut
from cadenza.api.parameters import RunPath
from cadenza.core.ids import ExecutionId
from cadenza.dispatch.client import DispatchClient
from cadenza.executors import tokens
from cadenza.executors.spec import parse_spec
from cadenza.scheduling.dispatcher import execution_key
from cadenza.store import cancels, deadlocks, history


def routes(ctx: ApiContext) -> list[web.RouteDef]:
    async def cancel(request: web.Request) -> web.Response:
        who = await ctx.guard.identify(request)  # 401 before anything else
        run_id = parameters.read(RunPath, request.match_info).id
        found = await ctx.blocking(lambda: history.run(ctx.engine, run_id))
        if found is None:
            await ctx.guard.missing_run(request, "cancel", run_id)
        ns, task = found[0]["namespace"], found[0]["task_name"]
        await ctx.guard.check_run(request, "cancel", run_id, ns, task)
        reason = f"cancelled through the REST API by {who.username}"
        done = await ctx.blocking(
            lambda: deadlocks.retry_deadlocks(
                lambda: cancels.cancel(ctx.engine, ExecutionId(run_id), reason)
            )
        )
        if done is None:
            raise Problem(404, f"execution {run_id} not found")
        if not done.applied:
            raise Problem(409, f"execution {run_id} is already over ({done.previous.value})")
        row = found[0]
        notified = await _tell_pod(ctx, row, execution_key(run_id, done.attempt))
        answer = CancelOut(
            id=run_id, status="cancelled", previousStatus=done.previous.value,
            pod=row.get("pod_name"), podNotified=notified,
        )  # fmt: skip
        return json(answer)

    return [web.post("/api/v1/executions/{id}/cancel", cancel)]


async def _tell_pod(ctx: ApiContext, row: Mapping[str, Any], key: str) -> bool:
    """Ask the run's pod or endpoint to cancel; False when it had none or did not answer."""
    executor, pod, ip = row.get("executor_name"), row.get("pod_name"), row.get("pod_ip")
    if not executor or not pod:
        return False  # never dispatched: nothing runs anywhere
    ns = row["namespace"]
    try:
        found = await ctx.kube(lambda: ctx.executors.get(ns, executor), f"Executor {ns}/{executor}")
    except Problem:
        return False  # the Executor is gone: so is the way to its pods
    spec = parse_spec(found.get("spec") or {})
    base_url = next((e.base_url for e in spec.endpoints if e.instance_id == pod), None)
    if base_url is None and ip:
        base_url = spec.base_url(ip)
    if base_url is None:
        return False
    meta = found.get("metadata") or {}
    try:
        held = await asyncio.to_thread(
            tokens.read_credentials, ctx.executors.token_secrets, ns, str(executor),
            str(meta.get("uid")),
        )  # fmt: skip
    except tokens.TokenUnavailable:
        return False
    # Right after a rotation the pod may still hold the previous token: offered after a 401.
    token = held.offered(ctx.now(), ctx.dispatch_token_grace_seconds)
    trust = await asyncio.to_thread(tls.client_context, ctx.dispatch_ca_file)
    client = DispatchClient(ssl_context=trust)
    try:
        return await client.cancel(base_url, token, key)
    finally:
        await client.close()
