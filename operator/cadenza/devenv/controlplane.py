"""A real, local Kubernetes control plane: etcd plus kube-apiserver, no kubelet.

The binaries come from ``hack/controlplane/build.sh`` (built from the Go module proxy and
cached). :class:`ControlPlane` starts etcd and the API server on free loopback ports with fresh
certificates, RBAC authorisation and service-account signing keys, writes an admin kubeconfig and
waits for ``/readyz``. Tests create Pods and set their status themselves, the way KWOK does.

Invariants:
- ``stop()`` leaves no process and no work directory behind, and is safe to call twice.
- Stop order matters: the API server first (waited for), then etcd. With etcd gone first the
  API server lingers for minutes retrying its storage.
- Children get ``PR_SET_PDEATHSIG`` so that even a ``kill -9`` of the Python process that started
  them does not orphan them. WARNING: the signal fires when the *thread* that started them exits,
  so start a control plane from a long-lived thread (the main thread in practice).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cadenza.devenv import pki as pki_

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.sh"
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message says which."""


def build_binaries() -> Path:
    """Build (or reuse from the cache) the control-plane binaries; return their directory."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago; good enough for local processes started right away."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group, logging to ``log``, dying with its parent."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``condition`` until it is true or ``timeout`` passes (then raise, naming ``what``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair; build one with :meth:`start`."""

    bin_dir: Path
    workdir: Path
    url: str
    kubeconfig: Path
    pki: pki_.Pki
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _owns_workdir: bool = True
    _etcd_url: str = ""

    @classmethod
    def start(
        cls, bin_dir: Path | None = None, workdir: Path | None = None, timeout: float = 60.0
    ) -> ControlPlane:
        """Start etcd and the API server and wait until the API is ready."""
        bin_dir = bin_dir or build_binaries()
        owns = workdir is None
        workdir = workdir or Path(tempfile.mkdtemp(prefix="cadenza-cp-"))
        workdir.mkdir(parents=True, exist_ok=True)
        pki = pki_.generate(workdir / "pki")
        port = free_port()
        plane = cls(
            bin_dir=bin_dir,
            workdir=workdir,
            url=f"https://127.0.0.1:{port}",
            kubeconfig=workdir / "kubeconfig",
            pki=pki,
            _owns_workdir=owns,
        )
        try:
            plane._etcd_url = plane._start_etcd()
            plane._start_apiserver(port, plane._etcd_url)
            plane._write_kubeconfig()
            wait_until(plane._ready, timeout, f"kube-apiserver /readyz at {plane.url}")
        except BaseException:
            plane.stop()
            raise
        return plane

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self.processes["etcd"] = spawn(
            [
                str(self.bin_dir / "etcd"),
                "--name=cadenza",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=cadenza={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        return client_url

    def _start_apiserver(self, port: int, etcd_url: str) -> None:
        p = self.pki
        self.processes["kube-apiserver"] = spawn(
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                # A loopback address cannot be advertised in the kubernetes Endpoints object.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--tls-cert-file={p.serving_cert}",
                f"--tls-private-key-file={p.serving_key}",
                f"--client-ca-file={p.ca_cert}",
                f"--service-account-key-file={p.sa_public_key}",
                f"--service-account-signing-key-file={p.sa_private_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--api-audiences=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                # No controller manager creates the `default` ServiceAccount in test namespaces.
                "--disable-admission-plugins=ServiceAccount",
                "--v=0",
            ],
            self.workdir / "kube-apiserver.log",
        )

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 60.0) -> None:
        """Stop the API server (SIGTERM, as a rollout does), keep it down ``down_seconds``, and
        start it again on the same address with the same etcd; returns once it is ready. Every
        client sees its watches break and must resume them."""
        terminate(self.processes.pop("kube-apiserver"))
        time.sleep(down_seconds)
        self._start_apiserver(int(self.url.rsplit(":", 1)[1]), self._etcd_url)
        wait_until(self._ready, timeout, f"kube-apiserver /readyz at {self.url} after a restart")

    def _ready(self) -> bool:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{log}")
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            kubeconfig_yaml(
                self.url,
                self.pki.ca_cert,
                user="admin",
                credentials={
                    "client-certificate": str(self.pki.admin_cert),
                    "client-key": str(self.pki.admin_key),
                },
            )
        )
        self.kubeconfig.chmod(0o600)

    @property
    def env(self) -> dict[str, str]:
        """The calling environment with KUBECONFIG set and the built binaries first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane."""
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
            )
        return proc

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.processes.values()]

    def stop(self) -> None:
        """Stop the API server, then etcd, and remove the work directory."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.get(name)
            if proc is not None:
                terminate(proc)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kubeconfig_yaml(
    server: str,
    ca_cert: Path,
    user: str,
    credentials: Mapping[str, str],
    namespace: str = "default",
) -> str:
    """A one-context kubeconfig for ``server`` (JSON is valid YAML, so no YAML library needed)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cadenza",
                "cluster": {"server": server, "certificate-authority": str(ca_cert)},
            }
        ],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [
            {
                "name": "cadenza",
                "context": {"cluster": "cadenza", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "cadenza",
    }
    return json.dumps(config, indent=2) + "\n"


@contextlib.contextmanager
def running(bin_dir: Path | None = None) -> Iterator[ControlPlane]:
    """``with running() as cp:`` — a control plane for the duration of the block."""
    plane = ControlPlane.start(bin_dir)
    try:
        yield plane
    finally:
        plane.stop()
