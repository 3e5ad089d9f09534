"""``cadenza executors``: list and read Executors with the health of their pods and endpoints,
and register an executor outside the cluster (printing its dispatch token for scripts)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from cadenza.commands import errors, output, times
from cadenza.commands.app import Session, Subparsers, leaf, quote, read_json


def register(sub: Subparsers, flags: argparse.ArgumentParser) -> None:
    executors = sub.add_parser("executors", parents=[flags], help="Executors and their health")
    group = executors.add_subparsers(dest="action", required=True, metavar="ACTION")
    leaf(group, flags, "list", list_executors, "Executors with pod and endpoint health")
    leaf(
        group, flags, "get", get_executor, "an Executor's pods, endpoints and conditions"
    ).add_argument("name")
    leaf(
        group,
        flags,
        "register",
        register_executor,
        "register an executor outside the cluster; prints its dispatch token",
    ).add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        required=True,
        help="the registration body, JSON (- for stdin)",
    )


def list_executors(s: Session) -> int:
    answer = s.client.get(f"{s.base()}/executors")
    items = answer.get("items") or []
    if s.machine:
        s.show(answer)
    elif not items:
        s.note("No executors found.")
    else:
        s.say(table(items, s.now()))
    return errors.OK


def table(items: list[dict[str, Any]], now: datetime) -> str:
    headers = ("name", "pods", "endpoints", "available", "last heartbeat")
    return output.table(headers, [row(item, now) for item in items])


def row(executor: dict[str, Any], now: datetime) -> list[object]:
    endpoints = executor.get("endpoints") or []
    healthy = sum(1 for e in endpoints if e.get("healthy"))
    beats = [e["lastHeartbeat"] for e in endpoints if e.get("lastHeartbeat")]
    return [
        executor.get("name"),
        f"{executor.get('healthyPods', 0)}/{executor.get('totalPods', 0)} healthy",
        f"{healthy}/{len(endpoints)} healthy" if endpoints else None,
        condition(executor, "Available"),
        times.relative(max(beats), now) if beats else None,
    ]


def condition(thing: dict[str, Any], kind: str) -> str | None:
    for entry in thing.get("conditions") or []:
        if entry.get("type") == kind:
            return str(entry.get("status"))
    return None


def get_executor(s: Session) -> int:
    executor = s.client.get(f"{s.base()}/executors/{quote(s.args.name)}")
    if s.machine:
        s.show(executor)
    else:
        s.say(describe(executor, s.now()))
    return errors.OK


def describe(executor: dict[str, Any], now: datetime) -> str:
    parts = [
        output.fields(
            [
                ("Name", executor.get("name")),
                ("Namespace", executor.get("namespace")),
                ("Selector", _selector(executor.get("selector"))),
                ("Heartbeat seconds", executor.get("heartbeatSeconds")),
                (
                    "Pods",
                    f"{executor.get('healthyPods', 0)}/{executor.get('totalPods', 0)} healthy",
                ),
            ]
        )
    ]
    pods = executor.get("pods") or []
    pod_rows = [
        [p.get("name"), p.get("ip"), p.get("healthy"), p.get("inFlight"), p.get("lastError")]
        for p in pods
    ]
    parts.append(_section("Pods", ("name", "ip", "healthy", "in flight", "last error"), pod_rows))
    ends = executor.get("endpoints") or []
    end_rows = [
        [
            e.get("instanceId"),
            e.get("baseUrl"),
            e.get("state"),
            e.get("healthy"),
            times.relative(e.get("lastHeartbeat"), now),
            e.get("lastError"),
        ]
        for e in ends
    ]
    parts.append(
        _section(
            "Endpoints",
            ("instance", "url", "state", "healthy", "heartbeat", "last error"),
            end_rows,
        )
    )
    conds = [
        [c.get("type"), c.get("status"), c.get("reason"), c.get("message")]
        for c in executor.get("conditions") or []
    ]
    parts.append(_section("Conditions", ("type", "status", "reason", "message"), conds))
    return "\n".join(parts)


def _selector(selector: Any) -> str | None:
    labels = (selector or {}).get("matchLabels") if isinstance(selector, dict) else None
    if labels:
        return ",".join(f"{k}={v}" for k, v in labels.items())
    return None if not selector else str(selector)


def _section(title: str, headers: tuple[str, ...], rows: list[list[object]]) -> str:
    if not rows:
        return f"{title}:  {output.NONE}"
    body = output.table(headers, rows)
    return f"{title}:\n" + "\n".join(f"  {line}" for line in body.splitlines())


def register_executor(s: Session) -> int:
    body = read_json(s.args.filename)
    answer = s.client.call("POST", f"{s.body_base(body)}/executors/register", body=body)
    if s.machine:
        s.show(answer)
        return errors.OK
    done = "created" if answer.get("created") else "updated"
    tasks = ", ".join(answer.get("tasks") or []) or "no Tasks"
    s.note(
        f"executor.cadenza.dev/{answer.get('executor')} {done} in namespace"
        f" {answer.get('namespace')}: instance {answer.get('instanceId')}, serving {tasks};"
        " its dispatch token follows on stdout"
    )
    s.say(str(answer.get("token")))
    return errors.OK
