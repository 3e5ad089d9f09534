"""The user commands' parser and runner, shared by ``cadenza`` and ``kubectl cadenza``.

Connection and output flags (:func:`common`) are accepted at every level, before or after the
command (``kubectl cadenza -n team-a tasks list`` and ``cadenza tasks list -n team-a``), as
kubectl accepts its own. Invariant: :func:`run` returns an exit code of
:mod:`cadenza.commands.errors` and prints each failure as one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from cadenza.commands import discovery, errors, output
from cadenza.commands.client import Client
from cadenza.commands.discovery import Target
from cadenza.commands.errors import CommandError

Subparsers = Any  # argparse's _SubParsersAction, private to it
Handler = Callable[["Session"], int]


class Parser(argparse.ArgumentParser):
    """An argparse parser whose mistakes are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise errors.usage(f"{message} (see {self.prog} --help)")


@dataclass
class Session:
    """What a command's handler works with: its arguments, the API and the output format."""

    args: argparse.Namespace
    target: Target
    client: Client
    output: str
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def machine(self) -> bool:
        """``-o json`` or ``-o yaml``: print the API's answers, nothing else."""
        return self.output != "table"

    def base(self, namespace: str | None = None) -> str:
        """``/api/v1/namespaces/{ns}``, or ``/api/v1`` (the API's default namespace)."""
        ns = namespace or self.target.namespace
        return f"/api/v1/namespaces/{quote(ns)}" if ns else "/api/v1"

    def body_base(self, body: Mapping[str, Any]) -> str:
        """The prefix for a body that may name its namespace: ``-n`` wins (the API refuses a
        body naming another), then the body's, then the context's."""
        if self.target.namespace_given or not isinstance(body.get("namespace"), str):
            return self.base()
        return "/api/v1"

    def show(self, value: Any) -> None:
        print(output.dump(value, self.output))

    def say(self, text: str) -> None:
        print(text)

    def note(self, text: str) -> None:
        """A line for the person at the terminal, on stderr so stdout stays parseable."""
        print(text, file=sys.stderr)


def quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def common() -> argparse.ArgumentParser:
    """The flags every user command takes; absent ones stay unset at every level."""
    flags = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    conn = flags.add_argument_group("connection (see docs/cli.md)")
    conn.add_argument("--api", metavar="URL", help="the REST API's URL (else $CADENZA_API)")
    conn.add_argument("--token", metavar="T", help="bearer token (else $CADENZA_TOKEN)")
    conn.add_argument("--token-file", metavar="FILE", help="read the bearer token from FILE")
    conn.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (else $KUBECONFIG)")
    conn.add_argument("--context", metavar="NAME", help="kubeconfig context (else current)")
    conn.add_argument("-n", "--namespace", metavar="NS", help="namespace (else the context's)")
    conn.add_argument("--ca-file", metavar="FILE", help="CA bundle for an HTTPS API")
    conn.add_argument(
        "--insecure-skip-tls-verify",
        dest="insecure",
        action="store_true",
        help="do not verify an HTTPS API's certificate",
    )
    conn.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=float,
        help="give up on one request after SECONDS (default 60)",
    )
    flags.add_argument("-o", "--output", choices=output.FORMATS, help="default: table")
    return flags


def parser(prog: str, description: str) -> tuple[Parser, Subparsers, argparse.ArgumentParser]:
    """The top parser with the user commands; its subparsers, to add ``operator`` to."""
    from cadenza.commands import executors, replicas, runs, tasks

    flags = common()
    top = Parser(
        prog=prog,
        description=description,
        parents=[flags],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (tasks, runs, executors, replicas):
        group.register(sub, flags)
    return top, sub, flags


EXIT_CODES = """exit codes:
  0  done                       4  not found (404)
  1  the API refused (4xx)      5  the API unreachable, or failing (5xx)
  2  usage: flags, files, setup 6  a wait ran out (runs follow --count, a 202 trigger)
  3  not authenticated or forbidden (401/403)
"""


def run(
    top: Parser,
    argv: Sequence[str] | None,
    others: Mapping[str, Callable[[argparse.Namespace], int]] | None = None,
) -> int:
    """Parse ``argv`` and run the command; ``others`` are commands that are not API clients
    (``operator``)."""
    try:
        args = top.parse_args(argv)
        if others and args.command in others:
            return others[args.command](args)
        return execute(args, os.environ, Path.home())
    except CommandError as exc:
        print(f"{top.prog}: error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return errors.INTERRUPTED
    except BrokenPipeError:  # `cadenza runs list | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return errors.OK


def execute(args: argparse.Namespace, env: Mapping[str, str], home: Path) -> int:
    flags = discovery.Flags(
        api=getattr(args, "api", None),
        token=getattr(args, "token", None),
        token_file=getattr(args, "token_file", None),
        kubeconfig=getattr(args, "kubeconfig", None),
        context=getattr(args, "context", None),
        namespace=getattr(args, "namespace", None),
        ca_file=getattr(args, "ca_file", None),
        insecure=getattr(args, "insecure", False),
    )
    target = discovery.resolve(flags, env, home)
    timeout = getattr(args, "request_timeout", 60.0)
    if timeout <= 0:
        raise errors.usage("--request-timeout must be more than 0 seconds")
    session = Session(args, target, Client(target, timeout), getattr(args, "output", "table"))
    handler: Handler = args.run_command
    return handler(session)


def leaf(
    group: Subparsers, flags: argparse.ArgumentParser, name: str, handler: Handler, help: str
) -> argparse.ArgumentParser:
    """A command under ``group`` that takes the common flags and runs ``handler``."""
    command: argparse.ArgumentParser = group.add_parser(
        name, parents=[flags], help=help, description=help
    )
    command.set_defaults(run_command=handler)
    return command


def read_json(path: str, stdin: Callable[[], str] = lambda: sys.stdin.read()) -> dict[str, Any]:
    """The JSON object of ``-f path`` (``-`` for stdin); a usage error naming the problem."""
    import json

    where = "stdin" if path == "-" else path
    try:
        text = stdin() if path == "-" else Path(path).expanduser().read_text()
    except OSError as exc:
        raise errors.usage(f"-f {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise errors.usage(f"-f {where}: not UTF-8 text") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.usage(
            f"-f {where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(body, dict):
        raise errors.usage(f"-f {where}: must hold a JSON object ({{...}}), not {_kind(body)}")
    return body


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
