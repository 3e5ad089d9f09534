"""``cadenza tasks``: list, get, create, trigger, suspend, resume and delete Tasks.

``create`` sends the original system's body (``-f FILE``) unchanged, or builds one from flags in
the original system's spelling; a refused field is named with the flag that set it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cadenza.commands import errors, output, times
from cadenza.commands.app import Session, Subparsers, leaf, quote, read_json

STATES = "active, suspended, failing, running or invalid"
PAGE = 500

FLAG_FIELDS = {
    "name": "NAME",
    "cron_expression": "--schedule",
    "execution_mode": "--mode",
    "load_balance_strategy": "--strategy",
    "executors": "--executor",
    "handler": "--handler",
    "payload": "--payload",
    "timeout_seconds": "--timeout-seconds",
    "retries": "--retries",
    "time_zone": "--time-zone",
    "description": "--description",
    "labels": "--label",
    "enabled": "--suspended",
}
"""The body field each ``create`` flag sets, to name the flag when the API refuses the field."""


def register(sub: Subparsers, flags: argparse.ArgumentParser) -> None:
    tasks = sub.add_parser("tasks", parents=[flags], help="list, read, create and fire Tasks")
    group = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = leaf(group, flags, "list", list_tasks, "list Tasks with their next and last run")
    listing.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector (a=b,c!=d)")
    listing.add_argument("--state", help=f"only Tasks that are {STATES}")
    listing.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="Tasks of every namespace (needs list on tasks cluster-wide)",
    )

    leaf(group, flags, "get", get_task, "a Task's spec, status and next fire times").add_argument(
        "name"
    )

    create = leaf(group, flags, "create", create_task, "create a Task from a body or flags")
    create.add_argument("name", nargs="?", help="the Task's name (test_task becomes test-task)")
    create.add_argument("-f", "--filename", metavar="FILE", help="the JSON body (- for stdin)")
    create.add_argument("--schedule", metavar="CRON", help="cron expression (5 or 6 fields)")
    create.add_argument("--mode", help="parallel, sequential or skip")
    create.add_argument("--strategy", help="round_robin, weighted, random, sticky, least_loaded")
    create.add_argument(
        "--executor",
        action="append",
        metavar="NAME[:WEIGHT]",
        help="an Executor to run on (repeatable; default: the API's default Executor)",
    )
    create.add_argument("--handler", help="the handler the executor invokes")
    create.add_argument("--payload", metavar="JSON", help="a JSON value passed to the handler")
    create.add_argument("--timeout-seconds", type=int, metavar="N")
    create.add_argument("--retries", type=int, metavar="N", help="retries after the first attempt")
    create.add_argument("--time-zone", metavar="TZ", help="IANA zone the schedule is read in")
    create.add_argument("--description")
    create.add_argument("--label", action="append", metavar="KEY=VALUE", help="repeatable")
    create.add_argument("--suspended", action="store_true", help="create it suspended")

    trigger = leaf(group, flags, "trigger", trigger_task, "fire one run now; prints its id")
    trigger.add_argument("name")
    trigger.add_argument(
        "--idempotency-key", metavar="KEY", help="a retry with the same key fires no second run"
    )
    for name, handler, help in (
        ("suspend", suspend_task, "pause a Task's scheduled runs"),
        ("resume", resume_task, "resume a suspended Task"),
        ("delete", delete_task, "delete a Task (its run history stays)"),
    ):
        leaf(group, flags, name, handler, help).add_argument("name")


def list_tasks(s: Session) -> int:
    everywhere = bool(s.args.all_namespaces)
    if everywhere and s.target.namespace_given:
        raise errors.usage("-A and -n exclude each other")
    base = "/api/v1" if everywhere else s.base()
    query = [("limit", str(PAGE))] + ([("allNamespaces", "true")] if everywhere else [])
    if s.args.selector:
        query.append(("labelSelector", s.args.selector))
    if s.args.state:
        query.append(("state", s.args.state))
    items: list[Any] = []
    token = ""
    while True:
        page = s.client.get(f"{base}/tasks", [*query, *([("continue", token)] if token else [])])
        items += page.get("items") or []
        token = page.get("continue") or ""
        if not token:
            break
    if s.machine:
        s.show({"items": items, "continue": None})
    elif not items:
        s.note(f"No tasks found in {'any namespace' if everywhere else _where(s)}.")
    else:
        s.say(table(items, s.now(), namespaces=everywhere))
    return errors.OK


def table(items: list[dict[str, Any]], now: Any, namespaces: bool = False) -> str:
    """The list as ``kubectl get`` shows it; a ``namespace`` column first for ``-A``."""
    headers = (
        *(("namespace",) if namespaces else ()),
        "name",
        "schedule",
        "mode",
        "strategy",
        "next run",
        "last result",
        "failures",
        "suspended",
    )
    rows = [([item.get("namespace")] if namespaces else []) + row(item, now) for item in items]
    return output.table(headers, rows)


def row(task: dict[str, Any], now: Any) -> list[object]:
    spec, status = task.get("spec") or {}, task.get("status") or {}
    fires = task.get("nextFireTimes") or []
    last = (status.get("lastExecution") or {}).get("phase")
    return [
        task.get("name"),
        spec.get("schedule"),
        spec.get("executionMode"),
        spec.get("loadBalanceStrategy"),
        times.relative(fires[0], now) if fires else None,
        last,
        status.get("consecutiveFailures", 0),
        bool(spec.get("suspend")),
    ]


def get_task(s: Session) -> int:
    task = s.client.get(f"{s.base()}/tasks/{quote(s.args.name)}")
    if s.machine:
        s.show(task)
    else:
        s.say(describe(task, s.now()))
    return errors.OK


def describe(task: dict[str, Any], now: Any) -> str:
    fires = [f"{f} ({times.relative(f, now)})" for f in task.get("nextFireTimes") or []]
    head = output.fields(
        [
            ("Name", task.get("name")),
            ("Namespace", task.get("namespace")),
            ("Original name", task.get("originalName")),
            ("Description", task.get("description")),
            ("Labels", ",".join(f"{k}={v}" for k, v in (task.get("labels") or {}).items())),
            ("Created", task.get("createdAt")),
            ("UID", task.get("uid")),
        ]
    )
    parts = [
        head,
        output.block("Spec", task.get("spec")),
        output.block("Status", task.get("status")),
    ]
    parts.append(output.block("Next fire times", fires))
    return "\n".join(parts)


def create_task(s: Session) -> int:
    given = [f for f in FLAG_FIELDS.values() if f != "NAME" and _flag_set(s.args, f)]
    if s.args.filename:
        if given or s.args.name:
            what = ", ".join(given) or "NAME"
            raise errors.usage(f"-f takes the whole body: drop {what}, or drop -f")
        body, fields = read_json(s.args.filename), {}
    else:
        body, fields = body_from_flags(s.args), FLAG_FIELDS
    task = s.client.call("POST", f"{s.body_base(body)}/tasks", body=body, fields=fields)
    if s.machine:
        s.show(task)
    else:
        s.say(f"task.cadenza.dev/{task.get('name')} created in namespace {task.get('namespace')}")
    return errors.OK


def _flag_set(args: argparse.Namespace, flag: str) -> bool:
    value = getattr(args, flag.removeprefix("--").replace("-", "_"), None)
    return value not in (None, False, [])


def body_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The original system's body the flags describe (only the fields given)."""
    if not args.name or not args.schedule:
        raise errors.usage("tasks create needs NAME and --schedule CRON, or -f FILE")
    body: dict[str, Any] = {"name": args.name, "cron_expression": args.schedule}
    simple = {
        "execution_mode": args.mode,
        "load_balance_strategy": args.strategy,
        "handler": args.handler,
        "timeout_seconds": args.timeout_seconds,
        "retries": args.retries,
        "time_zone": args.time_zone,
        "description": args.description,
    }
    body.update({key: value for key, value in simple.items() if value is not None})
    if args.executor:
        body["executors"] = [executor_entry(text) for text in args.executor]
    if args.payload is not None:
        try:
            body["payload"] = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise errors.usage(f"--payload must be JSON: {exc.msg} at column {exc.colno}") from None
    if args.label:
        body["labels"] = dict(_pair(text) for text in args.label)
    if args.suspended:
        body["enabled"] = False
    return body


def executor_entry(text: str) -> str | dict[str, Any]:
    """``--executor NAME`` or ``NAME:WEIGHT``."""
    name, sep, weight = text.partition(":")
    if not sep:
        return name
    if not name or not weight.isdigit():
        raise errors.usage(f"--executor takes NAME or NAME:WEIGHT (a whole number), got {text!r}")
    return {"name": name, "weight": int(weight)}


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise errors.usage(f"--label takes KEY=VALUE, got {text!r}")
    return key, value


def trigger_task(s: Session) -> int:
    headers = {"Idempotency-Key": s.args.idempotency_key} if s.args.idempotency_key else {}
    path = f"{s.base()}/tasks/{quote(s.args.name)}/trigger"
    answer = s.client.call("POST", path, headers=headers)
    if s.machine:
        s.show(answer)
    run = answer.get("executionId")
    if run is None:
        raise errors.CommandError(
            errors.TIMED_OUT,
            f"the trigger is recorded (key {answer.get('triggerKey')}) but no leader claimed its"
            " run within the API's wait; it fires once one leads",
        )
    if not s.machine:
        s.say(str(run))
    return errors.OK


def suspend_task(s: Session) -> int:
    return _patch(s, {"suspend": True}, "suspended")


def resume_task(s: Session) -> int:
    return _patch(s, {"suspend": False}, "resumed")


def _patch(s: Session, body: dict[str, Any], done: str) -> int:
    task = s.client.call("PATCH", f"{s.base()}/tasks/{quote(s.args.name)}", body=body)
    if s.machine:
        s.show(task)
    else:
        s.say(f"task.cadenza.dev/{task.get('name')} {done}")
    return errors.OK


def delete_task(s: Session) -> int:
    s.client.call("DELETE", f"{s.base()}/tasks/{quote(s.args.name)}")
    if not s.machine:
        s.say(f"task.cadenza.dev/{s.args.name} deleted")
    return errors.OK


def _where(s: Session) -> str:
    ns = s.target.namespace
    return f"namespace {ns}" if ns else "the API's default namespace"
