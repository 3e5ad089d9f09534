"""Local development environment: a real control plane, MariaDB and the demo.

Used by the pytest fixtures and by ``scripts/demo``; never by the operator at run time.
"""
