"""Each Executor's dispatch-token Secret, which the operator makes and owns.

The Secret is named for its Executor (:func:`secret_name`, ``<executor>-dispatch-token``), so a
Deployment can mount it before it exists (``optional: false`` holds the pod until it does). It
holds a random token under ``token`` and carries an ownerReference to its Executor, so the
garbage collector deletes it with the Executor.

Rotation: a new value of the Executor's annotation ``cadenza.dev/rotate-token`` asks for one. The
Secret then gets a new ``token``, keeps the one before under ``previous-token`` and the time
under ``rotated-at`` (RFC 3339 UTC), and records the value it answered (its hash, in the Secret's
annotation ``cadenza.dev/rotated-for``), so each value rotates once, whichever replica or call
sees it first. A value present when the Secret is made is recorded without a rotation: the token
is new anyway.

Invariants:
- :meth:`TokenSecrets.ensure` is the one way the operator (the leader's pool and the REST API's
  registration alike) gets an Executor's dispatch token: it reads the Secret, makes it when it
  is missing, and answers its data only when the Secret is owned by that very Executor (its uid).
  So no Executor can point the operator at somebody else's Secret: a Secret of that name made by
  someone else (or left by an earlier Executor of the same name until it is collected) raises
  :class:`NotOwned` and is never read for a token.
- A new token is ``secrets.token_urlsafe(32)``, made here and nowhere else.
- A rotation is one patch conditional on the ``resourceVersion`` read: of two concurrent
  rotations one wins and the other reads the winner's Secret, so no token is lost between them.
- RBAC: ``get``, ``create`` and ``patch`` (rotations) on ``secrets``; nothing lists, watches,
  updates or deletes them.

WARNING: every method blocks on the network; call it from a thread, never on the event loop.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes

from cadenza.kube.objects import GROUP, VERSION, ApiClient, ApiError, call

TOKEN_KEY = "token"
"""The data key of the token in every dispatch-token Secret."""
PREVIOUS_KEY = "previous-token"
"""The data key of the token before the last rotation."""
ROTATED_AT_KEY = "rotated-at"
"""The data key of the last rotation's time, RFC 3339 UTC."""
ROTATED_FOR = "cadenza.dev/rotated-for"
"""Secret annotation: the hash of the last ``cadenza.dev/rotate-token`` value answered."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "cadenza", "cadenza.dev/dispatch-token": "true"}
"""The labels of every dispatch-token Secret the operator makes."""
_SUFFIX = "-dispatch-token"


def secret_name(executor: str) -> str:
    """``<executor>-dispatch-token``; a hash-named Secret when that would be too long."""
    if len(executor) + len(_SUFFIX) <= 253:
        return executor + _SUFFIX
    return "cadenza" + _SUFFIX + "-" + hashlib.sha256(executor.encode()).hexdigest()[:16]


def rotation_mark(request: str) -> str:
    """What ``cadenza.dev/rotated-for`` holds for a rotation request: short whatever its size."""
    return "sha256:" + hashlib.sha256(request.encode()).hexdigest()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclasses.dataclass(frozen=True)
class _Found:
    metadata: dict[str, Any]
    """``ownerReferences``, ``annotations`` and ``resourceVersion``."""
    data: dict[str, str]
    """Values base64, as stored."""


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

    def ensure(
        self, namespace: str, executor: str, uid: str, rotation: str | None = None
    ) -> dict[str, str]:
        """The ``data`` (values base64) of the Executor's own Secret, made when missing, and
        rotated first when ``rotation`` (the Executor's ``cadenza.dev/rotate-token``) is a value
        the Secret has not answered yet.

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
                return self._create(namespace, name, executor, uid, rotation)
            except ApiError as exc:
                if exc.status != 409:  # made meanwhile (another call, another replica): read it
                    raise
            found = self._read(namespace, name)
        self._check_owner(found.metadata, namespace, executor, uid)
        annotations = found.metadata.get("annotations") or {}
        if rotation is not None and annotations.get(ROTATED_FOR) != rotation_mark(rotation):
            return self._rotate(namespace, name, found, rotation)
        return found.data

    def _check_owner(
        self, metadata: Mapping[str, Any], namespace: str, executor: str, uid: str
    ) -> None:
        name = secret_name(executor)
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

    def _read(self, namespace: str, name: str) -> _Found:
        return _found(call(lambda: self._core.read_namespaced_secret(name, namespace)))

    def _create(
        self, namespace: str, name: str, executor: str, uid: str, rotation: str | None
    ) -> dict[str, str]:
        token = secrets.token_urlsafe(32)
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "ownerReferences": [owner_reference(executor, uid)],
        }
        if rotation is not None:
            metadata["annotations"] = {ROTATED_FOR: rotation_mark(rotation)}
        body: Any = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "stringData": {TOKEN_KEY: token},
        }  # a plain manifest: the client sends a dict as it is
        created = call(lambda: self._core.create_namespaced_secret(namespace, body))
        return _found(created).data

    def _rotate(self, namespace: str, name: str, found: _Found, rotation: str) -> dict[str, str]:
        """A new ``token``, the old one as ``previous-token``; the winner's data on a race."""
        data = {
            TOKEN_KEY: _b64(secrets.token_urlsafe(32)),
            ROTATED_AT_KEY: _b64(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        }
        if TOKEN_KEY in found.data:
            data[PREVIOUS_KEY] = found.data[TOKEN_KEY]
        patch: Any = {
            "metadata": {
                # The API server refuses the patch (409) if the Secret changed since it was read.
                "resourceVersion": found.metadata["resourceVersion"],
                "annotations": {ROTATED_FOR: rotation_mark(rotation)},
            },
            "data": data,
        }
        try:
            patched = call(lambda: self._core.patch_namespaced_secret(name, namespace, patch))
        except ApiError as exc:
            if exc.status != 409:
                raise
            return self._read(namespace, name).data  # rotated (or changed) by somebody else
        return _found(patched).data


def _found(secret: Any) -> _Found:
    meta = secret.metadata or kubernetes.client.V1ObjectMeta()
    owners = [
        {"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid}
        for o in meta.owner_references or []
    ]
    metadata = {
        "ownerReferences": owners,
        "annotations": dict(meta.annotations or {}),
        "resourceVersion": meta.resource_version,
    }
    return _Found(metadata, {str(k): str(v) for k, v in (secret.data or {}).items()})
