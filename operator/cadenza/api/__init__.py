"""The HTTP face of every replica: probes, the REST API under ``/api/v1``, callbacks, metrics."""
