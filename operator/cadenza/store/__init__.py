"""The MySQL/MariaDB adapter: schema migrations, the resource mirror, leader fencing, replicas
and execution rows.

- :mod:`~cadenza.store.migrations` applies ``sql/NNNN_<what>.sql`` once each, under a lock;
  :mod:`~cadenza.store.schema` holds the same tables as SQLAlchemy Core objects.
- :mod:`~cadenza.store.engine` builds the pooled engine (UTC, strict, timeouts) and checks that
  the database answers.
- :mod:`~cadenza.store.fencing` wraps every leader write in a transaction that proves the leader
  epoch is still current; :mod:`~cadenza.store.mirror` and :mod:`~cadenza.store.executions`
  write through it.
- :mod:`~cadenza.store.instances` is the registry of replicas and answers who leads.

Sync SQLAlchemy 2 Core with PyMySQL; no ORM. Every time is an aware UTC datetime in Python and
``DATETIME(3)`` UTC in the database.

WARNING: every function here blocks on the network. Code on the event loop must call them
through the operator's bounded thread pool, never directly.
"""
