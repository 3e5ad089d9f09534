"""The REST API's reads and writes of Task objects (:class:`~cadenza.kube.custom.CustomObjects`
of ``tasks``), and the annotation that triggers a manual run."""

from __future__ import annotations

from collections.abc import Mapping

from cadenza.kube.custom import CustomObjects, Page
from cadenza.kube.objects import GROUP, VERSION, ApiClient, call

PLURAL = "tasks"
__all__ = ["PLURAL", "Page", "Tasks"]  # listing: CustomObjects.page


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
