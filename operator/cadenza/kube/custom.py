"""Reads and writes of one kind of Cadenza's custom objects (``tasks`` or ``executors``), made
with the operator's own identity for the REST API.

Invariant: the API calls these only after SubjectAccessReview allowed the caller the same verb
on the same object (``cadenza.api.auth``); the objects stay the source of truth, nothing here is
cached. Objects go in and come out as plain dicts; failures as
:class:`~cadenza.kube.objects.ApiError` carrying the API server's status and message.

WARNING: every method blocks on the network; call it from a thread, never on the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

import kubernetes

from cadenza.kube.objects import GROUP, VERSION, ApiClient, call


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing; ``continue_token`` is None on the last page."""

    items: list[dict[str, Any]]
    continue_token: str | None


class CustomObjects:
    """The objects of one plural of ``cadenza.dev``."""

    def __init__(self, client: ApiClient, plural: str) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._plural = plural

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._object(
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, self._plural, name
            )
        )

    def create(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._object(
            lambda: self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, self._plural, dict(body)
            )
        )

    def replace(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the object; ``body`` carries the ``resourceVersion`` it was read at, so a
        concurrent change answers 409 instead of being overwritten."""
        return self._object(
            lambda: self._custom.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, self._plural, name, dict(body)
            )
        )

    def delete(self, namespace: str, name: str) -> None:
        call(
            lambda: self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, self._plural, name
            )
        )

    def page(
        self,
        namespace: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> Page:
        """One page of the namespace's objects (``namespace`` "" lists every namespace)."""
        options: dict[str, Any] = {}
        if label_selector:
            options["label_selector"] = label_selector
        if field_selector:
            options["field_selector"] = field_selector
        if limit:
            options["limit"] = limit
        if continue_token:
            options["_continue"] = continue_token
        if namespace:
            found = call(
                lambda: self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, self._plural, **options
                )
            )
        else:
            found = call(
                lambda: self._custom.list_cluster_custom_object(
                    GROUP, VERSION, self._plural, **options
                )
            )
        listed = cast(dict[str, Any], found)
        token = (listed.get("metadata") or {}).get("continue") or None
        return Page(list(listed.get("items") or []), token)

    def _object(self, request: Any) -> dict[str, Any]:
        return cast(dict[str, Any], call(request))
