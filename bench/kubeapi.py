"""The benchmark's own Kubernetes API traffic: many objects created fast, big lists, /metrics.

``kubectl apply`` of a List sends one request per object, one after the other, and spends most
of its time in client-side bookkeeping (154 s for 10,000 Tasks here). :func:`create_all` instead
POSTs the objects from a pool of threads over one pooled connection set of the official client,
so the API server, not the client, sets the pace. Lists are always paginated (``limit`` +
``continue``) so a 10,000-object list never becomes one giant response.

Invariant: nothing here runs in the measured processes; every call is the benchmark's own and is
made as the control plane's admin (``system:masters``, exempt from API priority and fairness).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

import history
from cadenza.devenv import controlplane as cp

TASKS = ("cadenza.dev", "v1alpha1", "tasks")
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION")


def client(plane: cp.ControlPlane, connections: int = 16) -> kubernetes.client.ApiClient:
    """An API client for the admin kubeconfig with ``connections`` pooled connections."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(plane.kubeconfig), client_configuration=config
    )
    # Without this urllib3 keeps 4 connections and the thread pool queues behind them.
    config.connection_pool_maxsize = connections
    return kubernetes.client.ApiClient(config)


def _create(api: kubernetes.client.ApiClient, obj: dict[str, Any]) -> None:
    namespace = obj["metadata"]["namespace"]
    if obj["kind"] == "CronJob":
        kubernetes.client.BatchV1Api(api).create_namespaced_cron_job(namespace, obj)
        return
    group, version = obj["apiVersion"].split("/")
    plural = obj["kind"].lower() + "s"
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        group, version, namespace, plural, obj
    )


@dataclass(frozen=True)
class Applied:
    """When a batch of creations started and when its last one was answered (``time.time()``)."""

    first: float
    last: float
    count: int
    answered: dict[str, float]
    """When the API server answered each object's creation, by name."""

    @property
    def seconds(self) -> float:
        return self.last - self.first

    def summary(self) -> dict[str, Any]:
        return {
            "objects": self.count,
            "seconds": round(self.seconds, 2),
            "objects_per_second": round(self.count / self.seconds, 1) if self.seconds else None,
            "method": "POST per object from a thread pool (kubernetes Python client)",
        }


def create_all(
    api: kubernetes.client.ApiClient, objects: Sequence[dict[str, Any]], threads: int = 16
) -> Applied:
    """Create every object (Tasks, CronJobs) from ``threads`` threads; raise on the first error."""
    answered: dict[str, float] = {}

    def create(obj: dict[str, Any]) -> None:
        _create(api, obj)
        answered[obj["metadata"]["name"]] = time.time()

    first = time.time()
    with ThreadPoolExecutor(threads, thread_name_prefix="bench-create") as pool:
        # list() re-raises the first failure in this thread once all submitted work is done.
        list(pool.map(create, objects))
    return Applied(first, time.time(), len(objects), answered)


def list_all(fetch: Callable[..., Any], *args: Any, limit: int = 500) -> tuple[list[Any], str]:
    """Every item of a list call, page by page, and the list's resource version.

    The pages of one paginated list are one consistent snapshot, so the first page's resource
    version is where a watch can resume without missing an event.
    """
    items: list[Any] = []
    token, version = "", ""
    while True:
        kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        # Raw JSON: typed clients would turn the objects into snake_case models.
        page = json.loads(fetch(*args, **kwargs).data)
        version = version or str(page["metadata"].get("resourceVersion", ""))
        items += page.get("items") or []
        token = page["metadata"].get("continue") or ""
        if not token:
            return items, version


def list_tasks(api: kubernetes.client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    custom = kubernetes.client.CustomObjectsApi(api)
    return list_all(custom.list_namespaced_custom_object, *TASKS[:2], namespace, TASKS[2])[0]


def list_jobs(api: kubernetes.client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    return list_all(kubernetes.client.BatchV1Api(api).list_namespaced_job, namespace)[0]


def has_status(task: dict[str, Any]) -> bool:
    return bool((task.get("status") or {}).get("nextScheduleTime"))


@dataclass
class StatusWatch:
    """Watches Tasks in a thread and records when each one first showed a next schedule time.

    A watch rather than repeated lists: with 10,000 Tasks a list every few seconds would cost
    the API server (on the same two cores) more than the operator's own work being measured.
    """

    api: kubernetes.client.ApiClient
    namespace: str
    first_status: dict[str, float] = field(default_factory=dict)
    events: int = 0
    relists: int = 0
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def count(self) -> int:
        return len(self.first_status)

    def _seen(self, task: dict[str, Any]) -> None:
        name = task["metadata"]["name"]
        if name not in self.first_status and has_status(task):
            self.first_status[name] = time.time()

    def _relist(self, custom: kubernetes.client.CustomObjectsApi) -> str:
        self.relists += 1
        tasks, version = list_all(
            custom.list_namespaced_custom_object, *TASKS[:2], self.namespace, TASKS[2]
        )
        for task in tasks:
            self._seen(task)
        return version

    def _run(self) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.api)
        try:
            version = self._relist(custom)
            while not self._stop.is_set():
                try:
                    version = self._stream(custom, version)
                except ApiException as exc:
                    if exc.status != 410:
                        raise
                    version = self._relist(custom)  # too old to resume: list again
        except Exception as exc:
            self.error = repr(exc)

    def _stream(self, custom: kubernetes.client.CustomObjectsApi, version: str) -> str:
        watch = kubernetes.watch.Watch()
        # Short server-side timeouts so stop() is noticed within a few seconds.
        for event in watch.stream(
            custom.list_namespaced_custom_object,
            *TASKS[:2],
            self.namespace,
            TASKS[2],
            resource_version=version,
            timeout_seconds=5,
            allow_watch_bookmarks=True,
        ):
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                self.events += 1
                self._seen(obj)
            if self._stop.is_set():
                watch.stop()
        return version


def apiserver_metrics(plane: cp.ControlPlane) -> dict[str, float]:
    """The API server's ``/metrics`` as {series: value}, read with the admin certificate."""
    ctx = ssl.create_default_context(cafile=str(plane.pki.ca_cert))
    ctx.load_cert_chain(str(plane.pki.admin_cert), str(plane.pki.admin_key))
    with urllib.request.urlopen(f"{plane.url}/metrics", context=ctx, timeout=10) as resp:
        return history.parse_metrics(resp.read().decode())


def _labels(series: str) -> dict[str, str]:
    inside = series[series.index("{") + 1 : series.rindex("}")]
    pairs = (part.split("=", 1) for part in inside.split('",') if "=" in part)
    return {k.strip(): v.strip().strip('"') for k, v in pairs}


def writes_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Write requests the API server served between two scrapes, by ``VERB resource``."""
    counts: dict[str, float] = {}
    for series, value in after.items():
        if not series.startswith("apiserver_request_total{"):
            continue
        labels = _labels(series)
        if labels.get("verb") not in WRITE_VERBS:
            continue
        key = f"{labels['verb']} {labels.get('resource', '')}"
        if labels.get("subresource"):
            key += "/" + labels["subresource"]
        counts[key] = counts.get(key, 0.0) + value - before.get(series, 0.0)
    return {k: v for k, v in sorted(counts.items()) if v}
