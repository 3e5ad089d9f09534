"""The end-to-end suite's command-line options.

Registered by ``tests/conftest.py`` (pytest reads options only from conftests it loads before
parsing the command line, and ``tests/e2e/conftest.py`` is not one of them in a plain ``pytest``
run), so ``pytest tests/e2e --kubeconfig ...`` and ``pytest tests --kubeconfig ...`` both work.
"""

from __future__ import annotations

import pytest

DEFAULT_TIMEOUT = 90.0


def register(parser: pytest.Parser) -> None:
    group = parser.getgroup("e2e", "end-to-end suite against a running installation (tests/e2e)")
    group.addoption(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig of a cluster where Cadenza runs; without it tests/e2e is skipped",
    )
    group.addoption(
        "--e2e-namespace",
        metavar="NS",
        default="default",
        help="namespace of the test Tasks and of the executor (default: default)",
    )
    group.addoption(
        "--e2e-executor",
        metavar="NAME",
        default="demo-executor",
        help="an Executor in that namespace whose pods run the demo app's `echo` handler"
        " (default: demo-executor)",
    )
    group.addoption(
        "--e2e-kubectl",
        metavar="PATH",
        help="the kubectl to run (default: kubectl on PATH, else the control-plane cache's)",
    )
    group.addoption(
        "--e2e-api",
        metavar="URL",
        help="base URL of the REST API (e.g. http://127.0.0.1:8080); without it the REST API"
        " test is skipped",
    )
    group.addoption(
        "--e2e-token",
        metavar="TOKEN",
        help="bearer token for --e2e-api, allowed every verb on Cadenza's resources",
    )
    group.addoption(
        "--e2e-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"deadline of each wait on the cluster (default {DEFAULT_TIMEOUT:g})",
    )
