"""The ``cadenza`` user commands (``tasks``, ``runs``, ``executors``, ``replicas``): clients of
the REST API, also run as the ``kubectl cadenza`` plugin.

Invariant: nothing here imports the operator's libraries (kopf, SQLAlchemy, pydantic, the
Kubernetes client) or its adapters; the commands speak HTTP with the standard library's
``urllib`` and read the kubeconfig with PyYAML, so ``cadenza tasks list`` starts fast and runs
wherever Python and PyYAML do.
"""
