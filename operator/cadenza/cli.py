"""The ``cadenza`` command: ``cadenza operator`` runs one operator replica; ``tasks``, ``runs``,
``executors`` and ``replicas`` are clients of the REST API (:mod:`cadenza.commands`, also the
``kubectl cadenza`` plugin, see docs/cli.md).

The operator's configuration comes from ``CADENZA_*`` environment variables (see
``cadenza.settings`` and docs/configuration.md). Its exit codes: 0 after a clean shutdown, 1
when the operator stopped on its own, 2 for a configuration or database error that retrying
cannot fix. The operator's modules are imported only for ``operator``, so the user commands
start fast.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence

DESCRIPTION = "Cadenza: cron Tasks fired on long-lived executor pods."

RECURSION_LIMIT = 20_000
"""The API server stores JSON nested up to 10,000 levels (a Task's free-form payload may be), and
kopf parses every watched object with ``json.loads``, which counts each level against Python's
recursion limit (1,000 by default): below this, one deeply nested Task would break the watch, and
with it the indexes and the readiness of every replica."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers in a cluster expect."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # urllib3 logs every retry of the Kubernetes client; our own messages say what failed.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # kopf's own per-object chatter is debug material for us.
    logging.getLogger("kopf").setLevel(max(logging.getLevelName(level), logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """``cadenza``: the user commands (:mod:`cadenza.commands`) and ``operator``."""
    from cadenza.commands import app

    top, sub, _ = app.parser("cadenza", DESCRIPTION)
    sub.add_parser("operator", help="run one operator replica (settings from CADENZA_* env)")
    return app.run(top, argv, {"operator": lambda _: _operator()})


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl-cadenza``, which kubectl runs for ``kubectl cadenza ...``: the user commands."""
    from cadenza.commands import app

    top, _, _ = app.parser("kubectl cadenza", DESCRIPTION)
    return app.run(top, argv)


def _operator() -> int:
    import asyncio

    from cadenza import failpoints
    from cadenza.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"cadenza: configuration error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    failpoints.arm(settings.failpoints)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))

    from cadenza import collector, replica
    from cadenza.kube.client import ConfigError
    from cadenza.store.engine import DatabaseUnavailable
    from cadenza.store.migrations import MigrationError

    collector.settle()
    try:
        return asyncio.run(replica.run(settings))
    except (DatabaseUnavailable, MigrationError) as exc:
        logging.getLogger("cadenza").error("cannot use the database: %s", exc)
        return 2
    except ConfigError as exc:
        where = (
            f"KUBECONFIG={settings.kube.kubeconfig}"
            if settings.kube.kubeconfig
            else ("the in-cluster service account (no KUBECONFIG set)")
        )
        logging.getLogger("cadenza").error("cannot log in to Kubernetes with %s: %s", where, exc)
        return 2
