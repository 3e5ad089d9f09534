"""TLS on both legs between operator and sidecars, with real processes and real certificates.

Dispatch: a real sidecar serves HTTPS with a certificate for its own address (as a pod's names
its pod IP) and the leader's dispatch client trusts one CA: a run goes through with that CA, and
with a stranger's CA or a certificate for another address nothing starts. Callbacks: a real
operator replica serves HTTPS and a real sidecar delivers to it with the right CA, and keeps the
report spooled with a wrong one. The material comes from :mod:`cadenza.devenv.pki`.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cadenza import tls
from cadenza.devenv import pki
from cadenza.devenv.controlplane import ControlPlane
from cadenza.dispatch.client import DispatchClient, DispatchRequest, Outcome
from cadenza.settings import Settings, SettingsError
from tests.sidecar.conftest import (
    CALLBACK_TOKEN,
    FAST_FLAGS,
    TOKEN,
    CallbackReceiver,
    DemoAppProcess,
    ManagedProcess,
    _child_env,
    check_log_hygiene,
    eventually,
    free_port,
    next_loopback,
    write_private,
)
from tests.sidecar.conftest import demo_app as demo_app  # fixture, by name
from tests.sidecar.conftest import receiver as receiver  # fixture, by name
from tests.support import operators
from tests.support import spool as spool_files

Launch = Callable[..., Awaitable["TlsSidecar"]]


@dataclass(frozen=True)
class Material:
    ca: pki.Authority
    stranger: pki.Authority
    """Another CA, which signed nothing the servers use."""
    directory: Path

    def serving(self, stem: str, *hosts: str, by: pki.Authority | None = None) -> pki.ServingPair:
        return pki.issue_serving(by or self.ca, self.directory, stem, hosts, stem=stem)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    directory = tmp_path_factory.mktemp("pki")
    return Material(
        pki.generate_ca(directory, "cadenza-test-ca", "ca"),
        pki.generate_ca(directory, "somebody-else", "stranger"),
        directory,
    )


class TlsSidecar(ManagedProcess):
    """A sidecar on its own loopback address ``host``, serving HTTPS with ``pair``."""

    def __init__(self, directory: Path, host: str, pair: pki.ServingPair, args: list[str]) -> None:
        self.host = host
        self.port = free_port(host)
        self.pair = pair
        self.spool = directory / f"spool-{host}"
        token_file = directory / f"token-{host}"
        write_private(token_file, TOKEN)
        argv = [
            sys.executable, "-m", "cadenza_sidecar", "--listen", host, "--port", str(self.port),
            "--pod-name", f"pod-{host}", "--spool-dir", str(self.spool),
            "--token-file", str(token_file), *FAST_FLAGS,
            "--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key), *args,
        ]  # fmt: skip
        super().__init__(argv, directory / f"sidecar-{host}.log", _child_env())

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def wait_serving(self, trust: ssl.SSLContext) -> None:
        async def healthy() -> bool:
            if not self.running():
                raise AssertionError(f"sidecar exited:\n{self.log()}")
            try:
                return (await get(self.base_url + "/healthz", trust))[0] == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, within=20, what=f"the sidecar over HTTPS\n{self.log()}")

    def spooled(self) -> list[str]:
        return spool_files.spooled(self.spool)


async def get(url: str, trust: ssl.SSLContext, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=trust, headers=headers, timeout=aiohttp.ClientTimeout(5)) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def trusting(ca: pki.Authority, *, check_name: bool = True) -> ssl.SSLContext:
    context = tls.client_context(ca.cert)
    context.check_hostname = check_name  # off only to reach a sidecar with a foreign name
    return context


@pytest.fixture
def launch(tmp_path: Path, material: Material) -> Iterator[Launch]:
    """``await launch(handler_url, names=..., args=...)``: a sidecar whose certificate (signed
    by the test CA) names ``names``, by default its own address, as a pod's names its IP."""
    started: list[TlsSidecar] = []

    async def start(
        handler_url: str, *, names: tuple[str, ...] = (), args: tuple[str, ...] = ()
    ) -> TlsSidecar:
        host = next_loopback()
        pair = material.serving(f"sidecar-{host}", *(names or (host,)))
        sidecar = TlsSidecar(tmp_path, host, pair, ["--handler-url", handler_url, *args])
        started.append(sidecar)
        sidecar.spawn()
        await sidecar.wait_serving(trusting(material.ca, check_name=not names))
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop()
    for sidecar in started:
        check_log_hygiene(sidecar.log())


def request_for(callback_url: str) -> DispatchRequest:
    return DispatchRequest(
        execution_key=f"exec-{uuid.uuid4().hex[:12]}", task_uid=str(uuid.uuid4()),
        task="tests/tls", epoch=7, handler="echo", payload={"over": "tls"},
        scheduled_at=datetime.now(UTC), attempt=1, timeout_seconds=30,
        callback_url=callback_url, callback_token=CALLBACK_TOKEN,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def client_trusting(ca: pki.Authority) -> AsyncIterator[DispatchClient]:
    client = DispatchClient(
        connect_timeout=2.0, total_timeout=5.0, ssl_context=tls.client_context(ca.cert)
    )
    try:
        yield client
    finally:
        await client.close()


# -- dispatch: operator -> sidecar ----------------------------------------------------------------


async def test_a_run_dispatched_over_https_with_the_right_ca_runs_and_reports(
    material: Material, launch: Launch, demo_app: DemoAppProcess, receiver: CallbackReceiver
) -> None:
    sidecar = await launch(demo_app.handler_url)
    request = request_for(receiver.url)
    async with client_trusting(material.ca) as client:
        probe = await client.probe(sidecar.base_url, "/healthz", 3.0)
        result = await client.send(sidecar.base_url, TOKEN, request)

    assert probe.ok, probe.error
    assert (result.outcome, result.status) == (Outcome.ACCEPTED, 202), result.error
    body = await receiver.wait_acknowledged(request.execution_key)
    assert (body["status"], body["result"]) == ("succeeded", {"over": "tls"})
    assert [e["executionId"] for e in demo_app.ledger()] == [request.execution_key]


@pytest.mark.parametrize("refusal", ["stranger's CA", "certificate for another address"])
async def test_a_sidecar_that_fails_verification_is_sent_nothing_and_starts_nothing(
    refusal: str,
    material: Material,
    launch: Launch,
    demo_app: DemoAppProcess,
    receiver: CallbackReceiver,
) -> None:
    if refusal == "stranger's CA":
        sidecar, trusted = await launch(demo_app.handler_url), material.stranger
    else:
        sidecar, trusted = await launch(demo_app.handler_url, names=("127.0.0.254",)), material.ca
    request = request_for(receiver.url)
    async with client_trusting(trusted) as client:
        probe = await client.probe(sidecar.base_url, "/healthz", 3.0)
        result = await client.send(sidecar.base_url, TOKEN, request)

    assert not probe.ok and "certificate" in (probe.error or ""), probe.error
    assert result.outcome is Outcome.UNREACHABLE
    assert not result.may_have_started, "a refused handshake sends no byte of the run"
    assert "certificate" in (result.error or ""), result.error
    # Asked with the right CA (and no name check), the pod knows no such run.
    status, _ = await get(
        f"{sidecar.base_url}/v1/executions/{request.execution_key}",
        trusting(material.ca, check_name=False),
        TOKEN,
    )
    assert status == 404
    assert demo_app.ledger() == []


async def test_a_renewed_pair_is_served_without_a_restart(
    material: Material, launch: Launch, demo_app: DemoAppProcess
) -> None:
    sidecar = await launch(demo_app.handler_url, args=("--tls-poll-seconds", "0.1"))
    pid = sidecar.pid
    renewed = material.serving(f"renewed-{sidecar.host}", sidecar.host, by=material.stranger)

    # As the kubelet swaps a Secret's files: each replaced whole, never half written.
    for source, target in ((renewed.key, sidecar.pair.key), (renewed.cert, sidecar.pair.cert)):
        staged = target.with_suffix(".new")
        staged.write_bytes(source.read_bytes())
        staged.replace(target)

    await sidecar.wait_serving(trusting(material.stranger))
    assert sidecar.pid == pid and sidecar.running(), "no restart"


# -- callbacks: sidecar -> operator ---------------------------------------------------------------


@pytest.fixture
def https_replica(
    controlplane: ControlPlane,
    database: str,
    namespace: str,
    crds: None,
    material: Material,
    tmp_path: Path,
) -> Iterator[str]:
    """A real operator replica serving HTTPS on 127.0.0.1; yields its advertised base URL."""
    pair = material.serving("operator", "127.0.0.1", "localhost")
    env = {"CADENZA_HTTP_TLS_CERT_FILE": str(pair.cert), "CADENZA_HTTP_TLS_KEY_FILE": str(pair.key)}
    with operators.replicas(
        controlplane, database, namespace, tmp_path, count=1, extra_env=env
    ) as group:
        (member,) = group.members
        yield f"https://127.0.0.1:{member.port}"


async def test_the_operator_serves_https_and_a_sidecar_calls_back_with_the_right_ca_only(
    https_replica: str, material: Material, launch: Launch, demo_app: DemoAppProcess
) -> None:
    async def ready() -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            return (await get(https_replica + "/healthz", trusting(material.ca)))[0] == 200
        return False

    await eventually(ready, within=60, what="the replica's /healthz over HTTPS")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(https_replica + "/healthz", trusting(material.stranger))

    right = await launch(demo_app.handler_url, args=("--callback-ca-file", str(material.ca.cert)))
    wrong = await launch(
        demo_app.handler_url, args=("--callback-ca-file", str(material.stranger.cert))
    )
    async with client_trusting(material.ca) as client:
        for sidecar in (right, wrong):
            # No run of that id exists: the operator's answer (404) settles the report for good.
            request = request_for(f"{https_replica}/api/v1/callbacks/{uuid.uuid4().int % 10**9}")
            result = await client.send(sidecar.base_url, TOKEN, request)
            assert result.outcome is Outcome.ACCEPTED, result.error

    await eventually(
        lambda: "HTTP 404" in right.log() and not right.spooled(),
        within=30,
        what=f"the operator's answer reaching the sidecar\n{right.log()}",
    )
    await eventually(
        lambda: "certificate verify failed" in wrong.log(),
        within=30,
        what=f"the sidecar refusing the operator's certificate\n{wrong.log()}",
    )
    assert "HTTP 404" not in wrong.log()
    assert len(wrong.spooled()) == 1, "the undelivered report stays in the spool"


# -- bad input ------------------------------------------------------------------------------------


@pytest.fixture
def files(material: Material, tmp_path: Path) -> dict[str, Path]:
    """Files by what the bad-input tests call them: a good pair's parts and unusable ones."""
    one, other = material.serving("one", "127.0.0.1"), material.serving("other", "127.0.0.1")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    return {
        "cert": one.cert, "key": one.key, "other-key": other.key,
        "absent-key": tmp_path / "absent.key", "ca-absent": tmp_path / "absent.crt",
        "ca-not-pem": not_pem,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("given", "named"),
    [
        pytest.param(("cert",), "--tls-cert-file needs --tls-key-file", id="cert-only"),
        pytest.param(("key",), "--tls-key-file needs --tls-cert-file", id="key-only"),
        pytest.param(("cert", "absent-key"), "--tls-key-file", id="unreadable-key"),
        pytest.param(("cert", "other-key"), "private key that matches", id="mismatched-key"),
        pytest.param(("ca-absent",), "--callback-ca-file", id="unreadable-ca"),
        pytest.param(("ca-not-pem",), "--callback-ca-file", id="ca-not-pem"),
    ],
)
def test_the_sidecar_refuses_unusable_tls_files_naming_the_flag(
    given: tuple[str, ...], named: str, files: dict[str, Path]
) -> None:
    flags = {
        "cert": "--tls-cert-file", "key": "--tls-key-file", "absent-key": "--tls-key-file",
        "other-key": "--tls-key-file", "ca-absent": "--callback-ca-file",
        "ca-not-pem": "--callback-ca-file",
    }  # fmt: skip
    argv = [arg for option in given for arg in (flags[option], str(files[option]))]
    env = {k: v for k, v in _child_env().items() if not k.startswith("CADENZA_")}
    done = subprocess.run(
        [sys.executable, "-m", "cadenza_sidecar", "--insecure-no-auth", *argv,
         "--command", "true"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert named in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("given", "named"),
    [
        pytest.param(("cert",), "CADENZA_HTTP_TLS_CERT_FILE needs CADENZA_HTTP_TLS_KEY_FILE",
                     id="cert-only"),
        pytest.param(("absent-key", "cert"), "CADENZA_HTTP_TLS_KEY_FILE", id="unreadable-key"),
        pytest.param(("cert", "other-key"), "CADENZA_HTTP_TLS_CERT_FILE", id="mismatched-key"),
        pytest.param(("ca-not-pem",), "CADENZA_DISPATCH_CA_FILE", id="ca-not-pem"),
        pytest.param(("ca-absent",), "CADENZA_DISPATCH_CA_FILE", id="unreadable-ca"),
    ],
)  # fmt: skip
def test_the_operator_refuses_unusable_tls_files_naming_the_variable(
    given: tuple[str, ...], named: str, files: dict[str, Path]
) -> None:
    variables = {
        "cert": "CADENZA_HTTP_TLS_CERT_FILE", "absent-key": "CADENZA_HTTP_TLS_KEY_FILE",
        "other-key": "CADENZA_HTTP_TLS_KEY_FILE", "ca-not-pem": "CADENZA_DISPATCH_CA_FILE",
        "ca-absent": "CADENZA_DISPATCH_CA_FILE",
    }  # fmt: skip
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({variables[option]: str(files[option]) for option in given})


def test_the_operator_advertises_https_when_it_serves_it(material: Material) -> None:
    pair = material.serving("advertised", "127.0.0.1")
    env = {"CADENZA_HTTP_TLS_CERT_FILE": str(pair.cert), "CADENZA_HTTP_TLS_KEY_FILE": str(pair.key)}
    assert Settings.from_env({**env, "CADENZA_HTTP_PORT": "8443"}).http.advertise_url == (
        "https://127.0.0.1:8443"
    )
    assert Settings.from_env({}).http.advertise_url == "http://127.0.0.1:8080"
