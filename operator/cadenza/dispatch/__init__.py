"""The HTTP adapter towards executor sidecars: dispatch, cancel and health probes.

Only this package speaks the sidecar's wire protocol (``docs/protocol.md``); the leader's
scheduling decisions stay in ``cadenza.core`` and the pod bookkeeping in ``cadenza.executors``.
"""
