"""A Task's view is built anew only when what it reads from the spec or the annotations may have
changed: every status write comes back as an event, and such an event keeps the spec already
read, with the stored status it brings."""

from __future__ import annotations

import copy
from typing import Any

from cadenza.kube.views import ORIGINAL_NAME, TRIGGER, StatusSeed, TaskView

BODY: dict[str, Any] = {
    "metadata": {"uid": "u1", "namespace": "ns", "name": "t", "generation": 3},
    "spec": {"schedule": "* * * * * *", "executors": [{"name": "pool"}]},
    "status": {"observedGeneration": 2, "consecutiveFailures": 1},
}


def body(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BODY)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def test_a_status_only_change_keeps_the_spec_read_and_takes_the_new_status() -> None:
    before = TaskView.from_body(BODY)
    parsed = before.task_spec
    after = TaskView.from_body(body(status={"observedGeneration": 3}), before)
    assert after.status_seed == StatusSeed(observed_generation=3)
    assert after.spec_json is before.spec_json and after.spec_hash == before.spec_hash
    assert after.task_spec is parsed  # not read again
    assert before.status_seed.failures == 1  # the earlier view is not changed


def test_the_same_status_again_is_the_same_view() -> None:
    before = TaskView.from_body(BODY)
    assert TaskView.from_body(copy.deepcopy(BODY), before) is before


def test_an_unread_spec_stays_unread_until_asked() -> None:
    before = TaskView.from_body(BODY)
    after = TaskView.from_body(body(status={}), before)
    assert "task_spec" not in after.__dict__
    assert after.task_spec == before.task_spec


def test_a_new_generation_reads_the_spec_again() -> None:
    before = TaskView.from_body(BODY)
    edited = body(metadata__generation=4, spec__schedule="0 * * * * *")
    after = TaskView.from_body(edited, before)
    assert after.generation == 4 and after.spec["schedule"] == "0 * * * * *"
    assert after.spec_hash != before.spec_hash


def test_a_changed_annotation_is_read() -> None:
    before = TaskView.from_body(BODY)
    triggered = TaskView.from_body(body(metadata__annotations={TRIGGER: "now-1"}), before)
    assert triggered.trigger == "now-1"
    renamed = TaskView.from_body(body(metadata__annotations={ORIGINAL_NAME: "Old_Name"}), before)
    assert renamed.original_name == "Old_Name" and renamed.spec_hash != before.spec_hash


def test_a_task_recreated_under_the_same_name_is_read_anew() -> None:
    before = TaskView.from_body(BODY)
    recreated = body(metadata__uid="u2", spec__schedule="0 0 * * * *")
    after = TaskView.from_body(recreated, before)
    assert after.uid == "u2" and after.spec["schedule"] == "0 0 * * * *"
