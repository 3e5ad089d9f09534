"""Observability that ships with the chart: the Grafana dashboard and the PrometheusRule.

What they promise: both are off by default and render when enabled; the rules pass promtool's
own checker and its unit tests (``alert_rules_test.yaml``: series in, each alert fires or stays
quiet) with the thresholds taken from the values; every metric the dashboard and the rules read
is one the operator serves, and on a real operator each of them exists and moves while Tasks
fire, fail, retry, queue, lose a pod and change leader.

promtool is built from the Go module proxy by ``hack/promtool/build.sh`` (cached outside the
checkout; ``scripts/setup`` builds it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cadenza.devenv.controlplane import ControlPlane
from cadenza.metrics import Metrics
from tests.integration import test_chart
from tests.support import observability, wait_for
from tests.support.operators import OperatorProcess, Replicas
from tests.support.scenario import Scenario, executor, scenario, task

REPO_ROOT = Path(__file__).resolve().parents[2]
RULE_TESTS = Path(__file__).with_name("alert_rules_test.yaml")
Helm = test_chart.Helm
helm = test_chart.helm  # the chart tests' fixture: the built helm with homes of its own


@pytest.fixture(scope="module")
def promtool() -> Path:
    out = subprocess.run(
        [str(REPO_ROOT / "hack" / "promtool" / "build.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return Path(out.stdout.strip().splitlines()[-1]) / "promtool"


def render(helm: Helm, values: dict[str, Any], tmp_path: Path) -> test_chart.Rendered:
    """The chart rendered with ``values`` (a values file: selectors hold quotes and commas)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    args = ["template", test_chart.RELEASE, str(test_chart.CHART), "-n", "ops", "-f", str(path)]
    proc = helm(*args, "--kube-version", helm.kube_version)
    return test_chart.Rendered([d for d in yaml.safe_load_all(proc.stdout) if d])


def rules_enabled(**rule_values: Any) -> dict[str, Any]:
    return {"prometheusRule": {"enabled": True, "selector": 'job="cadenza"', **rule_values}}


def promtool_run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def write_rules(rule: dict[str, Any], directory: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file (what the operator of
    prometheus-operator hands Prometheus)."""
    directory.mkdir(exist_ok=True)
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(RULE_TESTS, directory / RULE_TESTS.name)
    return path


# --- rendering ---------------------------------------------------------------------------------


def test_dashboard_and_rules_are_off_by_default(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, {}, tmp_path)
    assert docs.of_kind("PrometheusRule") == []
    assert [
        d for d in docs.of_kind("ConfigMap") if d["metadata"]["name"].endswith("dashboard")
    ] == []


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(
    helm: Helm, tmp_path: Path
) -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "annotations": {"grafana_folder": "Cadenza"},
        }
    }
    config = render(helm, values, tmp_path).one("ConfigMap", "cadenza-dashboard")
    assert config["metadata"]["namespace"] == "monitoring"
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Cadenza"}
    dashboard = json.loads(config["data"]["cadenza.json"])
    assert dashboard == json.loads(observability.DASHBOARD.read_text())
    assert dashboard["uid"] == "cadenza-overview"


def test_rules_pass_promtool_check_and_every_alert_unit_test(
    helm: Helm, promtool: Path, tmp_path: Path
) -> None:
    rule = render(helm, rules_enabled(), tmp_path).one("PrometheusRule")
    assert set(observability.rule_exprs(rule)) == {
        "CadenzaNoLeader",
        "CadenzaFireDelayHigh",
        "CadenzaTaskFailing",
        "CadenzaExecutorNoHealthyPods",
        "CadenzaLeaderFlapping",
    }
    rules = write_rules(rule, tmp_path / "rules")
    checked = promtool_run(promtool, "check", "rules", rules.name, cwd=rules.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=rules.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_unit_tests_catch_rules_that_ignore_the_selector(
    helm: Helm, promtool: Path, tmp_path: Path
) -> None:
    """The unit tests have teeth: rendered without the selector, another installation's series
    (job="other") raise alerts the tests say must stay quiet."""
    rule = render(helm, rules_enabled(selector=""), tmp_path).one("PrometheusRule")
    rules = write_rules(rule, tmp_path / "rules")
    tested = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=rules.parent)
    assert tested.returncode != 0
    assert 'task="ns/theirs"' in tested.stdout + tested.stderr


def test_alert_thresholds_come_from_the_values(helm: Helm, promtool: Path, tmp_path: Path) -> None:
    values = rules_enabled(
        labels={"release": "kube-prometheus-stack"},
        alertLabels={"team": "scheduling"},
        noLeader={"for": "30s", "severity": "page"},
        fireDelay={"quantile": 0.9, "thresholdSeconds": 2.5, "for": "1m"},
        taskFailing={"consecutiveFailures": 7, "for": "5m"},
        executorUnhealthy={"for": "90s"},
        leaderFlapping={"changes": 4, "window": "1h"},
    )
    rule = render(helm, values, tmp_path).one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert all(a["labels"]["team"] == "scheduling" for a in alerts.values())
    assert (alerts["CadenzaNoLeader"]["for"], alerts["CadenzaNoLeader"]["labels"]["severity"]) == (
        "30s",
        "page",
    )
    delay = alerts["CadenzaFireDelayHigh"]
    assert delay["expr"].startswith("histogram_quantile(0.9,") and delay["expr"].endswith("> 2.5")
    assert alerts["CadenzaTaskFailing"]["expr"].endswith(">= 7")
    assert alerts["CadenzaTaskFailing"]["for"] == "5m"
    assert alerts["CadenzaExecutorNoHealthyPods"]["for"] == "90s"
    flapping = alerts["CadenzaLeaderFlapping"]["expr"]
    assert "[1h]" in flapping and flapping.endswith("> 4")
    for expr in observability.rule_exprs(rule).values():
        assert 'job="cadenza"' in expr
    rules = write_rules(rule, tmp_path / "rules")
    checked = promtool_run(promtool, "check", "rules", rules.name, cwd=rules.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"prometheusRule": {"noLeader": {"for": "2 minutes"}}}, "for"),
        ({"prometheusRule": {"fireDelay": {"quantile": 1.5}}}, "quantile"),
        ({"grafanaDashboard": {"enable": True}}, "enable"),
    ],
    ids=["duration", "quantile", "typo"],
)
def test_schema_refuses_a_bad_observability_value(
    helm: Helm, tmp_path: Path, values: dict[str, Any], named: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    args = ["template", test_chart.RELEASE, str(test_chart.CHART), "-f", str(path)]
    proc = helm(*args, "--kube-version", helm.kube_version, check=False)
    assert proc.returncode != 0
    assert named in proc.stderr


# --- the metrics they read ---------------------------------------------------------------------


def test_every_dashboard_query_reads_only_metrics_the_operator_serves() -> None:
    served = observability.served_names(Metrics().registry)
    exprs = observability.dashboard_exprs()
    assert len(exprs) >= 20
    used = observability.metric_names(exprs)
    assert used - served.keys() == set(), "the dashboard reads metrics nobody serves"
    # What the issue asks the dashboard to show, by the metric that shows it.
    wanted = {
        "cadenza_fire_delay_seconds_bucket",  # fire delay percentiles
        "cadenza_runs_finished_total",  # runs by outcome
        "cadenza_retries_total",
        "cadenza_misfires_total",
        "cadenza_runs_queued",  # queue depth
        "cadenza_executor_pods_healthy",  # executor health
        "cadenza_leader",
        "cadenza_leader_epoch",
        "cadenza_task_status_writes_total",  # status-write rate
    }
    assert wanted <= used


def test_every_rule_reads_only_metrics_the_operator_serves(helm: Helm, tmp_path: Path) -> None:
    served = observability.served_names(Metrics().registry)
    rule = render(helm, rules_enabled(), tmp_path).one("PrometheusRule")
    for alert, expr in observability.rule_exprs(rule).items():
        used = observability.metric_names([expr])
        assert used, alert
        assert used <= served.keys(), (alert, used - served.keys())


class Scrapes:
    """Every live replica's /metrics, read every ``period`` seconds in a thread: per series
    name, the values (summed over label sets) each replica showed over time."""

    def __init__(self, replicas: Replicas, period: float = 0.25) -> None:
        self._replicas = replicas
        self._period = period
        self.seen: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scrapes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            for member in list(self._replicas.members):
                if member.alive():
                    self._scrape(member)

    def _scrape(self, member: OperatorProcess) -> None:
        try:
            with urllib.request.urlopen(f"{member.url}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return  # starting or stopping
        sums: dict[str, float] = defaultdict(float)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("cadenza_") and not sample.name.endswith("_created"):
                    sums[sample.name] += sample.value
        for name, value in sums.items():
            self.seen[name][member.instance_id].append(value)

    def last(self, name: str, replica: str) -> float:
        values = self.seen.get(name, {}).get(replica, [])
        return values[-1] if values else 0.0


def moved(scrapes: Scrapes, name: str, kind: str) -> bool:
    """A counter (or histogram) moved once some replica counted above 0 (each starts at 0); a
    gauge once it showed two values, on one replica over time or on two replicas."""
    per_replica = scrapes.seen.get(name, {})
    if kind in ("counter", "histogram"):
        return any(values[-1] > 0 for values in per_replica.values())
    return len({v for values in per_replica.values() for v in values}) >= 2


def kinds() -> dict[str, str]:
    """Series name -> the type of the metric serving it."""
    registry = Metrics().registry
    types = {f.name: f.type for f in registry.collect()}
    return {name: types[family] for name, family in observability.served_names(registry).items()}


@pytest.fixture
def used_metrics(helm: Helm, tmp_path: Path) -> set[str]:
    rule = render(helm, rules_enabled(), tmp_path).one("PrometheusRule")
    exprs = [*observability.dashboard_exprs(), *observability.rule_exprs(rule).values()]
    return observability.metric_names(exprs)


@pytest.fixture
def scene(
    controlplane: ControlPlane, database: str, namespace: str, tmp_path: Path, crds: None
) -> Iterator[Scenario]:
    workdir = tmp_path / "scene"  # apart from the values files the renders write
    workdir.mkdir()
    with scenario(controlplane, database, namespace, workdir, replicas=2) as s:
        yield s


EVERY_SECOND = "* * * * * *"


def test_every_metric_the_dashboard_and_rules_read_exists_and_moves_while_tasks_fire(
    scene: Scenario, used_metrics: set[str]
) -> None:
    types = kinds()
    assert used_metrics <= types.keys()
    with Scrapes(scene.replicas) as scrapes:
        old = scene.leader()
        scene.add_pods("pool", 2)
        retry = {"maxAttempts": 2, "backoffSeconds": 1, "jitterPercent": 0}
        scene.apply(
            executor("pool"),
            task("steady", EVERY_SECOND, startingDeadlineSeconds=30),
            task("doomed", "*/2 * * * * *", handler="fail", retry=retry),
            # Three-second runs every second, one at a time: a queue builds behind them.
            task("slow", EVERY_SECOND, handler="sleep", payload={"seconds": 3},
                 executionMode="Sequential"),
        )  # fmt: skip

        wanted = {
            "cadenza_task_consecutive_failures": 2,
            "cadenza_runs_queued": 1,
            "cadenza_retries_total": 1,
            "cadenza_executor_pods_healthy": 2,
        }

        def shown() -> dict[str, float]:
            return {name: scrapes.last(name, old.instance_id) for name in wanted}

        try:
            wait_for(lambda: all(shown()[n] >= v for n, v in wanted.items()), 60, "the runs")
        except AssertionError:
            raise AssertionError(f"wanted at least {wanted}, the leader shows {shown()}") from None
        # A pod that dies is no longer healthy (probed every second, two failures to tell).
        next(iter(scene.pods.values())).stop_processes()
        wait_for(
            lambda: scrapes.last("cadenza_executor_pods_healthy", old.instance_id) == 1,
            30,
            "the dead pod counted unhealthy",
        )
        # Nobody leads for a while: the Tasks' missed ticks are misfires of the next leader.
        scene.replicas.stop_all()
        time.sleep(3)
        new = scene.replicas.add()
        wait_for(lambda: scene.replicas.leaders() == [new], 60, "the new replica to lead")
        wait_for(
            lambda: (
                scrapes.last("cadenza_misfires_total", new.instance_id) > 0
                and scrapes.last("cadenza_leader_epoch", new.instance_id)
                > scrapes.last("cadenza_leader_epoch", old.instance_id)
            ),
            30,
            "misfires counted by a leader with a newer epoch",
        )
        deadline = time.monotonic() + 30
        while (still := [n for n in used_metrics if not moved(scrapes, n, types[n])]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
    assert scrapes.last("cadenza_leader", new.instance_id) == 1
    assert sorted(still) == [], {n: dict(scrapes.seen.get(n, {})) for n in still}
