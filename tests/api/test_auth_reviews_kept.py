"""The review answers kept for the TTL, on the real API server: a revoked RoleBinding and a
deleted ServiceAccount change nothing for the questions already answered until the TTL ends,
a question not asked before is reviewed at once, and once the TTL is over both take effect.

The replica keeps answers for ``TTL`` seconds (``CADENZA_API_AUTH_CACHE_SECONDS``), long enough
that the API server's own RBAC and token state can be seen to change first.
"""

from __future__ import annotations

import json
import time

import pytest

from cadenza.devenv.controlplane import wait_until
from tests.api.conftest import Api, Callers

pytestmark = [pytest.mark.controlplane, pytest.mark.mariadb]

TTL = 45.0


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    return {"CADENZA_API_AUTH_CACHE_SECONDS": str(TTL)}


def may_list(api: Api, account: str) -> bool:
    """The API server's own answer, now: may ``account`` list Tasks in the namespace?"""
    answer = api.plane.kubectl(
        "auth", "can-i", "list", "tasks.cadenza.dev", "-n", api.namespace,
        f"--as=system:serviceaccount:{api.namespace}:{account}",
        check=False,
    )  # fmt: skip
    return answer.stdout.strip() == "yes"


def token_accepted(api: Api, token: str) -> bool:
    """The API server's own TokenReview of ``token``, now."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": token}}  # fmt: skip
    out = api.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    return bool(json.loads(out)["status"].get("authenticated"))


def test_answers_are_kept_for_the_ttl_and_then_asked_again(api: Api, callers: Callers) -> None:
    revoked = callers.token("kept-reader", ("get", "list"))
    gone = callers.token("kept-gone", ("get", "list"))
    tasks = "/api/v1/tasks"
    asked = time.monotonic()
    assert api.call("GET", tasks, token=revoked).status == 200
    assert api.call("GET", tasks, token=gone).status == 200

    api.kubectl("delete", "rolebinding", "kept-reader", "-n", api.namespace)
    api.kubectl("delete", "serviceaccount", "kept-gone", "-n", api.namespace)
    wait_until(lambda: not may_list(api, "kept-reader"), 30, "RBAC to deny kept-reader")
    wait_until(lambda: not token_accepted(api, gone), 30, "kept-gone's token to be refused")
    assert time.monotonic() - asked < TTL, "the API server took the whole TTL to change"

    # Asked before: the kept answers stand.
    assert api.call("GET", tasks, token=revoked).status == 200
    assert api.call("GET", tasks, token=gone).status == 200
    # Not asked before: reviewed now. The revoked reader is refused; the deleted account's
    # identity is still the kept one (a new TokenReview would make it 401), and its RoleBinding
    # still names it, so the question reaches the route: no such Task.
    assert api.call("GET", f"{tasks}/not-there", token=revoked).status == 403
    assert api.call("GET", f"{tasks}/not-there", token=gone).status == 404

    # Once the TTL is over, both are asked again.
    for token, status, what in ((revoked, 403, "the revocation"), (gone, 401, "the deletion")):
        wait_until(
            lambda: api.call("GET", tasks, token=token).status == status,  # noqa: B023
            TTL + 30,
            f"{what} to take effect",
            interval=1.0,
        )
