"""What a route may depend on, as types: the session, the callables, and who is asking.

The objects behind them live in one :class:`WebContext` on ``app.state``, put there by
``create_app``; routes never reach for globals.

Who is asking (:func:`authenticate`): an ``Authorization: Bearer`` token when the
request has one, else the signed session cookie. A route states the least role it
needs with ``ViewerDep``, ``OperatorDep`` or ``AdminDep``: no principal is 401, too
small a role 403. A state-changing request on a session must also pass the CSRF checks
(:mod:`node.auth.csrf`); one with a bearer token need not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from node.auth import csrf
from node.auth.accounts import AccountStore
from node.auth.actions import ActionRecord, RecordAction
from node.auth.principal import LOCAL, Principal
from node.auth.roles import IdentifierPolicy, Role
from node.auth.sessions import COOKIE, SessionSigner, SignedIn
from node.auth.throttle import SigninThrottle
from node.auth.tokens import TokenStore
from node.settings import Settings

HealthCheck = Callable[[], dict[str, bool]]
"""Returns one boolean per part of the node (``scp``, ``database``, ``broker``...)."""

RetryJob = Callable[[int, Principal, str], None]
"""Retries a job for a principal, with an optional note; ``LookupError`` if absent,
``ValueError`` (the reason) if it may not be retried now (``node.jobs.retry.JobRetry``)."""

ReanalyseJob = Callable[[int, Principal, str], None]
"""Analyses a finished job again for a principal, with the reason; errors as
``RetryJob`` (``node.jobs.retry.JobReanalysis``)."""


@dataclass(frozen=True)
class WebContext:
    """Everything the routes need, built once by ``create_app``."""

    settings: Settings
    sessions: sessionmaker[Session]
    health: HealthCheck
    retry_job: RetryJob
    reanalyse_job: ReanalyseJob | None
    record_action: RecordAction
    metrics_registry: CollectorRegistry
    accounts: AccountStore
    tokens: TokenStore
    signer: SessionSigner
    identifiers: IdentifierPolicy
    # Failed local sign-ins of this web process, counted from the settings.
    signin_throttle: SigninThrottle = field(init=False)

    def __post_init__(self) -> None:
        throttle = SigninThrottle(
            self.settings.signin_max_failures, self.settings.signin_window_seconds
        )
        object.__setattr__(self, "signin_throttle", throttle)  # frozen: set once, here


def get_context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


ContextDep = Annotated[WebContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """A read session for one request, closed (and rolled back) when the request ends."""
    with context.sessions() as session:
        yield session


def get_health(context: ContextDep) -> HealthCheck:
    return context.health


def get_retry_job(context: ContextDep) -> RetryJob:
    return context.retry_job


def get_settings(context: ContextDep) -> Settings:
    return context.settings


SessionDep = Annotated[Session, Depends(get_session)]
HealthDep = Annotated[HealthCheck, Depends(get_health)]
RetryJobDep = Annotated[RetryJob, Depends(get_retry_job)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# ---- who is asking -----------------------------------------------------------------


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None without the header; 401
    for another scheme or an empty token."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer TOKEN'")
    return token.strip()


def own_origin(request: Request) -> str:
    """``scheme://host[:port]`` as this request addressed the node (Host is allow-listed)."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def session_principal(context: WebContext, signed: SignedIn) -> Principal | None:
    """Who a valid session cookie is now: a local account as the database has it today
    (None once removed), any other provider's identity as it was signed."""
    if signed.provider != LOCAL:
        return Principal(signed.name, signed.role, via="session", provider=signed.provider)
    try:
        account = context.accounts.get(int(signed.subject))
    except ValueError:
        return None
    if account is None or account.name != signed.name:
        return None
    return Principal(account.name, account.role, via="session", provider=LOCAL)


def signed_session(request: Request, context: WebContext) -> SignedIn | None:
    cookie = request.cookies.get(COOKIE)
    return context.signer.read(cookie) if cookie else None


def authenticate(request: Request, context: ContextDep) -> Principal | None:
    """The principal of this request, or None when it shows no credentials at all.

    A bearer token that is unknown or revoked is 401 (never a fall-back to the cookie);
    a state-changing request on a session that fails the CSRF checks is 403.
    """
    token = bearer_token(request)
    if token is not None:
        principal = context.tokens.authenticate(token)
        if principal is None:
            raise _unauthorized("unknown or revoked API token")
        return principal
    signed = signed_session(request, context)
    if signed is None:
        return None
    principal = session_principal(context, signed)
    if principal is not None and request.method not in csrf.SAFE_METHODS:
        reason = csrf.cross_site_reason(request.headers, own_origin(request))
        if reason is None and not csrf.tokens_match(signed.csrf, request.headers.get(csrf.HEADER)):
            reason = "missing or wrong CSRF token (X-CSRF-Token)"
        if reason is not None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=reason)
    return principal


OptionalPrincipalDep = Annotated[Principal | None, Depends(authenticate)]


def require(role: Role) -> Callable[[Principal | None, Request], Principal]:
    """A dependency: the principal when its role includes ``role``; else 401, or 403
    (recorded as a ``refused`` action with the path and the role it needs)."""

    def dependency(principal: OptionalPrincipalDep, request: Request) -> Principal:
        if principal is None:
            raise _unauthorized("sign in, or send an API token (Authorization: Bearer)")
        if not principal.may(role):
            # Recorded: someone probing what their role may not do shows in the audit trail.
            get_context(request).record_action(
                ActionRecord(
                    action="refused",
                    actor=principal.name,
                    actor_role=principal.role.value,
                    succeeded=False,
                    target=request.url.path,
                    reason=f"role {principal.role.value} may not {request.method} "
                    f"{request.url.path}; it needs {role.value}",
                    peer=client_address(request),
                    provider=principal.provider,
                )
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"your role ({principal.role.value}) may not do this; it needs {role.value}",
            )
        return principal

    return dependency


ViewerDep = Annotated[Principal, Depends(require(Role.VIEWER))]
OperatorDep = Annotated[Principal, Depends(require(Role.OPERATOR))]
AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""
