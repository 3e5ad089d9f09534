"""The leader's health findings about mirrored pods (written by :mod:`cadenza.executors.pool`,
read by the balancer): only the health columns of ``executor_instances``, never the Kubernetes
fields the mirror writes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, literal_column, update
from sqlalchemy.engine import Connection

from cadenza.core import texts
from cadenza.store import fencing, schema

_NOW = func.utc_timestamp(3)
_EPOCH: ColumnElement[int] = literal_column(f"@{fencing.EPOCH_VARIABLE}")
_pods = schema.executor_instances


def update_instance_health(
    conn: Connection,
    executor_uid: str,
    pod_uid: str,
    healthy: bool | None,
    in_flight: int,
    last_probe_at: datetime | None,
    last_error: str | None,
) -> bool:
    """Record the leader's findings about one mirrored pod (``healthy`` None: not probed yet).

    Only the health columns are written, never the Kubernetes fields. False when the mirror has
    no row for the pod (yet): the caller keeps the finding and writes it again later.
    """
    result = conn.execute(
        update(_pods)
        .where(_pods.c.executor_uid == executor_uid, _pods.c.pod_uid == pod_uid)
        .values(
            healthy=healthy,
            in_flight=in_flight,
            last_probe_at=last_probe_at,
            last_error=texts.fit_text(last_error),  # a pod's words: fitted to the column
            updated_at=_NOW,
            epoch=_EPOCH,
        )
    )
    # PyMySQL connects with CLIENT.FOUND_ROWS: rowcount counts matched rows, changed or not.
    return result.rowcount > 0
