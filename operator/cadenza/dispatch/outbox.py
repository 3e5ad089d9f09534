"""The requests waiting for one pod, sent one at a time or together in a batch request.

Invariant: the first request goes at once (no timer holds it back); those that come while it is
in flight go together in one ``POST /v1/executions:batch`` next, at most ``MAX_BATCH`` at a time.
"""

from __future__ import annotations

from cadenza.batching import Coalescer
from cadenza.dispatch.client import DispatchClient, DispatchRequest, DispatchResult
from cadenza.dispatch.credentials import DispatchToken

MAX_BATCH = 200
"""Runs per batch request to one pod at most."""


class Outbox:
    """The requests waiting for one pod: the first goes at once, those that come while it is in
    flight go together in one batch request next."""

    def __init__(self, client: DispatchClient, base_url: str, token: DispatchToken | None) -> None:
        self._client = client
        self._base_url = base_url
        self._token = token
        self._coalescer: Coalescer[DispatchRequest, DispatchResult] = Coalescer(
            self._post, MAX_BATCH
        )
        self.sending = 0
        """Requests handed over and not answered yet: an idle outbox (0) batches nothing."""

    async def send(self, request: DispatchRequest) -> DispatchResult:
        self.sending += 1
        try:
            return await self._coalescer(request)
        finally:
            self.sending -= 1

    async def _post(self, requests: list[DispatchRequest]) -> list[DispatchResult]:
        if len(requests) == 1:
            return [await self._client.send(self._base_url, self._token, requests[0])]
        return await self._client.send_batch(self._base_url, self._token, requests)
