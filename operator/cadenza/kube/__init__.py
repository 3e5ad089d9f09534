"""The Kubernetes adapter: kopf handlers, compact views of watched objects, and API writes.

Every replica runs the same handlers; they only index and notify, and write nothing to the
objects, so replicas never fight over annotations and no finalizer can block a deletion.
"""
