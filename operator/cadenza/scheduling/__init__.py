"""The leader's scheduling engine: plans from Tasks, ticks, runs and their status.

- ``plans``: a Task's spec turned into what the engine acts on (pure).
- ``scheduler``: the loop that claims cron ticks, manual triggers and misfires.
- ``lifecycle``: the coordinator of a run's life, meeting the parts below through what they
  return: ``dispatcher`` (an attempt to a pod), ``settling`` (overdue and taken-over runs),
  ``changefeed`` (runs changed by callbacks), ``openruns`` and ``timers`` (its bookkeeping).
- ``status``: the Task status summary, coalesced and rate-limited.
- ``retention``: history pruning.

Leader code here reaches MySQL only through the store port (:mod:`cadenza.store.port`).
"""
