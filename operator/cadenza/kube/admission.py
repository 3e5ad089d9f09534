"""Validating admission for Tasks: refuse at ``kubectl apply`` time what the CRD schema cannot say.

The CRD's schema and CEL rules check shapes, enums and bounds. This webhook reads the spec with
the reader the engine itself uses (:func:`cadenza.core.taskspec.read_task_spec`), so it refuses
exactly what the engine could not compute with; beyond the schema that is: ``spec.schedule``
parses (field values and steps in range, a date that exists so the schedule ever fires, a known
macro, ``@every`` of whole seconds from 1 s to 366 days), ``spec.timeZone`` is an IANA zone every
replica knows, and the ``cadenza.dev/original-name`` annotation fits the database column the
mirror copies it into. Each problem is reported as ``<field path>: <what is wrong and the fix>``,
all of them in one answer, and kubectl prints the text verbatim.

Invariants:

- Stateless and local: no API call, no database, nothing awaited; every replica answers alike,
  in microseconds (the time-zone list is loaded once, at start).
- Never refuses a DELETE, a write to a subresource (the operator reports a bad Task through
  ``status``), or an update of an object that is being deleted.
- Ratchets on UPDATE: only fields the update changes are checked. A Task stored invalid (written
  while no webhook was installed) can still be labelled, annotated, triggered or rid of its
  finalizers; its problem stays visible as ``Ready=False`` from the operator.
- Never checks that the named Executors exist: they may be created later, and the operator
  reports a missing one as ``ExecutorAvailable=False``.
- The handler id is the URL path the webhook is served on, :data:`PATH`. WARNING: kopf answers
  "allowed" to a request for a path that names no handler, so the ValidatingWebhookConfiguration
  (shipped by the Helm chart; kopf never manages it) must call exactly this path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from cadenza.core import schedule, taskspec
from cadenza.kube.views import ORIGINAL_NAME
from cadenza.settings import WebhookSettings

log = logging.getLogger(__name__)

PATH = "/validate/tasks"
"""Where the Task validator is served; the chart's webhook ``clientConfig`` uses this path."""

HANDLER_ID = PATH.lstrip("/")
"""kopf routes ``POST /<handler id>`` to the handler with that id."""

ORIGINAL_NAME_MAX = 255
"""Characters of ``tasks.original_name`` (sql/0002_resources.sql): a longer value would make the
leader's mirror transaction fail for every Task."""

REFUSED = 422
"""HTTP code of a refusal, as for the API server's own validation errors (``Invalid``)."""


def task_problems(new: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[str]:
    """What is wrong with the Task ``new``, one message per field, each starting with the field
    path. With ``old`` (an update), only fields whose value changed are checked."""
    spec: Any = new.get("spec")
    old_spec: Mapping[str, Any] = (old or {}).get("spec") or {}

    def changed(key: str) -> bool:
        if old is None or not key or not isinstance(spec, Mapping):
            return True
        return old_spec.get(key) != spec.get(key)

    found = taskspec.read_task_spec(spec)[1]
    problems = [str(p) for p in found if changed(taskspec.top_level_key(p.field))]
    original = _annotations(new).get(ORIGINAL_NAME)
    if (
        original is not None
        and len(original) > ORIGINAL_NAME_MAX
        and (old is None or _annotations(old).get(ORIGINAL_NAME) != original)
    ):
        problems.append(
            f"metadata.annotations[{ORIGINAL_NAME}]: is {len(original)} characters long; "
            f"shorten it to at most {ORIGINAL_NAME_MAX}"
        )
    return problems


def check_task(
    operation: str | None,
    subresource: str | None,
    new: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
) -> None:
    """Allow the admission request by returning, or refuse it with ``kopf.AdmissionError``."""
    if (operation != "CREATE" and operation != "UPDATE") or subresource or new is None:
        return
    if (new.get("metadata") or {}).get("deletionTimestamp"):
        return
    problems = task_problems(new, old if operation == "UPDATE" else None)
    if problems:
        meta = new.get("metadata") or {}
        message = "; ".join(problems)
        log.info(
            "refused %s of Task %s/%s: %s",
            operation.lower(),
            meta.get("namespace", ""),
            meta.get("name") or meta.get("generateName", ""),
            message,
        )
        raise kopf.AdmissionError(message, code=REFUSED)


def serve(operator_settings: kopf.OperatorSettings, webhook: WebhookSettings) -> None:
    """Configure kopf to serve the webhook over HTTPS, leaving its configuration object alone."""
    assert webhook.cert_file is not None and webhook.key_file is not None
    operator_settings.admission.server = kopf.WebhookServer(
        addr=webhook.host,
        port=webhook.port,
        certfile=str(webhook.cert_file),
        pkeyfile=str(webhook.key_file),
    )
    # The chart ships the ValidatingWebhookConfiguration; kopf patching it from every replica
    # would need cluster-wide write access to admission configuration and fight the chart.
    operator_settings.admission.managed = None
    _load_time_zones()
    _quiet_kopf_refusals()


def _annotations(body: Mapping[str, Any]) -> Mapping[str, str]:
    return (body.get("metadata") or {}).get("annotations") or {}


def _load_time_zones() -> None:
    # The first lookup scans the zoneinfo directory; do it before the first request waits on it.
    schedule.parse_schedule("@hourly", "UTC")


class _RefusalFilter(logging.Filter):
    """Drops kopf's ERROR line for a refusal: a user's invalid Task is not an operator fault,
    and :func:`check_task` already logged it once, with its reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(f"Webhook {HANDLER_ID!r} failed permanently")


def _quiet_kopf_refusals() -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _RefusalFilter) for f in objects.filters):
        objects.addFilter(_RefusalFilter())
    # kopf's webhook server logs every request; the replica's own HTTP server logs none.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
