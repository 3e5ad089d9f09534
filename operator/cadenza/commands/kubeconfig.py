"""The current kubeconfig context, read with PyYAML: where the Cadenza API is, who the user is.

A context may carry the API's address in an extension named ``cadenza.dev/api``::

    contexts:
      - name: demo
        context:
          cluster: demo
          user: admin
          namespace: default
          extensions:
            - name: cadenza.dev/api
              extension:
                server: http://127.0.0.1:8080       # required
                tokenFile: cadenza-token            # optional; else the user's token
                certificate-authority: ca.crt       # optional, for an HTTPS API
                insecure-skip-tls-verify: false     # optional

Files are found and merged as kubectl does: ``--kubeconfig``, else every file of ``$KUBECONFIG``
(the first to define a context, a user or ``current-context`` wins), else ``~/.kube/config``.
Relative paths are read from the directory of the file that holds them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cadenza.commands.errors import usage

EXTENSION = "cadenza.dev/api"


@dataclass(frozen=True)
class ApiExtension:
    """The context's ``cadenza.dev/api`` extension."""

    server: str
    token_file: Path | None = None
    ca_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Context:
    """What the commands take from one kubeconfig context."""

    name: str
    namespace: str | None = None
    user: str | None = None
    token: str | None = None
    token_file: Path | None = None
    other_auth: str | None = None
    """How the user authenticates instead of a token (``client certificate``, ``exec plugin``),
    for the message that says why no token was found."""
    api: ApiExtension | None = None


def files(flag: str | None, env: Mapping[str, str], home: Path) -> list[Path]:
    """The kubeconfig files to read, in kubectl's order."""
    if flag:
        path = Path(flag).expanduser()
        if not path.is_file():
            raise usage(f"--kubeconfig {flag}: no such file")
        return [path]
    listed = env.get("KUBECONFIG", "")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [home / ".kube" / "config"]


def load(paths: list[Path], context: str | None) -> Context | None:
    """The context named ``context`` (else the current one), or None when there is no kubeconfig
    or it names no current context."""
    merged = _Merged()
    for path in paths:
        if path.is_file():
            merged.add(path, _read(path))
    if not merged.read:
        if context:
            raise usage(f"--context {context}: no kubeconfig found (set --kubeconfig)")
        return None
    name = context or merged.current
    if not name:
        return None
    if name not in merged.contexts:
        where = ", ".join(str(p) for p in merged.read)
        raise usage(f"kubeconfig context {name!r} not found in {where}")
    return merged.context(name)


def _read(path: Path) -> Mapping[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise usage(f"cannot read the kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise usage(f"the kubeconfig {path} is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise usage(f"the kubeconfig {path} is not a YAML mapping")
    return loaded


class _Merged:
    """Named contexts and users of several files, each remembering its file (for paths)."""

    def __init__(self) -> None:
        self.read: list[Path] = []
        self.current = ""
        self.contexts: dict[str, tuple[Path, Mapping[str, Any]]] = {}
        self.users: dict[str, tuple[Path, Mapping[str, Any]]] = {}

    def add(self, path: Path, config: Mapping[str, Any]) -> None:
        self.read.append(path)
        self.current = self.current or str(config.get("current-context") or "")
        for key, into in (("contexts", self.contexts), ("users", self.users)):
            for entry in config.get(key) or []:
                if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                    inner = entry.get(key[:-1]) or {}
                    into.setdefault(
                        entry["name"], (path, inner if isinstance(inner, Mapping) else {})
                    )

    def context(self, name: str) -> Context:
        path, ctx = self.contexts[name]
        user_name = ctx.get("user")
        found = self.users.get(user_name) if isinstance(user_name, str) else None
        token = token_file = other = None
        if found is not None:
            user_path, user = found
            token = user.get("token") if isinstance(user.get("token"), str) else None
            raw_file = user.get("tokenFile")
            token_file = _path(user_path, raw_file) if isinstance(raw_file, str) else None
            other = _other_auth(user)
        namespace = ctx.get("namespace")
        return Context(
            name=name,
            namespace=namespace if isinstance(namespace, str) and namespace else None,
            user=user_name if isinstance(user_name, str) else None,
            token=token or None,
            token_file=token_file,
            other_auth=other,
            api=_extension(path, name, ctx.get("extensions")),
        )


def _extension(path: Path, context: str, extensions: Any) -> ApiExtension | None:
    for entry in extensions if isinstance(extensions, list) else []:
        if not isinstance(entry, Mapping) or entry.get("name") != EXTENSION:
            continue
        body = entry.get("extension")
        server = body.get("server") if isinstance(body, Mapping) else None
        if not isinstance(body, Mapping) or not isinstance(server, str) or not server:
            raise usage(
                f"the extension {EXTENSION} of kubeconfig context {context!r} in {path} needs"
                " 'server: URL' (see docs/cli.md)",
            )
        token_file, ca_file = body.get("tokenFile"), body.get("certificate-authority")
        return ApiExtension(
            server=server,
            token_file=_path(path, token_file) if isinstance(token_file, str) else None,
            ca_file=_path(path, ca_file) if isinstance(ca_file, str) else None,
            insecure=body.get("insecure-skip-tls-verify") is True,
        )
    return None


def _path(kubeconfig: Path, value: str) -> Path:
    given = Path(value).expanduser()
    return given if given.is_absolute() else kubeconfig.parent / given


def _other_auth(user: Mapping[str, Any]) -> str | None:
    if user.get("client-certificate") or user.get("client-certificate-data"):
        return "a client certificate"
    if user.get("exec"):
        return "an exec plugin"
    if user.get("auth-provider"):
        return "an auth provider"
    if user.get("username"):
        return "a username and password"
    return None
