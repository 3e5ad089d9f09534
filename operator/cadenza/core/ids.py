"""Identifiers: distinct types for the ids that flow between the core and its adapters.

``NewType`` costs nothing at run time; it lets mypy catch an execution id passed where an epoch
is expected. Values are created where they enter the system (a row, a Kubernetes object) with
``TaskUid(obj.uid)`` and never converted back and forth.
"""

from __future__ import annotations

from typing import NewType

TaskUid = NewType("TaskUid", str)
"""``metadata.uid`` of a Task resource; a re-created Task with the same name gets a new one."""

ExecutionId = NewType("ExecutionId", int)
"""Primary key of a ``task_executions`` row; also the dispatch idempotency key."""

Epoch = NewType("Epoch", int)
"""The leader epoch: bumped on every leadership acquisition; every leader write is fenced by it."""

PodName = NewType("PodName", str)
"""``metadata.name`` of an executor Pod (unique within the Task's namespace)."""
