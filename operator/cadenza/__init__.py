"""Cadenza: a Kubernetes-native distributed job scheduler.

The package is layered: ``cadenza.core`` holds the pure scheduling logic (cron maths, execution
modes, load-balancing strategies, run state transitions) and imports no I/O library; the adapters
around it (``store``, ``kube``, ``dispatch``, ``api``) talk to MySQL, Kubernetes and HTTP.
"""
