"""The REST API's reads and writes of Task objects (:class:`~cadenza.kube.custom.CustomObjects`
of ``tasks``), and the annotation that triggers a manual run."""

from __future__ import annotations

from collections.abc import Mapping

from cadenza.kube.custom import CustomObjects, Page
from cadenza.kube.objects import GROUP, VERSION, ApiClient, call

PLURAL = "tasks"
__all__ = ["PLURAL", "Page", "Tasks"]


class Tasks(CustomObjects):
    def __init__(self, client: ApiClient) -> None:
        super().__init__(client, PLURAL)

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        """Merge-patch annotations onto the object (the manual trigger)."""
        patch = {"metadata": {"annotations": dict(annotations)}}
        call(
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            )
        )

    def list(
        self,
        namespace: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> Page:
        """One page of the namespace's Tasks (``namespace`` "" lists every namespace)."""
        return self.page(
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            continue_token=continue_token,
        )
