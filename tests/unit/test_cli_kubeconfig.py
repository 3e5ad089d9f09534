"""Finding the API, the token and the namespace: flags, then the environment, then the current
kubeconfig context and its ``cadenza.dev/api`` extension (files written in tmp_path)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cadenza.commands import errors
from cadenza.commands.discovery import Flags, resolve
from cadenza.commands.errors import CommandError


def kubeconfig(path: Path, contexts: list[dict[str, Any]], users: list[dict[str, Any]],
               current: str = "main") -> Path:  # fmt: skip
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "contexts": contexts, "users": users,
    }))  # fmt: skip
    return path


def context(name: str, user: str, namespace: str | None = None, **ext: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"cluster": "c", "user": user}
    if namespace:
        body["namespace"] = namespace
    if ext:
        body["extensions"] = [{"name": "cadenza.dev/api", "extension": ext}]
    return {"name": name, "context": body}


def test_flags_win_over_the_environment_which_wins_over_the_kubeconfig(tmp_path: Path) -> None:
    config = kubeconfig(
        tmp_path / "config",
        [context("main", "u", "ctx-ns", server="http://from-kubeconfig:1")],
        [{"name": "u", "user": {"token": "kube-token"}}],
    )
    env = {"KUBECONFIG": str(config), "CADENZA_API": "http://from-env:2", "CADENZA_TOKEN": "e"}
    both = resolve(Flags(api="http://flag:3/", token="f"), env, tmp_path)
    assert (both.url, both.token, both.namespace) == ("http://flag:3", "f", "ctx-ns")
    from_env = resolve(Flags(namespace="n"), env, tmp_path)
    assert (from_env.url, from_env.token, from_env.namespace) == ("http://from-env:2", "e", "n")
    assert from_env.namespace_given
    from_file = resolve(Flags(), {"KUBECONFIG": str(config)}, tmp_path)
    assert (from_file.url, from_file.token) == ("http://from-kubeconfig:1", "kube-token")
    assert not from_file.namespace_given


def test_token_files_are_read_beside_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "api-token").write_text("ext-token\n")
    (tmp_path / "user-token").write_text("user-token\n")
    config = kubeconfig(
        tmp_path / "config",
        [context("main", "u", server="https://api:8443", tokenFile="api-token",
                 **{"certificate-authority": "ca.crt"}),
         context("other", "u", server="http://other:1")],
        [{"name": "u", "user": {"tokenFile": "user-token"}}],
    )  # fmt: skip
    main = resolve(Flags(kubeconfig=str(config)), {}, tmp_path)
    assert (main.token, main.ca_file) == ("ext-token", tmp_path / "ca.crt")
    other = resolve(Flags(kubeconfig=str(config), context="other"), {}, tmp_path)
    assert (other.url, other.token, other.namespace) == ("http://other:1", "user-token", None)


def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", [context("main", "u", server="http://a:1")], [], "main")
    second = kubeconfig(
        tmp_path / "b",
        [context("main", "u", server="http://b:1")],
        [{"name": "u", "user": {"token": "b-token"}}],
        "elsewhere",
    )
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)])}
    found = resolve(Flags(), env, tmp_path)
    assert (found.url, found.token) == ("http://a:1", "b-token")


def test_home_kubeconfig_is_the_last_resort(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(
        tmp_path / ".kube" / "config",
        [context("main", "u", "team-a", server="http://home:1")],
        [{"name": "u", "user": {"token": "t"}}],
    )
    found = resolve(Flags(), {}, tmp_path)
    assert (found.url, found.namespace) == ("http://home:1", "team-a")


@pytest.mark.parametrize(
    ("flags", "env", "words"),
    [
        (Flags(), {}, ["--api URL", "CADENZA_API", "cadenza.dev/api"]),
        (Flags(api="ftp://x"), {}, ["--api must be an http:// or https:// URL"]),
        (Flags(api="127.0.0.1:8080"), {}, ["--api must be"]),
        (Flags(), {"CADENZA_API": "nonsense"}, ["CADENZA_API must be"]),
        (Flags(kubeconfig="/no/such/file"), {}, ["--kubeconfig /no/such/file: no such file"]),
        (Flags(api="http://x", token_file="/no/such"), {}, ["--token-file /no/such"]),
    ],
)
def test_what_cannot_be_found_is_a_usage_error_naming_the_fix(
    tmp_path: Path, flags: Flags, env: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(CommandError) as caught:
        resolve(flags, env, tmp_path)
    assert caught.value.code == errors.USAGE
    for word in words:
        assert word in caught.value.message


def test_a_context_without_the_extension_is_named(tmp_path: Path) -> None:
    config = kubeconfig(
        tmp_path / "config",
        [context("main", "admin")],
        [{"name": "admin", "user": {"client-certificate": "a.crt", "client-key": "a.key"}}],
    )
    with pytest.raises(CommandError, match="to kubeconfig context 'main'"):
        resolve(Flags(kubeconfig=str(config)), {}, tmp_path)
    # The API from the environment; the client certificate is no token, and the hint says so.
    found = resolve(Flags(kubeconfig=str(config)), {"CADENZA_API": "http://x"}, tmp_path)
    assert found.token is None and "client certificate" in found.hint


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("contexts: [\n  - {name: x\n", ["not valid YAML", "line"]),
        ("- just\n- a list\n", ["not a YAML mapping"]),
        (json.dumps({"current-context": "gone", "contexts": []}), ["context 'gone' not found"]),
        (json.dumps({"current-context": "m", "contexts": [
            {"name": "m", "context": {"extensions": [{"name": "cadenza.dev/api",
                                                      "extension": {"port": 1}}]}}]}),
         ["needs 'server: URL'"]),
    ],
)  # fmt: skip
def test_a_broken_kubeconfig_is_named(tmp_path: Path, text: str, words: list[str]) -> None:
    (tmp_path / "config").write_text(text)
    with pytest.raises(CommandError) as caught:
        resolve(Flags(kubeconfig=str(tmp_path / "config")), {}, tmp_path)
    assert caught.value.code == errors.USAGE
    for word in words:
        assert word in caught.value.message


def test_the_user_commands_import_no_operator_library() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, cadenza.cli as c, cadenza.commands.app as a; a.parser('cadenza', '');"
        "print(sorted(m for m in ('kopf', 'sqlalchemy', 'pydantic', 'kubernetes', 'aiohttp',"
        " 'cadenza.api', 'cadenza.store', 'cadenza.settings') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"
