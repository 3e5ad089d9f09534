"""Finding the API and the token from a kubeconfig context, the ``kubectl cadenza`` plugin through
the real kubectl binary, executors and replicas, and the failures a script must tell apart: no API
configured, an API that is not there, a flag that is wrong."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from cadenza.devenv.controlplane import free_port
from tests.api.conftest import Api
from tests.cli.conftest import BIN, Run, base_env, one_line, run, table

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

REGISTER = {
    "name": "sample-executor",
    "instance_id": "cli-executor-001",
    "base_url": "http://127.0.0.1:9",
    "health_check_url": "http://127.0.0.1:9/health",
    "tasks": [{"task_name": "served_task", "cron_expression": "*/10 * * * * *"}],
}


def kubeconfig(api: Api, path: Path, *, token_in: str = "user") -> Path:
    """A kubeconfig whose current context names the module's API in ``cadenza.dev/api`` and
    carries the admin token (in the user, or in a file the extension names)."""
    extension: dict[str, str] = {"server": api.url}
    user: dict[str, str] = {"token": api.token}
    if token_in == "file":
        (path.parent / "cadenza-token").write_text(api.token + "\n")
        extension["tokenFile"] = "cadenza-token"
        user = {"client-certificate": "/nonexistent/admin.crt"}
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "work",
        "clusters": [{"name": "c", "cluster": {"server": api.plane.url}}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "work", "context": {
            "cluster": "c", "user": "me", "namespace": api.namespace,
            "extensions": [{"name": "cadenza.dev/api", "extension": extension}],
        }}],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_api_and_token_come_from_the_kubeconfig_context(
    cli: Run, api: Api, tmp_path: Path
) -> None:
    config = kubeconfig(api, tmp_path / "config")
    only_kubeconfig = {"CADENZA_API": None, "CADENZA_TOKEN": None, "KUBECONFIG": str(config)}
    made = cli("tasks", "create", "kube_task", "--schedule", "0 * * * *", env=only_kubeconfig)
    assert made.code == 0, made
    assert f"in namespace {api.namespace}" in made.out  # the context's namespace
    listing = cli("tasks", "list", env=only_kubeconfig)
    assert "kube-task" in [row["NAME"] for row in table(listing.out)]

    flagged = cli("tasks", "get", "kube_task", "--kubeconfig", str(config), "-o", "json",
                  env={"CADENZA_API": None, "CADENZA_TOKEN": None})  # fmt: skip
    assert json.loads(flagged.out)["namespace"] == api.namespace

    # A context user with only a client certificate: the token from the extension's tokenFile.
    with_file = kubeconfig(api, tmp_path / "with-file", token_in="file")
    from_file = cli("tasks", "get", "kube_task", "--kubeconfig", str(with_file),
                    env={"CADENZA_API": None, "CADENZA_TOKEN": None})  # fmt: skip
    assert from_file.code == 0, from_file

    # The environment wins over the kubeconfig: a wrong API there is not used.
    env_wins = cli("tasks", "get", "kube_task", env={"KUBECONFIG": str(config)})
    assert env_wins.code == 0, env_wins


def test_the_kubectl_plugin(api: Api, tmp_path: Path) -> None:
    env = base_env(api, tmp_path)
    kubectl = str(api.plane.bin_dir / "kubectl")
    replicas = run([kubectl, "cadenza", "replicas"], env)
    assert replicas.code == 0, replicas
    assert replicas.out.startswith("Leader: ") and "epoch" in replicas.out.splitlines()[0]
    leaders = [row for row in table(replicas.out.split("\n", 1)[1]) if row["ROLE"] == "leader"]
    assert len(leaders) == 1

    config = kubeconfig(api, tmp_path / "config")
    plugin_env = {**env, "KUBECONFIG": str(config)}
    del plugin_env["CADENZA_API"], plugin_env["CADENZA_TOKEN"]
    created = run(
        [kubectl, "cadenza", "-n", api.namespace, "tasks", "create", "plugin_task",
         "--schedule", "0 * * * *", "-o", "yaml"], plugin_env,
    )  # fmt: skip
    assert created.code == 0, created
    assert yaml.safe_load(created.out)["name"] == "plugin-task"
    listed = run([kubectl, "cadenza", "tasks", "list", "-o", "json"], plugin_env)
    assert "plugin-task" in [t["name"] for t in json.loads(listed.out)["items"]]
    missing = run([kubectl, "cadenza", "tasks", "get", "nope"], plugin_env)
    assert missing.code == 4
    assert one_line(missing).startswith("kubectl cadenza: error: ")

    direct = run([str(BIN / "kubectl-cadenza"), "replicas", "-o", "json"], env)
    answer = json.loads(direct.out)
    assert answer["leader"]["instance_id"] == leaders[0]["INSTANCE"]
    assert run([str(BIN / "kubectl-cadenza"), "operator"], env).code == 2  # not a plugin command


def test_executors_register_list_and_get(cli: Run, api: Api) -> None:
    registered = cli("executors", "register", "-f", "-", input=json.dumps(REGISTER))
    assert registered.code == 0, registered
    token = registered.out.strip()
    secret = json.loads(
        api.kubectl("get", "secret", "sample-executor-dispatch-token", "-n", api.namespace,
                    "-o", "json")
    )  # fmt: skip
    (stored,) = secret["data"].values()
    assert base64.b64decode(stored).decode() == token
    assert "executor.cadenza.dev/sample-executor created" in registered.err

    listing = cli("executors", "list")
    assert listing.code == 0, listing
    (row,) = [r for r in table(listing.out) if r["NAME"] == "sample-executor"]
    assert row["ENDPOINTS"].endswith("/1 healthy")
    detail = cli("executors", "get", "sample_executor")
    assert (
        detail.code == 0 and "cli-executor-001" in detail.out and "http://127.0.0.1:9" in detail.out
    )
    as_json = json.loads(cli("executors", "list", "-o", "json").out)
    assert "sample-executor" in [e["name"] for e in as_json["items"]]
    again = json.loads(
        cli("executors", "register", "-f", "-", "-o", "json", input=json.dumps(REGISTER)).out
    )
    assert again["created"] is False and again["token"] == token


def test_replicas_table_and_yaml(cli: Run) -> None:
    shown = cli("replicas")
    assert shown.code == 0, shown
    head, rest = shown.out.split("\n", 1)
    rows = table(rest)
    assert [r["ROLE"] for r in rows].count("leader") == 1
    leader = next(r for r in rows if r["ROLE"] == "leader")
    assert head.startswith(f"Leader: {leader['INSTANCE']} (epoch {leader['EPOCH']}")
    answer = yaml.safe_load(cli("replicas", "-o", "yaml").out)
    assert answer["leader"]["epoch"] == int(leader["EPOCH"])


def test_failures_a_script_can_tell_apart(cli: Run, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    stopped = cli("tasks", "list", "--api", closed)
    assert stopped.code == 5
    assert one_line(stopped) == (
        f"cadenza: error: cannot reach the Cadenza API at {closed}: Connection refused"
        " (check --api or CADENZA_API)"
    )

    nowhere = cli("replicas", env={"CADENZA_API": None})
    assert nowhere.code == 2
    assert "pass --api URL, set CADENZA_API" in one_line(nowhere)

    wrong_format = cli("tasks", "list", "-o", "xml")
    assert wrong_format.code == 2 and "invalid choice: 'xml'" in one_line(wrong_format)
    assert cli("tasks", "frobnicate").code == 2
    bad_url = cli("tasks", "list", "--api", "localhost:8080")
    assert bad_url.code == 2 and "--api must be an http://" in one_line(bad_url)
    assert cli("runs", "list", "--since", "yesterday").code == 2
    broken = tmp_path / "kubeconfig"
    broken.write_text("contexts: [\n")
    unreadable = cli("tasks", "list", env={"CADENZA_API": None, "KUBECONFIG": str(broken)})
    assert unreadable.code == 2 and "is not valid YAML" in one_line(unreadable)
    assert cli("--help").code == 0 and "exit codes:" in cli("--help").out
