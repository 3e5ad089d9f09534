"""Each Executor's dispatch-token Secret, which the operator makes and owns.

The Secret is named for its Executor (:func:`secret_name`, ``<executor>-dispatch-token``), so a
Deployment can mount it before it exists (``optional: false`` holds the pod until it does). It
holds a random token under ``token`` and carries an ownerReference to its Executor, so the
garbage collector deletes it with the Executor.

Invariants:
- :meth:`TokenSecrets.ensure` is the one way the operator (the leader's pool and the REST API's
  registration alike) gets an Executor's dispatch token: it reads the Secret, makes it when it
  is missing, and answers its data only when the Secret is owned by that very Executor (its uid).
  So no Executor can point the operator at somebody else's Secret: a Secret of that name made by
  someone else (or left by an earlier Executor of the same name until it is collected) raises
  :class:`NotOwned` and is never read for a token.
- A new token is ``secrets.token_urlsafe(32)``, made here and nowhere else.
- RBAC: ``get`` and ``create`` on ``secrets``; nothing lists, watches, updates or deletes them.

WARNING: every method blocks on the network; call it from a thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import kubernetes

from cadenza.kube.objects import GROUP, VERSION, ApiClient, ApiError, call

TOKEN_KEY = "token"
"""The data key of the token in every dispatch-token Secret."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "cadenza", "cadenza.dev/dispatch-token": "true"}
"""The labels of every dispatch-token Secret the operator makes."""
_SUFFIX = "-dispatch-token"


def secret_name(executor: str) -> str:
    """``<executor>-dispatch-token``; a hash-named Secret when that would be too long."""
    if len(executor) + len(_SUFFIX) <= 253:
        return executor + _SUFFIX
    return "cadenza" + _SUFFIX + "-" + hashlib.sha256(executor.encode()).hexdigest()[:16]


class NotOwned(Exception):
    """The Secret exists but is not the Executor's own; the message says whose and the fix."""


def owner_reference(executor: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Executor",
        "name": executor,
        "uid": uid,
        "controller": True,
    }


def owned_by(metadata: Mapping[str, Any], uid: str) -> bool:
    """Whether an object's metadata names the Executor ``uid`` among its owners."""
    owners = metadata.get("ownerReferences") or []
    return any(
        isinstance(o, Mapping) and o.get("uid") == uid and o.get("kind") == "Executor"
        and str(o.get("apiVersion", "")).startswith(GROUP + "/")
        for o in owners
    )  # fmt: skip


class TokenSecrets:
    def __init__(self, client: ApiClient) -> None:
        self._core = kubernetes.client.CoreV1Api(client)

    def ensure(self, namespace: str, executor: str, uid: str) -> dict[str, str]:
        """The ``data`` (values base64) of the Executor's own Secret, made when missing.

        Raises :class:`NotOwned` for a Secret of that name the Executor does not own, and
        :class:`~cadenza.kube.objects.ApiError` when the API server refuses or fails.
        """
        name = secret_name(executor)
        try:
            found = self._read(namespace, name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            try:
                return self._create(namespace, name, executor, uid)
            except ApiError as exc:
                if exc.status != 409:  # made meanwhile (another call, another replica): read it
                    raise
            found = self._read(namespace, name)
        metadata, data = found
        if not owned_by(metadata, uid):
            owners = ", ".join(
                f"{o.get('kind')} {o.get('name')} (uid {o.get('uid')})"
                for o in metadata.get("ownerReferences") or []
                if isinstance(o, Mapping)
            )
            raise NotOwned(
                f"Secret {namespace}/{name} is not owned by Executor {executor} (uid {uid}; "
                f"owners: {owners or 'none'}), so its token is not used: delete the Secret and "
                "the operator makes the Executor's own"
            )
        return data

    def _read(self, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        secret = call(lambda: self._core.read_namespaced_secret(name, namespace))
        meta = secret.metadata or kubernetes.client.V1ObjectMeta()
        owners = [
            {"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid}
            for o in meta.owner_references or []
        ]
        data = {str(k): str(v) for k, v in (secret.data or {}).items()}
        return {"ownerReferences": owners}, data

    def _create(self, namespace: str, name: str, executor: str, uid: str) -> dict[str, str]:
        token = secrets.token_urlsafe(32)
        body: Any = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [owner_reference(executor, uid)],
            },
            "type": "Opaque",
            "stringData": {TOKEN_KEY: token},
        }  # a plain manifest: the client sends a dict as it is
        created = call(lambda: self._core.create_namespaced_secret(namespace, body))
        return {str(k): str(v) for k, v in (created.data or {}).items()}
