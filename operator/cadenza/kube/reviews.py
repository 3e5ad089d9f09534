"""TokenReview and SubjectAccessReview: who a caller of the REST API is, and what they may do.

The API server stays the single source of truth for both answers: this module asks it and
hands back plain values (:class:`Identity`, a bool), never the client's objects.

WARNING: every method blocks on the network; call it from a thread, never on the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import kubernetes

from cadenza.kube.objects import GROUP, ApiClient, call


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated caller, as TokenReview reports it (and SubjectAccessReview wants it)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``user.extra`` as sorted pairs, so that an Identity is hashable (a cache key)."""


@dataclasses.dataclass(frozen=True)
class Access:
    """One question to SubjectAccessReview: may the caller ``verb`` the ``resource`` of
    ``cadenza.dev`` named ``name`` in ``namespace``? ``namespace`` "" asks cluster-wide,
    ``name`` "" asks for any object (a list or a create)."""

    verb: str
    namespace: str = ""
    name: str = ""
    resource: str = "tasks"
    path: str = ""
    """Set instead of a resource: may the caller ``verb`` this non-resource URL (``/metrics``)?"""


class Reviews:
    def __init__(self, client: ApiClient) -> None:
        self._authn = kubernetes.client.AuthenticationV1Api(client)
        self._authz = kubernetes.client.AuthorizationV1Api(client)

    def authenticate(self, token: str) -> Identity | None:
        """The token's user, or None when the API server does not accept the token."""
        body = kubernetes.client.V1TokenReview(
            spec=kubernetes.client.V1TokenReviewSpec(token=token)
        )
        review = call(lambda: self._authn.create_token_review(body))
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        extra: Mapping[str, list[str]] = user.extra or {}
        return Identity(
            username=str(user.username or ""),
            uid=str(user.uid or ""),
            groups=tuple(user.groups or ()),
            extra=tuple(sorted((k, tuple(v or ())) for k, v in extra.items())),
        )

    def allowed(self, who: Identity, access: Access) -> bool:
        """Whether RBAC (or whatever authoriser the cluster runs) allows ``access`` to ``who``."""
        url = None
        resource = None
        if access.path:
            url = kubernetes.client.V1NonResourceAttributes(path=access.path, verb=access.verb)
        else:
            resource = kubernetes.client.V1ResourceAttributes(
                group=GROUP,
                resource=access.resource,
                verb=access.verb,
                namespace=access.namespace or None,
                name=access.name or None,
            )
        body = kubernetes.client.V1SubjectAccessReview(
            spec=kubernetes.client.V1SubjectAccessReviewSpec(
                user=who.username,
                uid=who.uid or None,
                groups=list(who.groups),
                extra={k: list(v) for k, v in who.extra} or None,
                resource_attributes=resource,
                non_resource_attributes=url,
            )
        )
        review = call(lambda: self._authz.create_subject_access_review(body))
        return bool(review.status is not None and review.status.allowed)
