"""The tables of ``sql/*.sql``, as SQLAlchemy Core objects for building queries.

Invariant: these definitions equal the schema the migrations produce, column for column (name,
type, nullability, default), with the same keys, indexes and foreign keys.
``tests/integration/test_migrations.py`` reflects a migrated database and compares, so the two
never drift. The SQL files are the source of truth: change them first (in a new migration), then
this module.

Times are ``DATETIME(3)`` in UTC. :class:`UtcDateTime` makes that explicit in Python: it accepts
only timezone-aware datetimes and returns them with ``tzinfo=UTC``, so a local time can never be
written by mistake.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import CHAR, TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """``DATETIME(3)`` holding UTC; Python sees aware datetimes only.

    MariaDB truncates to milliseconds; this type truncates before writing, so a value read back
    equals the value written.
    """

    impl = mysql.DATETIME
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(fsp=3)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # nearly always: one call instead of four (it runs per value)
            return value.replace(tzinfo=None, microsecond=value.microsecond // 1000 * 1000)
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) datetime")
        utc = value.astimezone(UTC).replace(tzinfo=None)
        return utc.replace(microsecond=utc.microsecond // 1000 * 1000)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _uid(name: str, *args: Any, **kwargs: Any) -> Column[str]:
    """A Kubernetes ``metadata.uid``."""
    return Column(name, CHAR(36), *args, **kwargs)


def _hash(name: str, nullable: bool = False) -> Column[str]:
    """A hex sha256."""
    return Column(name, CHAR(64), nullable=nullable)


def _time(name: str, nullable: bool = False) -> Column[datetime]:
    return Column(name, UtcDateTime(), nullable=nullable)


def _json(name: str, nullable: bool = False) -> Column[Any]:
    # MariaDB's JSON is LONGTEXT with a CHECK (json_valid(...)); none_as_null keeps Python None
    # as SQL NULL instead of the JSON text 'null'.
    return Column(name, JSON(none_as_null=True), nullable=nullable)


_UNSIGNED_BIGINT = mysql.BIGINT(unsigned=True)
_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", String(16), primary_key=True),
    Column("name", String(255), nullable=False),
    _hash("checksum"),
    _time("applied_at"),
    **_TABLE_OPTIONS,
)
"""Written by the migration runner itself (``cadenza.store.migrations``), not by a SQL file."""

# -- 0001_replicas_and_leadership.sql ---------------------------------------------------------

scheduler_instances = Table(
    "scheduler_instances",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("http_address", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("epoch", BigInteger, nullable=True),
    _time("started_at"),
    _time("last_heartbeat"),
    Index("ix_scheduler_instances_last_heartbeat", "last_heartbeat"),
    **_TABLE_OPTIONS,
)

leader_epochs = Table(
    "leader_epochs",
    metadata,
    Column("lock_name", String(64), primary_key=True),
    Column("epoch", _UNSIGNED_BIGINT, nullable=False),
    Column("leader_instance", String(64), nullable=False),
    _time("acquired_at"),
    **_TABLE_OPTIONS,
)

# -- 0002_resources.sql -----------------------------------------------------------------------

tasks = Table(
    "tasks",
    metadata,
    _uid("uid", primary_key=True),
    Column("namespace", String(63), nullable=False),
    Column("name", String(253), nullable=False),
    Column("original_name", String(255), nullable=True),
    Column("generation", BigInteger, nullable=False),
    Column("cron_expression", String(256), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("suspend", Boolean, nullable=False),
    Column("execution_mode", String(16), nullable=False),
    Column("load_balance_strategy", String(16), nullable=False),
    Column("handler", String(253), nullable=False),
    Column("timeout_seconds", Integer, nullable=False),
    _json("spec"),
    _hash("spec_hash"),
    Column("valid", Boolean, nullable=False),
    Column("invalid_reason", Text, nullable=True),
    _json("missing_executors"),
    # the epoch of the leader transaction that last wrote the row (sql/0004)
    Column("epoch", _UNSIGNED_BIGINT, nullable=True),
    _time("created_at"),
    _time("updated_at"),
    UniqueConstraint("namespace", "name", name="uq_tasks_namespace_name"),
    **_TABLE_OPTIONS,
)

executors = Table(
    "executors",
    metadata,
    _uid("uid", primary_key=True),
    Column("namespace", String(63), nullable=False),
    Column("name", String(253), nullable=False),
    _json("selector"),
    Column("port", Integer, nullable=False),
    Column("scheme", String(8), nullable=False),
    _json("spec"),
    _hash("spec_hash"),
    Column("generation", BigInteger, nullable=False),
    # the epoch of the leader transaction that last wrote the row (sql/0004)
    Column("epoch", _UNSIGNED_BIGINT, nullable=True),
    _time("created_at"),
    _time("updated_at"),
    UniqueConstraint("namespace", "name", name="uq_executors_namespace_name"),
    **_TABLE_OPTIONS,
)

executor_instances = Table(
    "executor_instances",
    metadata,
    _uid(
        "executor_uid",
        ForeignKey("executors.uid", name="fk_executor_instances_executor_uid", ondelete="CASCADE"),
        primary_key=True,
    ),
    _uid("pod_uid", primary_key=True),
    Column("pod_name", String(253), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("ip", String(45), nullable=True),
    Column("phase", String(16), nullable=False),
    Column("ready", Boolean, nullable=False),
    Column("healthy", Boolean, nullable=True),
    Column("in_flight", Integer, nullable=False, server_default=text("0")),
    _time("last_probe_at", nullable=True),
    Column("last_error", Text, nullable=True),
    # the epoch of the leader transaction that last wrote the row (sql/0004)
    Column("epoch", _UNSIGNED_BIGINT, nullable=True),
    _time("updated_at"),
    Index("ix_executor_instances_pod_uid", "pod_uid"),
    **_TABLE_OPTIONS,
)

task_executors = Table(
    "task_executors",
    metadata,
    _uid(
        "task_uid",
        ForeignKey("tasks.uid", name="fk_task_executors_task_uid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("executor_name", String(253), primary_key=True),
    _uid(
        "executor_uid",
        ForeignKey("executors.uid", name="fk_task_executors_executor_uid", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("weight", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Index("ix_task_executors_executor_name", "executor_name"),
    Index("ix_task_executors_executor_uid", "executor_uid"),
    **_TABLE_OPTIONS,
)

# -- 0003_executions.sql ----------------------------------------------------------------------

task_executions = Table(
    "task_executions",
    metadata,
    Column("id", _UNSIGNED_BIGINT, primary_key=True, autoincrement=True),
    _uid("task_uid", nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("task_name", String(253), nullable=False),
    _time("scheduled_at", nullable=True),
    Column("trigger_key", String(191), nullable=True),
    Column("origin", String(16), nullable=False),
    _time("requested_at"),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("executor_name", String(253), nullable=True),
    Column("pod_name", String(253), nullable=True),
    Column("pod_ip", String(45), nullable=True),
    _hash("callback_token_hash", nullable=True),
    _time("next_attempt_at", nullable=True),
    _time("deadline_at", nullable=True),
    _time("dispatched_at", nullable=True),
    _time("started_at", nullable=True),
    _time("finished_at", nullable=True),
    _json("result", nullable=True),
    Column("error", Text, nullable=True),
    Column("exit_code", Integer, nullable=True),
    _time("created_at"),
    _time("updated_at"),
    UniqueConstraint("task_uid", "scheduled_at", name="uq_task_executions_task_uid_scheduled_at"),
    UniqueConstraint("task_uid", "trigger_key", name="uq_task_executions_task_uid_trigger_key"),
    Index("ix_task_executions_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_task_executions_task_uid_id", "task_uid", "id"),
    Index("ix_task_executions_namespace_task_name_id", "namespace", "task_name", "id"),
    Index("ix_task_executions_finished_at", "finished_at"),
    **_TABLE_OPTIONS,
)

load_balance_state = Table(
    "load_balance_state",
    metadata,
    _uid(
        "task_uid",
        ForeignKey("tasks.uid", name="fk_load_balance_state_task_uid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("strategy", String(16), nullable=False),
    _json("state"),
    Column("epoch", BigInteger, nullable=False),
    _time("updated_at"),
    **_TABLE_OPTIONS,
)

# -- 0005_execution_attempts.sql --------------------------------------------------------------

execution_attempts = Table(
    "execution_attempts",
    metadata,
    Column("execution_id", _UNSIGNED_BIGINT, primary_key=True, autoincrement=False),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("executor_name", String(253), nullable=True),
    Column("pod_name", String(253), nullable=True),
    Column("pod_ip", String(45), nullable=True),
    _hash("callback_token_hash", nullable=True),
    Column("status", String(16), nullable=False),
    _time("dispatched_at"),
    _time("finished_at", nullable=True),
    Column("error", Text, nullable=True),
    **_TABLE_OPTIONS,
)

# -- 0006_run_changes.sql ---------------------------------------------------------------------

run_changes = Table(
    "run_changes",
    metadata,
    Column("seq", _UNSIGNED_BIGINT, primary_key=True, autoincrement=True),
    Column("execution_id", _UNSIGNED_BIGINT, nullable=False),
    _time("created_at"),
    Index("ix_run_changes_created_at", "created_at"),
    **_TABLE_OPTIONS,
)

# -- 0007_executor_heartbeats.sql -------------------------------------------------------------

executor_heartbeats = Table(
    "executor_heartbeats",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("instance_id", String(63), primary_key=True),
    Column("executor_name", String(253), nullable=False),
    _time("beat_at"),
    Index("ix_executor_heartbeats_executor", "namespace", "executor_name"),
    **_TABLE_OPTIONS,
)
