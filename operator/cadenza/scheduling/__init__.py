"""The leader's scheduling engine: plans from Tasks, ticks, runs and their status.

- ``plans``: a Task's spec turned into what the engine acts on (pure).
- ``scheduler``: the loop that claims cron ticks, manual triggers and misfires.
- ``lifecycle``: dispatch, retries, queues, timeouts and recovery of runs.
- ``status``: the Task status summary, coalesced and rate-limited.
- ``retention``: history pruning.
"""
