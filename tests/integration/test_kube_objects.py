"""The status writes of ``kube/objects.py`` against a real API server: merged into what is
stored, and the server's refusals raised as :class:`ApiError` with its own words."""

from __future__ import annotations

import json

import pytest

from cadenza.devenv.controlplane import ControlPlane
from cadenza.kube.client import api_client
from cadenza.kube.objects import ApiError, Objects
from cadenza.settings import KubeSettings


def apply_task(plane: ControlPlane, namespace: str, name: str) -> None:
    manifest = {
        "apiVersion": "cadenza.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"schedule": "0 * * * *", "executors": [{"name": "e"}], "handler": "h"},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


@pytest.fixture
def objects(controlplane: ControlPlane) -> Objects:
    return Objects(api_client(KubeSettings(kubeconfig=str(controlplane.kubeconfig))))


def test_a_status_patch_is_merged_into_the_stored_status(
    controlplane: ControlPlane, crds: None, namespace: str, objects: Objects
) -> None:
    apply_task(controlplane, namespace, "merged")
    objects.patch_status("tasks", namespace, "merged", {"observedGeneration": 1})
    objects.patch_status("tasks", namespace, "merged", {"nextScheduleTime": "2026-12-06T08:00:00Z"})
    assert objects.status_of("tasks", namespace, "merged") == {
        "observedGeneration": 1,
        "nextScheduleTime": "2026-12-06T08:00:00Z",
    }


def test_a_status_patch_of_a_task_gone_is_a_404_naming_it(
    controlplane: ControlPlane, crds: None, namespace: str, objects: Objects
) -> None:
    with pytest.raises(ApiError) as refused:
        objects.patch_status("tasks", namespace, "never-applied", {"observedGeneration": 1})
    assert refused.value.status == 404
    assert "never-applied" in refused.value.message


def test_a_status_the_schema_refuses_is_a_422_naming_the_field_and_nothing_is_stored(
    controlplane: ControlPlane, crds: None, namespace: str, objects: Objects
) -> None:
    apply_task(controlplane, namespace, "kept")
    objects.patch_status("tasks", namespace, "kept", {"observedGeneration": 1})
    with pytest.raises(ApiError) as refused:
        objects.patch_status("tasks", namespace, "kept", {"observedGeneration": "one"})
    assert refused.value.status == 422
    assert "observedGeneration" in refused.value.message
    assert objects.status_of("tasks", namespace, "kept") == {"observedGeneration": 1}
