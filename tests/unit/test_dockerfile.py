"""What can be checked of the images without Docker: the Dockerfile read as text, held against
pyproject.toml, the command lines, the chart and the CRDs.

The images must stay small and standard: an ``operator`` and a ``sidecar`` target (the operator
last, so a plain ``docker build .`` gives it), both running as the numeric non-root user the chart
runs them as, with entrypoints that are the project's console scripts, the ports the chart and the
Executor default to, nothing shipped beyond the virtualenv (and the SQL migrations), and nothing
written to the root file system at run time (``PYTHONDONTWRITEBYTECODE``), because the chart
mounts it read-only.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cadenza.cli import main as cadenza_main
from cadenza_sidecar import flags as sidecar_flags

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cadenza"
FINAL = ("operator", "sidecar")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs: comments dropped, ``\\`` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(text: str) -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in instructions(text):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = Stage(match[2], match[1])
            found[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args))
    return found


DOCKERFILE = (REPO / "Dockerfile").read_text()
STAGES = stages(DOCKERFILE)


def lineage(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    chain = [STAGES[name]]
    while chain[-1].base in STAGES:
        chain.append(STAGES[chain[-1].base])
    return chain[::-1]


def env(name: str) -> dict[str, str]:
    """The ENV a stage's containers start with (inherited from the stages it is built on)."""
    values: dict[str, str] = {}
    for stage in lineage(name):
        for args in stage.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def last(name: str, keyword: str) -> str:
    found = [args for stage in lineage(name) for args in stage.all(keyword)]
    assert found, f"stage {name} has no {keyword}"
    return found[-1]


def exec_form(name: str, keyword: str) -> list[str]:
    value = json.loads(last(name, keyword))
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
    return value


def scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(project["scripts"])


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def exit_code(command: Callable[[Sequence[str]], int], argv: list[str]) -> int | str | None:
    try:
        return command(argv)
    except SystemExit as exc:
        return exc.code


def test_the_final_stages_exist_and_the_operator_is_the_default_target() -> None:
    assert set(FINAL) <= set(STAGES)
    assert list(STAGES)[-1] == "operator"


@pytest.mark.parametrize("target", FINAL)
def test_a_final_stage_runs_as_the_charts_numeric_non_root_user(target: str) -> None:
    user = last(target, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: a numeric uid lets runAsNonRoot verify"
    assert gid.isdigit() and int(gid) != 0, user
    security = values()["podSecurityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))


@pytest.mark.parametrize("target", FINAL)
def test_a_final_stage_ships_the_virtualenv_not_the_source(target: str) -> None:
    copies = [args for stage in lineage(target) for args in stage.all("COPY")]
    from_context = [c for c in copies if not c.startswith("--from=")]
    assert all(c.startswith("sql/ ") for c in from_context), from_context
    assert f"--from={target}-venv /opt/cadenza /opt/cadenza" in copies
    assert env(target)["PATH"].startswith("/opt/cadenza/bin:")


@pytest.mark.parametrize("target", FINAL)
def test_nothing_is_written_to_the_read_only_root_at_run_time(target: str) -> None:
    assert env(target).get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env(target).get("PYTHONUNBUFFERED") == "1"  # logs leave at once, nothing buffered


def test_the_chart_mounts_the_root_read_only_with_a_scratch_tmp() -> None:
    security = values()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "toYaml .Values.securityContext" in deployment
    assert re.search(r"- name: tmp\s+mountPath: /tmp", deployment)


def test_the_sidecars_spool_directory_is_made_for_its_user() -> None:
    # The default spool directory exists and belongs to the sidecar's user, so the sidecar starts
    # whether or not the pod mounts a volume there (it should: results survive restarts).
    uid, _, gid = last("sidecar", "USER").partition(":")
    made = " ".join(STAGES["sidecar"].all("RUN"))
    assert f"install -d -o {uid} -g {gid}" in made
    assert str(sidecar_flags.DEFAULT_SPOOL_DIR) in made.split()


@pytest.mark.parametrize("target", FINAL)
def test_an_entrypoint_is_a_console_script_of_the_project(target: str) -> None:
    entrypoint = exec_form(target, "ENTRYPOINT")
    assert entrypoint[0] in scripts(), (entrypoint, scripts())
    assert not [args for stage in lineage(target) for args in stage.all("CMD")]


def test_the_operators_entrypoint_runs_a_real_subcommand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    program, *args = exec_form("operator", "ENTRYPOINT")
    assert scripts()[program] == "cadenza.cli:main"
    assert exit_code(cadenza_main, [*args, "--help"]) == 0
    assert "usage: cadenza operator" in capsys.readouterr().out
    assert exit_code(cadenza_main, ["no-such-command", "--help"]) not in (0, None)


def test_the_sidecars_entrypoint_is_the_sidecar_command() -> None:
    program, *args = exec_form("sidecar", "ENTRYPOINT")
    assert scripts()[program] == "cadenza_sidecar.cli:main"
    assert args == []  # the pod's args choose the handler


def test_exposed_ports_are_the_charts_and_the_executors_defaults() -> None:
    chart = values()
    assert sorted(int(p) for p in last("operator", "EXPOSE").split()) == sorted(
        [chart["operator"]["httpPort"], chart["webhook"]["port"]]
    )
    crd = yaml.safe_load((REPO / "crds" / "executor.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert last("sidecar", "EXPOSE").split() == [str(spec["properties"]["port"]["default"])]


def test_the_operator_finds_its_migrations_where_the_image_puts_them() -> None:
    assert "sql/ /app/sql/" in STAGES["operator"].all("COPY")
    assert env("operator")["CADENZA_MIGRATIONS_DIR"] == "/app/sql"
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert re.search(r"name: CADENZA_MIGRATIONS_DIR\s+value: /app/sql", deployment)


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        source.rstrip("/")
        for stage in STAGES.values()
        for args in stage.all("COPY")
        if not args.startswith("--from=")
        for source in args.split()[:-1]
    }
    assert copied <= allowed, copied - allowed
    assert copied == allowed, f"allowed but never copied: {allowed - copied}"
