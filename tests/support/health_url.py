"""An outside executor's health URL served by the test, so that probes can be counted.

An executor outside the cluster names any URL as its health URL; the leader probes it with its
Executor's ``healthCheck`` and folds the answers with the thresholds. To check those thresholds
in probes, not in seconds, the test serves that URL itself (real HTTP on a loopback address) and
answers each probe from a script: ``script(n)`` says whether the n-th probe since the script was
played (from 0) is answered 200 or 503. Every answer is recorded with the wall time it was given.

Invariant: the answers of one script are recorded in the order they were given; :meth:`play`
starts a new record, so a probe answered under the previous script never counts for the new one.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

Script = Callable[[int], bool]


def always(ok: bool) -> Script:
    return lambda _: ok


def cycle(ok: int, failed: int) -> Script:
    """``ok`` answers 200, then ``failed`` answers 503, over and over."""
    return lambda n: n % (ok + failed) < ok


@dataclass(frozen=True)
class Answer:
    ok: bool
    at: datetime


class HealthUrl:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: Script = always(True)
        self._answers: list[Answer] = []
        handler = self._handler()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/health"
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-url")

    def play(self, script: Script) -> None:
        """Answer the next probes from ``script``, counting from 0 again."""
        with self._lock:
            self._script, self._answers = script, []

    def answers(self) -> list[Answer]:
        """What the probes were answered since :meth:`play`, in order."""
        with self._lock:
            return list(self._answers)

    def _answer(self) -> bool:
        with self._lock:
            ok = self._script(len(self._answers))
            self._answers.append(Answer(ok, datetime.now(UTC)))
            return ok

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        answer = self._answer

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = answer()
                body = b'{"status": "ok"}' if ok else b'{"status": "failing"}'
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per probe on stderr would drown the test's report

        return Handler


@contextmanager
def serving() -> Iterator[HealthUrl]:
    target = HealthUrl()
    target._thread.start()
    try:
        yield target
    finally:
        target._server.shutdown()
        target._server.server_close()
        target._thread.join(timeout=10)
