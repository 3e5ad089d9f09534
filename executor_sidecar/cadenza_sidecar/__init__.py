"""The Cadenza sidecar: runs dispatched executions next to the application container.

It depends on aiohttp alone and never imports the operator package, so its image stays small.
"""
