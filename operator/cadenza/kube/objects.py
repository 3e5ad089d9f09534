"""Reads and writes of the objects the operator does not only watch: the status subresource of
Tasks and Executors, and the Secrets holding dispatch tokens.

With ``client.py`` (the connection), ``events.py`` (Events), ``tasks.py`` and ``reviews.py``
(the REST API's Task writes and its TokenReview/SubjectAccessReview), this is the only place that
speaks the Kubernetes client's language; the rest of the operator sees plain dicts and
:class:`ApiError` (raised by :func:`call`). An import-linter contract keeps it so.

WARNING: every method blocks on the network; call it from a thread, never on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import kubernetes

GROUP, VERSION = "cadenza.dev", "v1alpha1"

ApiClient = kubernetes.client.ApiClient
"""The connection to the API server (see :func:`cadenza.kube.client.api_client`)."""

T = TypeVar("T")

_STATUS_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/" + "{{namespace}}/{plural}/{{name}}/status"
"""The status subresource's path by plural; the client fills in (and quotes) namespace and
name."""
_MERGE_PATCH = {"Accept": "application/json", "Content-Type": "application/merge-patch+json"}


class ApiError(Exception):
    """The API server refused or failed a request; ``status`` is its HTTP status, ``message``
    the server's own explanation (its Status object's ``message``; else the reason)."""

    def __init__(self, status: int | None, reason: str, message: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message or reason


def call(request: Callable[[], T]) -> T:
    """``request()``, with the client's ApiException turned into :class:`ApiError`."""
    try:
        return request()
    except kubernetes.client.ApiException as exc:
        raise ApiError(exc.status, str(exc.reason), _message(exc.body)) from None


def _message(body: object) -> str:
    """The ``message`` of the Status object the API server answered with, if it sent one."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) else ""


class Objects:
    def __init__(self, client: ApiClient) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._core = kubernetes.client.CoreV1Api(client)

    def status_of(self, plural: str, namespace: str, name: str) -> Mapping[str, Any]:
        """The object's ``status`` as stored ({} when it has none yet)."""
        found = call(
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        )
        return cast(Mapping[str, Any], cast(dict[str, Any], found).get("status") or {})

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patch the object's status subresource.

        Sent through the client's own request building (authentication, path quoting) and
        transport, but without the generated method's per-call argument validation and the
        decoding of the object it answers with: the leader writes thousands of statuses and
        reads nothing back, and those two were a fifth of each write's CPU."""
        client = self._custom.api_client
        request = client.param_serialize(
            method="PATCH",
            resource_path=_STATUS_PATH.format(plural=plural),
            path_params={"namespace": namespace, "name": name},
            header_params=dict(_MERGE_PATCH),
            body={"status": dict(status)},
            auth_settings=["BearerToken"],
        )
        response = call(lambda: client.call_api(*request))
        body = response.read()
        if not 200 <= response.status <= 299:
            raise ApiError(response.status, str(response.reason), _message(body))

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's ``data`` (values still base64-encoded)."""
        secret = call(lambda: self._core.read_namespaced_secret(name, namespace))
        return {str(k): str(v) for k, v in (secret.data or {}).items()}
