"""The Task and Executor CRDs, served by a real kube-apiserver.

What the schema promises users and the rest of Cadenza: both CRDs install and become Established;
every example applies as written; defaults fill an omitted field the way the operator expects;
printer columns, short names, the `cadenza` category and `kubectl explain` work; a malformed
object is refused at apply time with an error naming the offending field; and a refused update
leaves the stored object untouched.

Everything goes through the real `kubectl`, as a user would type it.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cadenza.devenv.controlplane import ControlPlane
from tests.support import wait_for

pytestmark = pytest.mark.controlplane

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
CRD_NAMES = ("tasks.cadenza.dev", "executors.cadenza.dev")
API_VERSION = "cadenza.dev/v1alpha1"

Manifest = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------------


def apply(
    cp: ControlPlane, namespace: str, manifest: Manifest, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=check)


def get(cp: ControlPlane, namespace: str, resource: str, name: str) -> Manifest:
    out = cp.kubectl("get", resource, name, "-n", namespace, "-o", "json").stdout
    obj: Manifest = json.loads(out)
    return obj


def exists(cp: ControlPlane, namespace: str, resource: str, name: str) -> bool:
    out = cp.kubectl("get", resource, name, "-n", namespace, "--ignore-not-found", "-o", "name")
    return bool(out.stdout.strip())


def task(name: str = "t", **spec: Any) -> Manifest:
    """A minimal valid Task, with ``spec`` fields added or replaced."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"schedule": "*/10 * * * * *", "executors": [{"name": "demo"}], **spec},
    }


def executor(name: str = "e", **spec: Any) -> Manifest:
    """A minimal valid Executor, with ``spec`` fields added or replaced."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Executor",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"cadenza.dev/executor": name}}, **spec},
    }


def without(manifest: Manifest, *path: str) -> Manifest:
    """A copy of ``manifest`` with the field at ``path`` removed."""
    result = copy.deepcopy(manifest)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return result


def contains(stored: Any, written: Any) -> bool:
    """True when ``stored`` holds everything ``written`` set (the server may add defaults)."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(
            key in stored and contains(stored[key], value) for key, value in written.items()
        )
    if isinstance(written, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(written)
            and all(contains(s, w) for s, w in zip(stored, written, strict=True))
        )
    return bool(stored == written)


def load_examples() -> list[tuple[Path, Manifest]]:
    docs: list[tuple[Path, Manifest]] = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def crd_schema(cp: ControlPlane, crd: str) -> Manifest:
    stored = json.loads(cp.kubectl("get", "crd", crd, "-o", "json").stdout)
    schema: Manifest = stored["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk_fields(schema: Manifest, path: str) -> Iterator[tuple[str, Manifest]]:
    """Every named field below ``schema``, as (dotted path, sub-schema)."""
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from walk_fields(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk_fields(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk_fields(schema["additionalProperties"], f"{path}{{}}")


# --- installation --------------------------------------------------------------------------------


def test_crds_apply_and_become_established(controlplane: ControlPlane, crds: None) -> None:
    # Applying again is what an upgrade does: it must be accepted as is.
    controlplane.kubectl("apply", "-f", str(CRD_DIR))
    controlplane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in CRD_NAMES)
    )
    for name in CRD_NAMES:
        crd = json.loads(controlplane.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", crd["status"]
        assert conditions["NamesAccepted"] == "True", crd["status"]
        assert conditions.get("NonStructuralSchema", "False") == "False", crd["status"]
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["categories"] == ["cadenza"]
        [version] = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("crd", CRD_NAMES)
def test_every_field_has_a_description(controlplane: ControlPlane, crds: None, crd: str) -> None:
    missing = [
        path
        for path, sub in walk_fields(crd_schema(controlplane, crd), crd.split(".")[0])
        if not path.endswith(".metadata") and not sub.get("description", "").strip()
    ]
    assert not missing, f"fields without a description: {missing}"


@pytest.mark.parametrize("crd", CRD_NAMES)
def test_only_the_payload_keeps_unknown_fields(
    controlplane: ControlPlane, crds: None, crd: str
) -> None:
    preserving = [
        path
        for path, sub in walk_fields(crd_schema(controlplane, crd), crd.split(".")[0])
        if sub.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserving == (["tasks.spec.payload"] if crd.startswith("tasks") else [])


# --- examples ------------------------------------------------------------------------------------


def test_examples_set_no_namespace() -> None:
    # `kubectl apply -f examples/` must land in the current namespace (`default` on a fresh
    # cluster), so no example may pin one.
    for path, doc in load_examples():
        assert "namespace" not in doc["metadata"], path


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES_DIR.glob("*.yaml")))
def test_each_example_applies(
    controlplane: ControlPlane, crds: None, namespace: str, example: str
) -> None:
    path = EXAMPLES_DIR / example
    out = controlplane.kubectl("apply", "-n", namespace, "-f", str(path)).stdout
    for doc in yaml.safe_load_all(path.read_text()):
        kind, name = doc["kind"].lower(), doc["metadata"]["name"]
        assert f"/{name} created" in out, out
        stored = get(controlplane, namespace, f"{kind}s", name)
        assert contains(stored.get("spec"), doc.get("spec")), stored


def test_the_examples_directory_applies_as_a_whole(
    controlplane: ControlPlane, crds: None, namespace: str
) -> None:
    out = controlplane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR)).stdout
    for path, doc in load_examples():
        kind, name = doc["kind"].lower(), doc["metadata"]["name"]
        assert f"/{name} created" in out, (path, out)
        stored = get(controlplane, namespace, f"{kind}s", name)
        assert contains(stored.get("spec"), doc.get("spec")), (path, stored)

    # Re-applying unchanged examples changes nothing. (kubectl may still say "configured": its
    # client-side merge re-sends a list whose items the server completed with defaults.)
    def versions() -> list[tuple[str, str]]:
        out = controlplane.kubectl("get", "cadenza", "-n", namespace, "-o", "json").stdout
        items = json.loads(out)["items"]
        return sorted((i["metadata"]["name"], i["metadata"]["resourceVersion"]) for i in items)

    before = versions()
    assert len(before) == len(load_examples())
    controlplane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    assert versions() == before


def test_the_original_sample_task_keeps_its_name_in_an_annotation(
    controlplane: ControlPlane, crds: None, namespace: str
) -> None:
    controlplane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR / "test-task.yaml"))
    stored = get(controlplane, namespace, "tasks.cadenza.dev", "test-task")
    original = stored["metadata"]["annotations"]["cadenza.dev/original-name"]
    assert original == "test_task"
    assert stored["metadata"]["name"] == original.lower().replace("_", "-")
    spec = stored["spec"]
    assert (spec["schedule"], spec["executionMode"], spec["loadBalanceStrategy"]) == (
        "*/10 * * * * *",
        "Parallel",
        "RoundRobin",
    )
    assert spec["handler"] == "echo"
    assert [e["name"] for e in spec["executors"]] == ["demo-executor"]


# --- defaults ------------------------------------------------------------------------------------


def test_task_defaults(controlplane: ControlPlane, crds: None, namespace: str) -> None:
    apply(controlplane, namespace, task("defaults"))
    spec = get(controlplane, namespace, "tasks.cadenza.dev", "defaults")["spec"]
    assert spec == {
        "schedule": "*/10 * * * * *",
        "timeZone": "UTC",
        "suspend": False,
        "executionMode": "Parallel",
        "executors": [{"name": "demo", "weight": 1, "priority": 0}],
        "loadBalanceStrategy": "RoundRobin",
        "handler": "default",
        "timeoutSeconds": 300,
        "retry": {
            "maxAttempts": 1,
            "backoffSeconds": 10,
            "maxBackoffSeconds": 300,
            "jitterPercent": 20,
        },
        "misfirePolicy": "FireOnce",
        "maxMisfireRuns": 10,
        "history": {"maxAgeSeconds": 604800, "maxRuns": 1000},
    }


def test_executor_defaults(controlplane: ControlPlane, crds: None, namespace: str) -> None:
    apply(controlplane, namespace, executor("defaults", tokenSecretRef={"name": "tok"}))
    spec = get(controlplane, namespace, "executors.cadenza.dev", "defaults")["spec"]
    assert spec == {
        "selector": {"matchLabels": {"cadenza.dev/executor": "defaults"}},
        "port": 9090,
        "scheme": "http",
        "healthCheck": {
            "path": "/healthz",
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
            "successThreshold": 1,
        },
        "maxConcurrencyPerPod": 4,
        "tokenSecretRef": {"name": "tok", "key": "token"},
    }


@pytest.mark.parametrize(
    "payload",
    [{"a": {"b": [1, 2, None]}}, [1, "two", {"three": 3}], "text", 42, 2.5, True, {}],
    ids=["object", "array", "string", "integer", "float", "boolean", "empty-object"],
)
def test_payload_takes_any_json(
    controlplane: ControlPlane, crds: None, namespace: str, payload: Any
) -> None:
    apply(controlplane, namespace, task("payload", payload=payload))
    stored = get(controlplane, namespace, "tasks.cadenza.dev", "payload")
    assert stored["spec"]["payload"] == payload


@pytest.mark.parametrize(
    "schedule",
    [
        "*/10 * * * * *",
        "0 */5 * * *",
        "30 2 * * 1-5",
        "0 0 12 1 JAN,JUL *",
        "@hourly",
        "@daily",
        "@midnight",
        "@annually",
        "@every 90s",
        "@every 1h30m",
    ],
)
def test_schedule_shapes_accepted(
    controlplane: ControlPlane, crds: None, namespace: str, schedule: str
) -> None:
    apply(controlplane, namespace, task("shape", schedule=schedule))
    assert get(controlplane, namespace, "ctask", "shape")["spec"]["schedule"] == schedule


# --- kubectl ergonomics --------------------------------------------------------------------------


def _header(table: str) -> list[str]:
    return [column.strip() for column in table.splitlines()[0].split("  ") if column.strip()]


def test_task_printer_columns(controlplane: ControlPlane, crds: None, namespace: str) -> None:
    apply(controlplane, namespace, task("cols", executionMode="Skip", loadBalanceStrategy="Sticky"))
    table = controlplane.kubectl("get", "tasks.cadenza.dev", "-n", namespace).stdout
    assert _header(table) == [
        "NAME",
        "SCHEDULE",
        "MODE",
        "STRATEGY",
        "SUSPENDED",
        "LAST RESULT",
        "NEXT RUN",
        "AGE",
    ]
    row = table.splitlines()[1].split()
    assert row[:9] == ["cols", "*/10", "*", "*", "*", "*", "*", "Skip", "Sticky"]
    assert row[9] == "false"

    # The status columns show what the operator writes through the status subresource; the next
    # run is in the future, so it is printed as a timestamp (a `date` column would say <invalid>).
    status = {
        "status": {
            "nextScheduleTime": "2099-01-01T00:00:10Z",
            "lastExecution": {"id": "x1", "phase": "Succeeded", "attempt": 1},
        }
    }
    controlplane.kubectl(
        "patch", "tasks.cadenza.dev", "cols", "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    cells = controlplane.kubectl("get", "ctask", "cols", "-n", namespace).stdout.split("\n")[1]
    assert cells.split()[-3:-1] == ["Succeeded", "2099-01-01T00:00:10Z"]

    wide = controlplane.kubectl("get", "ctask", "-n", namespace, "-o", "wide").stdout
    assert _header(wide)[-4:] == ["TIME ZONE", "HANDLER", "LAST RUN", "FAILURES"]


def test_executor_printer_columns(controlplane: ControlPlane, crds: None, namespace: str) -> None:
    apply(controlplane, namespace, executor("pool", port=9191))
    table = controlplane.kubectl("get", "executors.cadenza.dev", "-n", namespace).stdout
    assert _header(table) == ["NAME", "PORT", "HEALTHY", "TOTAL", "AGE"]
    status = {"status": {"healthyPods": 2, "readyPods": 3, "totalPods": 4}}
    controlplane.kubectl(
        "patch", "cexec", "pool", "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    row = controlplane.kubectl("get", "cexec", "pool", "-n", namespace).stdout.splitlines()[1]
    assert row.split()[:4] == ["pool", "9191", "2", "4"]


def test_short_names_and_category(controlplane: ControlPlane, crds: None, namespace: str) -> None:
    apply(controlplane, namespace, task("short"))
    apply(controlplane, namespace, executor("short"))
    assert get(controlplane, namespace, "ctask", "short")["kind"] == "Task"
    assert get(controlplane, namespace, "cexec", "short")["kind"] == "Executor"
    names = controlplane.kubectl("get", "cadenza", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(names) == ["executor.cadenza.dev/short", "task.cadenza.dev/short"]


def test_field_selectors(controlplane: ControlPlane, crds: None, namespace: str) -> None:
    apply(controlplane, namespace, task("paused", suspend=True))
    apply(controlplane, namespace, task("running"))
    out = controlplane.kubectl(
        "get", "ctask", "-n", namespace, "--field-selector", "spec.suspend=true", "-o", "name"
    ).stdout
    assert out.split() == ["task.cadenza.dev/paused"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("tasks.spec.retry", ["maxAttempts", "including the first", "jitterPercent"]),
        ("tasks.spec.schedule", ["SECONDS", "FIRST", "@every <duration>"]),
        ("tasks.spec.executors", ["lower", "priority", "weight"]),
        ("executors.spec.healthCheck", ["failureThreshold", "successThreshold", "path"]),
    ],
)
def test_kubectl_explain_teaches_the_fields(
    controlplane: ControlPlane, crds: None, field: str, expected: list[str]
) -> None:
    def explained() -> str | None:
        # The OpenAPI document is republished a moment after a CRD changes.
        proc = controlplane.kubectl("explain", field, f"--api-version={API_VERSION}", check=False)
        words = " ".join(proc.stdout.split())
        return words if proc.returncode == 0 and all(e in words for e in expected) else None

    wait_for(explained, 60, f"`kubectl explain {field}` to show {expected}")


# --- refusals ------------------------------------------------------------------------------------

# (manifest, the field path the error must name). Each is one mistake on a valid object.
REFUSED: dict[str, tuple[Manifest, str]] = {
    "task-missing-spec": (without(task(), "spec"), "spec"),
    "task-missing-schedule": (without(task(), "spec", "schedule"), "spec.schedule"),
    "task-empty-schedule": (task(schedule=""), "spec.schedule"),
    "task-schedule-too-long": (task(schedule="* " * 200), "spec.schedule"),
    "task-schedule-prose": (task(schedule="every ten seconds"), "spec.schedule"),
    "task-schedule-seven-fields": (task(schedule="0 0 0 1 1 * 2030"), "spec.schedule"),
    "task-schedule-unknown-macro": (task(schedule="@fortnightly"), "spec.schedule"),
    "task-every-without-duration": (task(schedule="@every"), "spec.schedule"),
    "task-bad-time-zone": (task(timeZone="Europe Berlin"), "spec.timeZone"),
    "task-suspend-not-bool": (task(suspend="yes"), "spec.suspend"),
    "task-wrong-mode": (task(executionMode="Serial"), "spec.executionMode"),
    "task-original-strategy-spelling": (
        task(loadBalanceStrategy="round_robin"),
        "spec.loadBalanceStrategy",
    ),
    "task-max-concurrent-with-sequential": (
        task(executionMode="Sequential", maxConcurrent=2),
        "spec.maxConcurrent",
    ),
    "task-max-concurrent-with-skip": (
        task(executionMode="Skip", maxConcurrent=1),
        "spec.maxConcurrent",
    ),
    "task-max-concurrent-zero": (task(maxConcurrent=0), "spec.maxConcurrent"),
    "task-missing-executors": (without(task(), "spec", "executors"), "spec.executors"),
    "task-no-executors": (task(executors=[]), "spec.executors"),
    "task-too-many-executors": (
        task(executors=[{"name": f"e{i}"} for i in range(33)]),
        "spec.executors",
    ),
    "task-duplicate-executor": (
        task(executors=[{"name": "a"}, {"name": "b"}, {"name": "a", "weight": 2}]),
        "spec.executors[2]",
    ),
    "task-executor-without-name": (task(executors=[{"weight": 1}]), "spec.executors[0].name"),
    "task-bad-executor-name": (
        task(executors=[{"name": "Demo_Executor"}]),
        "spec.executors[0].name",
    ),
    "task-negative-weight": (
        task(executors=[{"name": "a", "weight": -1}]),
        "spec.executors[0].weight",
    ),
    "task-all-weights-zero": (
        task(executors=[{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]),
        "spec.executors",
    ),
    "task-priority-out-of-range": (
        task(executors=[{"name": "a", "priority": 101}]),
        "spec.executors[0].priority",
    ),
    "task-empty-handler": (task(handler=""), "spec.handler"),
    "task-negative-timeout": (task(timeoutSeconds=-5), "spec.timeoutSeconds"),
    "task-timeout-over-a-day": (task(timeoutSeconds=86401), "spec.timeoutSeconds"),
    "task-timeout-as-string": (task(timeoutSeconds="300"), "spec.timeoutSeconds"),
    "task-max-attempts-zero": (task(retry={"maxAttempts": 0}), "spec.retry.maxAttempts"),
    "task-max-backoff-below-backoff": (
        task(retry={"backoffSeconds": 60, "maxBackoffSeconds": 30}),
        "spec.retry.maxBackoffSeconds",
    ),
    # The cap defaults to 300: a longer backoff needs an explicit, larger cap.
    "task-backoff-above-default-cap": (
        task(retry={"backoffSeconds": 600}),
        "spec.retry.maxBackoffSeconds",
    ),
    "task-jitter-over-100": (task(retry={"jitterPercent": 150}), "spec.retry.jitterPercent"),
    "task-unknown-retry-field": (
        task(retry={"attempts": 3}),
        'unknown field "spec.retry.attempts"',
    ),
    "task-unknown-field": (task(retries=3), 'unknown field "spec.retries"'),
    "task-starting-deadline-zero": (
        task(startingDeadlineSeconds=0),
        "spec.startingDeadlineSeconds",
    ),
    # Bounded so that "now" minus the deadline is a date the engine can compute.
    "task-starting-deadline-over-366-days": (
        task(startingDeadlineSeconds=31622401),
        "spec.startingDeadlineSeconds",
    ),
    "task-wrong-misfire-policy": (task(misfirePolicy="Always"), "spec.misfirePolicy"),
    "task-max-misfire-runs-zero": (task(maxMisfireRuns=0), "spec.maxMisfireRuns"),
    "task-history-max-runs-zero": (task(history={"maxRuns": 0}), "spec.history.maxRuns"),
    "task-history-max-age-too-short": (
        task(history={"maxAgeSeconds": 59}),
        "spec.history.maxAgeSeconds",
    ),
    "task-history-max-age-over-3650-days": (
        task(history={"maxAgeSeconds": 315360001}),
        "spec.history.maxAgeSeconds",
    ),
    "executor-missing-selector": (without(executor(), "spec", "selector"), "spec.selector"),
    "executor-empty-selector": (executor(selector={}), "spec.selector"),
    "executor-empty-match-labels": (executor(selector={"matchLabels": {}}), "spec.selector"),
    "executor-bad-label-value": (
        executor(selector={"matchLabels": {"app": "not valid!"}}),
        "spec.selector.matchLabels.app",
    ),
    "executor-bad-label-key": (
        executor(selector={"matchLabels": {"-bad/key!": "x"}}),
        "spec.selector.matchLabels",
    ),
    "executor-in-without-values": (
        executor(selector={"matchExpressions": [{"key": "app", "operator": "In"}]}),
        "spec.selector.matchExpressions[0].values",
    ),
    "executor-exists-with-values": (
        executor(
            selector={"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}
        ),
        "spec.selector.matchExpressions[0].values",
    ),
    "executor-wrong-selector-operator": (
        executor(
            selector={"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}
        ),
        "spec.selector.matchExpressions[0].operator",
    ),
    "executor-port-zero": (executor(port=0), "spec.port"),
    "executor-port-too-high": (executor(port=70000), "spec.port"),
    "executor-wrong-scheme": (executor(scheme="tcp"), "spec.scheme"),
    "executor-health-timeout-over-period": (
        executor(healthCheck={"periodSeconds": 5, "timeoutSeconds": 6}),
        "spec.healthCheck.timeoutSeconds",
    ),
    "executor-health-timeout-over-default-period": (
        executor(healthCheck={"timeoutSeconds": 30}),
        "spec.healthCheck.timeoutSeconds",
    ),
    "executor-relative-health-path": (
        executor(healthCheck={"path": "healthz"}),
        "spec.healthCheck.path",
    ),
    "executor-health-path-with-a-space": (
        executor(healthCheck={"path": "/health z"}),
        "spec.healthCheck.path",
    ),
    "executor-health-path-with-a-header": (
        executor(healthCheck={"path": "/healthz\r\nHost: evil"}),
        "spec.healthCheck.path",
    ),
    "executor-failure-threshold-zero": (
        executor(healthCheck={"failureThreshold": 0}),
        "spec.healthCheck.failureThreshold",
    ),
    "executor-concurrency-zero": (executor(maxConcurrencyPerPod=0), "spec.maxConcurrencyPerPod"),
    "executor-token-ref-without-name": (
        executor(tokenSecretRef={"key": "token"}),
        "spec.tokenSecretRef.name",
    ),
    "executor-unknown-field": (executor(replicas=3), 'unknown field "spec.replicas"'),
}


@pytest.mark.parametrize(("manifest", "field"), REFUSED.values(), ids=REFUSED.keys())
def test_malformed_object_is_refused_naming_the_field(
    controlplane: ControlPlane, crds: None, namespace: str, manifest: Manifest, field: str
) -> None:
    proc = apply(controlplane, namespace, manifest, check=False)
    assert proc.returncode != 0, proc.stdout
    assert field in proc.stderr, proc.stderr
    resource = f"{manifest['kind'].lower()}s.cadenza.dev"
    assert not exists(controlplane, namespace, resource, manifest["metadata"]["name"])


def test_refused_updates_leave_the_stored_task_unchanged(
    controlplane: ControlPlane, crds: None, namespace: str
) -> None:
    apply(controlplane, namespace, task("keep", executionMode="Sequential"))
    status = {"status": {"lastExecution": {"id": "x1", "phase": "Running"}}}
    controlplane.kubectl(
        "patch", "ctask", "keep", "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    before = get(controlplane, namespace, "ctask", "keep")

    merge, status_merge = ("--type=merge",), ("--subresource=status", "--type=merge")
    refused_patches: list[tuple[tuple[str, ...], Manifest | list[Manifest], str]] = [
        (merge, {"spec": {"maxConcurrent": 3}}, "spec.maxConcurrent"),
        (merge, {"spec": {"timeoutSeconds": 0}}, "spec.timeoutSeconds"),
        (merge, {"spec": {"executors": [{"name": "BAD"}]}}, "spec.executors[0].name"),
        (merge, {"spec": {"retry": {"backoffSeconds": 900}}}, "spec.retry.maxBackoffSeconds"),
        (("--type=json",), [{"op": "remove", "path": "/spec/schedule"}], "spec.schedule"),
        (status_merge, {"status": {"lastExecution": {"phase": "Exploded"}}}, "phase"),
    ]
    for flags, patch, field in refused_patches:
        proc = controlplane.kubectl(
            "patch", "ctask", "keep", "-n", namespace, *flags, "-p", json.dumps(patch), check=False
        )
        assert proc.returncode != 0, (patch, proc.stdout)
        assert field in proc.stderr, proc.stderr
    proc = apply(controlplane, namespace, task("keep", retry={"maxAttempts": 0}), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "spec.retry.maxAttempts" in proc.stderr, proc.stderr

    after = get(controlplane, namespace, "ctask", "keep")
    assert after["spec"] == before["spec"]
    assert after["status"] == before["status"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_status_writes_do_not_bump_the_generation(
    controlplane: ControlPlane, crds: None, namespace: str
) -> None:
    apply(controlplane, namespace, task("gen"))
    status = {"status": {"observedGeneration": 1, "queued": 2, "counters": {"succeeded": 5}}}
    controlplane.kubectl(
        "patch", "ctask", "gen", "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    stored = get(controlplane, namespace, "ctask", "gen")
    assert stored["metadata"]["generation"] == 1
    assert stored["status"] == status["status"]
    # Status is ignored on the main resource, so users cannot overwrite the operator's view.
    controlplane.kubectl(
        "patch", "ctask", "gen", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"suspend": True}, "status": {"queued": 99}}),
    )  # fmt: skip
    stored = get(controlplane, namespace, "ctask", "gen")
    assert stored["metadata"]["generation"] == 2
    assert stored["status"]["queued"] == 2
