"""``cadenza runs``: the run history (list, follow, get) and cancel.

``list`` follows the API's cursor (pages newest first) until ``--limit`` runs are shown or the
history ends. ``follow`` polls the newest page and walks the cursor back to the last run it
printed, so a burst of runs between two polls is printed whole, oldest first, each run once.
WARNING: ``follow`` prints a run as it is when first seen; with ``--status`` a run that reaches
that status after a newer run was printed is not shown (follow without ``--status`` to see all).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cadenza.commands import errors, output, times
from cadenza.commands.app import Session, Subparsers, leaf, quote
from cadenza.commands.errors import CommandError

MAX_PAGE = 500
FOLLOW_PAGE = 100
FOLLOW_WIDTHS = (8, 24, 11, 9, 8, 9, 9)


def register(sub: Subparsers, flags: argparse.ArgumentParser) -> None:
    runs = sub.add_parser("runs", parents=[flags], help="the run history; follow and cancel runs")
    group = runs.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = leaf(group, flags, "list", list_runs, "runs, newest first")
    _filters(listing)
    listing.add_argument(
        "--limit",
        type=_positive,
        default=50,
        metavar="N",
        help="show at most N runs (default 50), paging as needed",
    )

    follow = leaf(group, flags, "follow", follow_runs, "print new runs as they arrive")
    _filters(follow, times_too=False)
    follow.add_argument(
        "--after",
        type=int,
        metavar="ID",
        help="print runs with a larger id (default: the newest run now)",
    )
    follow.add_argument("--count", type=_positive, metavar="N", help="stop after N runs")
    follow.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after SECONDS")
    follow.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between polls (default 2)",
    )

    leaf(group, flags, "get", get_run, "one run with its attempts and result").add_argument(
        "id", type=int
    )
    leaf(group, flags, "cancel", cancel_run, "cancel a run and tell its pod").add_argument(
        "id", type=int
    )


def _filters(command: argparse.ArgumentParser, times_too: bool = True) -> None:
    command.add_argument("--task", metavar="NAME", help="one Task's runs (else every Task's)")
    command.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="runs of every namespace (needs list on tasks cluster-wide)",
    )
    command.add_argument(
        "--status",
        action="append",
        metavar="S",
        help="succeeded, failed, running, ... (comma-separated, repeatable)",
    )
    command.add_argument(
        "--origin",
        action="append",
        metavar="O",
        help="schedule, misfire, manual or api (comma-separated, repeatable)",
    )
    if times_too:
        command.add_argument(
            "--since",
            metavar="TIME",
            help="requested at or after TIME: RFC 3339, or 90s, 15m, 2h, 7d ago",
        )
        command.add_argument("--until", metavar="TIME", help="requested before TIME (as --since)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def source(s: Session) -> tuple[str, list[tuple[str, str]]]:
    """The history route and the filter query the arguments ask for."""
    args = s.args
    query = [("status", v) for v in args.status or []] + [("origin", v) for v in args.origin or []]
    for flag in ("since", "until"):
        value = getattr(args, flag, None)
        if value:
            try:
                query.append((flag, times.instant(value, s.now(), f"--{flag}")))
            except ValueError as exc:
                raise errors.usage(str(exc)) from None
    if args.all_namespaces:
        if s.target.namespace_given:
            raise errors.usage("-A and -n exclude each other")
        return "/api/v1/executions", query + ([("task", args.task)] if args.task else [])
    if args.task:
        return f"{s.base()}/tasks/{quote(args.task)}/executions", query
    if not s.target.namespace:
        raise errors.usage(
            "runs of which namespace? pass -n NAMESPACE, --task NAME or --all-namespaces"
        )
    return f"{s.base()}/executions", query


def list_runs(s: Session) -> int:
    path, query = source(s)
    items: list[Any] = []
    cursor = ""
    while len(items) < s.args.limit:
        size = min(s.args.limit - len(items), MAX_PAGE)
        page = s.client.get(path, [*query, ("limit", str(size)), *_cursor(cursor)])
        items += page.get("items") or []
        cursor = page.get("cursor") or ""
        if not cursor:
            break
    if s.machine:
        s.show({"items": items, "cursor": cursor or None})
    elif not items:
        s.note("No runs found.")
    else:
        s.say(table(items, s.now(), s.args.all_namespaces))
    return errors.OK


def _cursor(cursor: str) -> list[tuple[str, str]]:
    return [("cursor", cursor)] if cursor else []


HEADERS = ("id", "task", "status", "origin", "attempt", "requested", "duration", "pod")


def table(items: list[dict[str, Any]], now: datetime, namespaces: bool = False) -> str:
    headers = ("namespace", *HEADERS) if namespaces else HEADERS
    rows = [[r.get("namespace"), *row(r, now)] if namespaces else row(r, now) for r in items]
    return output.table(headers, rows)


def row(run: dict[str, Any], now: datetime) -> list[object]:
    return [
        run.get("id"),
        run.get("task"),
        run.get("status"),
        run.get("origin"),
        f"{run.get('attempt')}/{run.get('maxAttempts')}",
        times.relative(run.get("requestedAt"), now),
        duration(run),
        run.get("pod"),
    ]


def duration(run: dict[str, Any]) -> str | None:
    start = times.parse(run.get("startedAt") or run.get("dispatchedAt") or "")
    end = times.parse(run.get("finishedAt") or "")
    if start is None or end is None:
        return None
    return times.span(max((end - start).total_seconds(), 0))


def follow_runs(s: Session) -> int:
    args = s.args
    path, query = source(s)
    if args.interval <= 0:
        raise errors.usage("--interval must be more than 0 seconds")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen = 0
    try:  # from the first request on: Ctrl-C right after the header must end it cleanly too
        last = args.after if args.after is not None else _newest(s, path, query)
        printer = _printer(s)
        while True:
            for run in newer(s, path, query, last):
                printer(run)
                last, seen = max(last, int(run["id"])), seen + 1
                if args.count and seen >= args.count:
                    return errors.OK
            pause = args.interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                pause = min(pause, left)
            time.sleep(pause)
    except KeyboardInterrupt:
        return errors.OK  # Ctrl-C is how a person ends following
    if args.count:
        raise CommandError(
            errors.TIMED_OUT, f"saw {seen} of {args.count} runs in {args.timeout:g}s (--timeout)"
        )
    return errors.OK


def _newest(s: Session, path: str, query: list[tuple[str, str]]) -> int:
    page = s.client.get(path, [*query, ("limit", "1")])
    items = page.get("items") or []
    return int(items[0]["id"]) if items else 0


def newer(s: Session, path: str, query: list[tuple[str, str]], last: int) -> list[Any]:
    """Every run with an id above ``last``, oldest first, paging back as far as needed."""
    found: list[Any] = []
    cursor = ""
    while True:
        page = s.client.get(path, [*query, ("limit", str(FOLLOW_PAGE)), *_cursor(cursor)])
        items = page.get("items") or []
        found += [run for run in items if int(run["id"]) > last]
        cursor = page.get("cursor") or ""
        if not cursor or not items or int(items[-1]["id"]) <= last:
            return sorted(found, key=lambda run: int(run["id"]))


def _printer(s: Session) -> Callable[[Any], None]:
    """One run per line as it arrives: a fixed-width row, one JSON object, or a YAML document."""
    if s.output == "json":
        return lambda run: print(json.dumps(run), flush=True)
    if s.output == "yaml":
        return lambda run: print("---\n" + output.dump(run, "yaml"), flush=True)
    widths = FOLLOW_WIDTHS

    def line(values: list[object]) -> str:
        cells = [output.cell(v).ljust(w) for v, w in zip(values, widths, strict=False)]
        return output.GAP.join([*cells, output.cell(values[-1])]).rstrip()

    print(line([h.upper() for h in HEADERS]), flush=True)
    return lambda run: print(line(row(run, s.now())), flush=True)


def get_run(s: Session) -> int:
    run = s.client.get(f"/api/v1/executions/{s.args.id}")
    if s.machine:
        s.show(run)
    else:
        s.say(describe(run, s.now()))
    return errors.OK


def describe(run: dict[str, Any], now: datetime) -> str:
    keys = (
        ("ID", "id"),
        ("Namespace", "namespace"),
        ("Task", "task"),
        ("Status", "status"),
        ("Origin", "origin"),
        ("Trigger key", "triggerKey"),
        ("Scheduled at", "scheduledAt"),
        ("Requested at", "requestedAt"),
        ("Executor", "executor"),
        ("Pod", "pod"),
        ("Dispatched at", "dispatchedAt"),
        ("Started at", "startedAt"),
        ("Finished at", "finishedAt"),
        ("Exit code", "exitCode"),
        ("Error", "error"),
    )
    pairs: list[tuple[str, object]] = [(label, run.get(key)) for label, key in keys]
    pairs.insert(5, ("Attempt", f"{run.get('attempt')}/{run.get('maxAttempts')}"))
    parts = [output.fields(pairs)]
    attempts = run.get("attempts") or []
    if attempts:
        heads = ("attempt", "status", "pod", "dispatched", "finished", "error")
        rows = [
            [
                a.get("attempt"),
                a.get("status"),
                a.get("pod"),
                times.relative(a.get("dispatchedAt"), now),
                times.relative(a.get("finishedAt"), now),
                a.get("error"),
            ]
            for a in attempts
        ]
        parts.append("Attempts:\n" + _indent(output.table(heads, rows)))
    else:
        parts.append(f"Attempts:  {output.NONE}")
    result = run.get("result")
    shown = output.NONE if result is None else json.dumps(result, indent=2, ensure_ascii=False)
    parts.append(f"Result:\n{_indent(shown)}" if result is not None else f"Result:  {shown}")
    return "\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def cancel_run(s: Session) -> int:
    answer = s.client.call("POST", f"/api/v1/executions/{s.args.id}/cancel")
    if s.machine:
        s.show(answer)
        return errors.OK
    pod = answer.get("pod")
    told = f"; pod {pod} {'notified' if answer.get('podNotified') else 'did not answer'}"
    s.say(
        f"execution {answer.get('id')} cancelled (was {answer.get('previousStatus')}"
        f"{told if pod else ''})"
    )
    sys.stdout.flush()
    return errors.OK
