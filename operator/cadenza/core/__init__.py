"""The pure core: decisions as functions of their inputs and an explicit time.

WARNING: nothing here may import kopf, SQLAlchemy, PyMySQL, aiohttp or the Kubernetes client, nor
read the wall clock; an import-linter contract enforces the first rule in CI.
"""
