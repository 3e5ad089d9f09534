"""Property tests: every value the CRDs accept, and arbitrary annotations and labels, go through
every parsing path without raising anything but the documented field error; and a spec the
parser accepts is one the engine can compute with (fire times, misfires, retry delays, deadlines,
retention ages, pod choice, the mirror's row).

The specs are generated from ``crds/*.yaml`` (``tests/support/crd_values.py``), so the tested
space follows the schema. Example counts come from the ``cadenza`` Hypothesis profile
(``tests/conftest.py``); ``--hypothesis-profile=thorough`` runs many more.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cadenza.core import fields, misfire, modes, retry, schedule, selectors, strategies, taskspec
from cadenza.core.ids import PodName
from cadenza.core.triggers import trigger_key
from cadenza.executors.members import selected
from cadenza.executors.spec import HEALTH_PATH, read_spec
from cadenza.kube.views import ExecutorView, PodView, TaskView, spec_hash
from cadenza.mirror_snapshot import task_row
from cadenza.scheduling.plans import plan_of, retry_policy
from tests.support import crd_values

# Instants the engine computes from: "now" for decades either way, and the Unix epoch's edge.
MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
# Fields whose acceptance the schema leaves to a CEL rule or to the webhook: a schema-valid
# spec may still have problems there, and only there.
LEFT_TO_CEL_OR_WEBHOOK = {
    "spec.schedule",
    "spec.timeZone",
    "spec.executors",
    "spec.maxConcurrent",
    "spec.retry.maxBackoffSeconds",
}


def task_view(spec: Any, **meta: Any) -> TaskView:
    return TaskView.from_body(
        {"metadata": {"uid": "u", "namespace": "ns", "name": "t", **meta}, "spec": spec}
    )


def assert_computable(parsed: taskspec.TaskSpec, now: datetime) -> None:
    """Everything the engine derives from an accepted spec, computed without error."""
    assert parsed.schedule is not None
    tick = now
    for _ in range(3):
        following = parsed.schedule.next_fire(tick)
        assert following > tick and following.tzinfo is UTC and following.microsecond == 0
        tick = following
    window = parsed.starting_deadline_seconds or 3600
    missed = parsed.schedule.fire_times(now - timedelta(seconds=window), now, 50)
    fired = misfire.plan_misfires(
        missed, now, parsed.misfire, parsed.starting_deadline_seconds, parsed.max_misfire_runs
    )
    assert len(fired) <= parsed.max_misfire_runs
    rng = random.Random(0)
    for attempt in range(1, parsed.retry.max_attempts + 1):
        delay = retry.retry_delay(parsed.retry, attempt, rng)
        if attempt == parsed.retry.max_attempts:
            assert delay is None
        else:
            assert delay is not None and 0 <= delay <= parsed.retry.max_backoff_seconds
            assert now + timedelta(seconds=delay) >= now
    assert now + timedelta(seconds=parsed.timeout_seconds) > now
    assert now - timedelta(seconds=parsed.history_max_age_seconds) < now
    modes.decide_tick(parsed.mode, 1, parsed.max_concurrent, queued_runs=1)
    candidates = [
        strategies.Candidate(PodName(f"{e.name}-0"), e.name, e.weight, e.priority, 0)
        for e in parsed.executors
    ]
    for strategy in strategies.Strategy:
        assert strategies.pick(strategy, candidates, {}, "ns/t", rng) is not None


@given(spec=crd_values.task_specs(), now=MOMENTS)
def test_a_spec_within_the_crd_is_read_and_what_parses_computes(
    spec: dict[str, Any], now: datetime
) -> None:
    parsed, problems = taskspec.read_task_spec(spec)
    assert {p.field for p in problems} <= LEFT_TO_CEL_OR_WEBHOOK, crd_values.dumps(spec)
    try:
        strict = taskspec.parse_task_spec(spec)
    except fields.FieldError as error:
        assert problems and error == problems[0]
    else:
        assert not problems and strict == parsed
        assert_computable(strict, now)


@given(spec=crd_values.task_specs())
def test_every_reader_of_a_task_takes_any_spec_within_the_crd(spec: dict[str, Any]) -> None:
    view = task_view(spec)
    plan = plan_of(view)
    assert (plan.schedule is None) == bool(plan.problems)
    row = task_row(view)
    assert row.valid == (not plan.problems)
    # Every column holds what its width allows (sql/0002_resources.sql).
    assert len(row.cron_expression) <= 256 and len(row.time_zone) <= 64
    assert len(row.handler) <= 253 and 1 <= row.timeout_seconds <= 86_400
    assert retry_policy(spec) == plan.retry


JSON = crd_values.json_values()
SPEC_KEYS = st.sampled_from(sorted(crd_values.spec_schema("task")["properties"])) | st.text(
    max_size=8
)


@given(
    spec=st.dictionaries(SPEC_KEYS, JSON, max_size=8)
    | st.fixed_dictionaries({}, optional={"retry": JSON, "history": JSON, "executors": JSON})
    | JSON
)
def test_any_json_in_any_task_field_is_read_or_named(spec: Any) -> None:
    problems = taskspec.read_task_spec(spec)[1]
    assert all(p.field.startswith("spec") and str(p).startswith(p.field) for p in problems)
    plan = plan_of(task_view(spec))
    # A view keeps only an object as its spec (the schema allows nothing else).
    assert plan.problems == (problems if isinstance(spec, dict) else plan.problems)
    assert retry_policy(spec if isinstance(spec, dict) else {}).max_attempts >= 1
    task_row(task_view(spec))


@given(
    expression=crd_values.schedules(),
    zone=crd_values.time_zones(),
    now=MOMENTS,
)
def test_a_schedule_parses_or_is_refused_and_what_parses_computes(
    expression: str, zone: str, now: datetime
) -> None:
    try:
        parsed = schedule.parse_schedule(expression, zone)
    except schedule.ScheduleError as error:
        assert error.field in ("schedule", "timeZone")
        return
    tick = now
    for _ in range(4):
        following = parsed.next_fire(tick)
        assert following > tick and following.microsecond == 0
        tick = following


@given(spec=crd_values.task_specs())
def test_the_webhook_refuses_exactly_what_the_engine_cannot_use(spec: dict[str, Any]) -> None:
    from cadenza.kube import admission

    refused = admission.task_problems({"metadata": {"name": "t"}, "spec": spec})
    problems = taskspec.read_task_spec(spec)[1]
    assert refused == [str(p) for p in problems]
    assert (not refused) == (plan_of(task_view(spec)).schedule is not None)


# -- Executors ----------------------------------------------------------------------------------


@given(spec=crd_values.executor_specs(), labels=st.dictionaries(crd_values.label_keys(), st.text()))
def test_an_executor_spec_within_the_crd_is_read_and_selects_without_raising(
    spec: dict[str, Any], labels: dict[str, str]
) -> None:
    parsed, problems = read_spec(spec)
    check = spec.get("healthCheck") or {}
    # What CEL rules (and the list-map keys) refuse, and only that, may be named: a path of other
    # characters, an empty or missing selector without endpoints, an instance id listed twice.
    selector = spec.get("selector")
    ids = [e["instanceId"] for e in spec.get("endpoints") or []]
    left_to_cel = {
        "spec.healthCheck.path": HEALTH_PATH.fullmatch(check.get("path", "/healthz")) is None,
        "spec.selector": (
            not ids
            if selector is None
            else not selector.get("matchLabels") and not selector.get("matchExpressions")
        ),
        "spec.endpoints": len(ids) != len(set(ids)),
    }
    named = {p.field.split("[")[0] for p in problems}
    assert named <= {field for field, bad in left_to_cel.items() if bad}
    assert parsed.health_check.timeout_seconds <= parsed.health_check.period_seconds
    assert parsed.base_url("10.0.0.1").endswith(f":{parsed.port}")
    if selector is not None:
        selectors.matches(selector, labels)
    members = selected(
        ExecutorView.from_body({"metadata": {"uid": "e", "namespace": "n", "name": "e"},
                                "spec": spec}), [],
    )  # fmt: skip
    if not named:
        assert [m.name for m in members] == ids
    view = ExecutorView.from_body({"metadata": {"uid": "e", "namespace": "n", "name": "e"},
                                   "spec": spec})  # fmt: skip
    assert view.spec_hash


@given(
    spec=st.dictionaries(
        st.sampled_from(
            [
                "port",
                "scheme",
                "healthCheck",
                "tokenSecretRef",
                "maxConcurrencyPerPod",
                "selector",
                "endpoints",
                "heartbeatSeconds",
            ]
        ),
        JSON,
    )
    | JSON
)
def test_any_json_in_any_executor_field_is_read_or_named(spec: Any) -> None:  # fmt: skip
    parsed, problems = read_spec(spec)
    assert all(str(p).startswith(p.field) for p in problems)
    assert 1 <= parsed.port <= 65_535 and parsed.scheme in ("http", "https")


# -- annotations and labels ------------------------------------------------------------------

ANNOTATION_VALUES = (
    st.text()
    | st.text(alphabet="0123456789 ²٣", max_size=20)
    | st.integers(-(10**30), 10**30).map(str)
    | st.sampled_from(["NaN", "inf", "1e400", "0x10", "9" * 5000])
)
ANNOTATION_KEYS = st.sampled_from(
    ["cadenza.dev/weight", "cadenza.dev/trigger", "cadenza.dev/original-name"]
) | st.text(max_size=30)


@given(
    annotations=st.dictionaries(ANNOTATION_KEYS, ANNOTATION_VALUES, max_size=4),
    labels=st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=4),
    phase=st.sampled_from(["Running", "Pending", "Failed"]) | st.text(max_size=10),
    conditions=st.lists(st.fixed_dictionaries({"type": st.text(max_size=8),
                                               "status": st.text(max_size=8)}), max_size=3),
)  # fmt: skip
def test_a_pod_is_indexed_whatever_its_annotations_and_labels(
    annotations: dict[str, str],
    labels: dict[str, str],
    phase: str,
    conditions: list[dict[str, str]],
) -> None:
    pod = PodView.from_body({
        "metadata": {"uid": "p", "namespace": "n", "name": "p", "labels": labels,
                     "annotations": annotations},
        "status": {"phase": phase, "podIP": "10.0.0.1", "conditions": conditions},
    })  # fmt: skip
    assert pod.weight is None or 0 <= pod.weight <= 1000
    assert (pod.weight_error is not None) == (
        "cadenza.dev/weight" in annotations and pod.weight is None
    )
    selectors.matches({"matchLabels": {"app": "w"}}, pod.labels)
    selectors.matches({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, pod.labels)


@given(annotations=st.dictionaries(ANNOTATION_KEYS, ANNOTATION_VALUES, max_size=4))
def test_a_task_is_indexed_and_mirrored_whatever_its_annotations(
    annotations: dict[str, str],
) -> None:
    view = task_view({"schedule": "@hourly", "executors": [{"name": "a"}]},
                     annotations=annotations)  # fmt: skip
    assert view.spec_hash == task_view(view.spec, annotations=annotations).spec_hash
    if view.trigger:
        assert len(trigger_key(view.trigger)) <= 191
    row = task_row(view)
    assert row.original_name is None or len(row.original_name) <= 255
    assert plan_of(view).trigger == view.trigger


def test_the_spec_hash_of_a_view_ignores_the_status() -> None:
    spec = {"schedule": "@hourly", "executors": [{"name": "a"}]}
    assert task_view(spec).spec_hash == spec_hash(spec, {"cadenza.dev/original-name": None})
