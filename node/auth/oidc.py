"""Sign-in through the hospital's OpenID Connect provider: the node as a relying party.

The Authorization Code flow with PKCE (S256), ``state`` and ``nonce`` (OpenID Connect
Core 1.0 section 3.1): authlib makes the PKCE challenge and checks the ID token's claims,
joserfc (authlib's JOSE library) its signature, and the node's httpx does the requests:

1. :meth:`RelyingParty.begin` makes a :class:`Transaction` (state, nonce, PKCE code
   verifier, the callback URL, where to go afterwards) and the provider's authorization
   URL; the browser keeps the transaction in a signed cookie (``node.web.routes.signin_oidc``)
   and goes to the provider.
2. :meth:`RelyingParty.finish` takes the callback's parameters with that transaction:
   the state must match and be unused (a replayed callback is refused), the code is
   exchanged for tokens at the token endpoint (with the code verifier), and the ID token's
   signature is verified against the provider's JWKS, its ``iss``, ``aud``, ``exp``,
   ``iat``, ``nonce`` (and ``azp``, ``at_hash``) checked. Claims the ID token lacks come
   from the userinfo endpoint, for the same ``sub``.
3. The role comes from the claim ``AINODE_OIDC_ROLE_CLAIM`` through
   ``AINODE_OIDC_ROLE_MAP``; the highest role matched wins, and no match is refused:
   nobody gets a role by default.

The provider's metadata comes from its ``/.well-known/openid-configuration`` on the first
sign-in (the node starts while the provider is down), and its keys are fetched again when
an ID token names a key the node has not seen (key rotation). Nothing is stored in the
database: the identity lives in the session cookie (``node.auth.sessions``).
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc.errors import InvalidKeyIdError, JoseError

from node.auth.oidc_claims import SIGNING_ALGORITHMS, claim_values, role_for, verify_id_token
from node.auth.oidc_settings import OidcSettings
from node.auth.roles import Role

TRANSACTION_SECONDS = 600  # a sign-in not back from the provider by then starts again
_TIMEOUT = httpx.Timeout(10.0)


class SignInRefused(Exception):
    """A sign-in that ends without a session; the message says why (shown and audited)."""

    status = 403

    def __init__(self, reason: str, *, who: str = "") -> None:
        super().__init__(reason)
        self.who = who  # who the provider said it was, when it got that far


class ProviderUnreachable(SignInRefused):
    """The provider did not answer, or not as an OpenID provider should."""

    status = 502


@dataclass(frozen=True)
class ProviderMetadata:
    """What the node uses of the provider's discovery document (OpenID Connect Discovery)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    signing_algorithms: tuple[str, ...]
    token_auth_methods: tuple[str, ...]

    @classmethod
    def from_document(cls, document: Mapping[str, Any], issuer: str) -> ProviderMetadata:
        if document.get("issuer") != issuer:  # Discovery 4.3: it must be exactly ours
            raise ProviderUnreachable(f"the provider calls itself {document.get('issuer')!r}")
        try:
            algorithms = tuple(
                a for a in document["id_token_signing_alg_values_supported"]
                if a in SIGNING_ALGORITHMS
            )  # fmt: skip
            return cls(
                issuer=issuer,
                authorization_endpoint=str(document["authorization_endpoint"]),
                token_endpoint=str(document["token_endpoint"]),
                jwks_uri=str(document["jwks_uri"]),
                userinfo_endpoint=document.get("userinfo_endpoint"),
                signing_algorithms=algorithms or ("RS256",),
                token_auth_methods=tuple(
                    document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
                ),
            )
        except (KeyError, TypeError) as missing:
            raise ProviderUnreachable(f"the provider's metadata lacks {missing}") from None


@dataclass(frozen=True)
class Transaction:
    """One sign-in on its way through the provider, held by the browser until it is back."""

    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    next_path: str


@dataclass(frozen=True)
class Identity:
    """Who the provider vouched for, and the role the node gives them."""

    subject: str  # the provider's "sub"
    name: str  # preferred_username, else email, else sub
    role: Role


class _UsedStates:
    """States of transactions already finished (or tried), kept while their cookie could
    still be valid, so a replayed callback is refused even with the cookie copied along."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, state: str) -> bool:
        """True the first time ``state`` is seen; False afterwards."""
        now = time.monotonic()
        with self._lock:
            self._until = {s: t for s, t in self._until.items() if t > now}
            if state in self._until:
                return False
            self._until[state] = now + TRANSACTION_SECONDS
            return True


class RelyingParty:
    """The node's side of the code flow with one provider, as ``settings`` configure it."""

    def __init__(self, settings: OidcSettings) -> None:
        if settings.oidc_issuer is None or settings.oidc_client_id is None:
            raise ValueError("OpenID Connect is off: no oidc_issuer and oidc_client_id")
        self.issuer = settings.oidc_issuer
        self.provider_label = f"oidc:{self.issuer}"  # a principal's and a record's provider
        self._settings = settings
        self._client_id = settings.oidc_client_id
        self._secret = settings.oidc_client_secret
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(settings.oidc_ca)) if settings.oidc_ca else True
        )
        self._metadata: ProviderMetadata | None = None
        self._keys: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._used = _UsedStates()

    # ---- the provider's metadata and keys ---------------------------------------------

    def _get_json(self, url: str) -> Any:
        try:
            with httpx.Client(verify=self._verify, timeout=_TIMEOUT) as http:
                response = http.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                return response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ProviderUnreachable(f"the identity provider did not answer: {error}") from None

    def metadata(self) -> ProviderMetadata:
        """The provider's metadata, fetched on first use (and again after a failure)."""
        with self._lock:
            if self._metadata is None:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                self._metadata = ProviderMetadata.from_document(self._get_json(url), self.issuer)
            return self._metadata

    def _key_set(self, refresh: bool) -> dict[str, Any]:
        with self._lock:
            keys = self._keys
        if keys is None or refresh:
            keys = self._get_json(self.metadata().jwks_uri)
            if not isinstance(keys, dict):
                raise ProviderUnreachable("the provider's JWKS is not a key set")
            with self._lock:
                self._keys = keys
        return keys

    # ---- the flow ------------------------------------------------------------------------

    def _token_request(self, metadata: ProviderMetadata, form: dict[str, str]) -> dict[str, Any]:
        """POST ``form`` to the token endpoint, the client authenticated as the provider
        allows (RFC 6749 2.3.1: Basic with form-encoded ID and secret, else in the form)."""
        auth = None
        form = {**form, "client_id": self._client_id}
        if self._secret is not None:
            secret = self._secret.get_secret_value()
            methods = metadata.token_auth_methods
            if "client_secret_basic" in methods or "client_secret_post" not in methods:
                auth = httpx.BasicAuth(quote(self._client_id, safe=""), quote(secret, safe=""))
            else:
                form["client_secret"] = secret
        try:
            with httpx.Client(verify=self._verify, timeout=_TIMEOUT) as http:
                response = http.post(metadata.token_endpoint, data=form, auth=auth)
                answer = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ProviderUnreachable(f"the token endpoint failed: {error}") from None
        if not isinstance(answer, dict):
            raise ProviderUnreachable("the token endpoint answered no JSON object")
        if response.status_code != 200 or "error" in answer:
            detail = answer.get("error_description") or answer.get("error") or response.status_code
            raise SignInRefused(f"the code was not accepted: {detail}")
        return answer

    def begin(self, redirect_uri: str, next_path: str) -> tuple[str, Transaction]:
        """Where to send the browser, and the transaction it keeps until it is back."""
        metadata = self.metadata()
        transaction = Transaction(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),  # 86 characters (RFC 7636: 43-128)
            redirect_uri=redirect_uri,
            next_path=next_path,
        )
        url = add_params_to_uri(
            metadata.authorization_endpoint,
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": redirect_uri,
                "scope": self._settings.oidc_scopes,
                "state": transaction.state,
                "nonce": transaction.nonce,
                "code_challenge": create_s256_code_challenge(transaction.code_verifier),
                "code_challenge_method": "S256",
            },
        )
        return url, transaction

    def finish(self, transaction: Transaction, params: Mapping[str, str]) -> Identity:
        """Check the callback, redeem its code and verify what the provider says; the
        identity with its role, or :class:`SignInRefused` with the reason."""
        given = params.get("state", "").encode("utf-8")
        if not secrets.compare_digest(given, transaction.state.encode("ascii")):
            raise SignInRefused("the sign-in's state does not match; please sign in again")
        if not self._used.claim(transaction.state):
            raise SignInRefused("this sign-in was already used; please sign in again")
        if "iss" in params and params["iss"] != self.issuer:  # RFC 9207: no mix-up
            raise SignInRefused(f"the answer comes from another issuer ({params['iss']})")
        if "error" in params:
            detail = params.get("error_description") or params["error"]
            raise SignInRefused(f"the identity provider refused the sign-in: {detail}")
        if not params.get("code"):
            raise SignInRefused("the identity provider sent no authorization code")
        metadata = self.metadata()
        token = self._token_request(
            metadata,
            {
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": transaction.redirect_uri,
                "code_verifier": transaction.code_verifier,
            },
        )
        if "id_token" not in token:
            raise SignInRefused("the identity provider sent no ID token")
        claims = self._id_token_claims(token["id_token"], token.get("access_token"), transaction)
        return self._identity(claims, token.get("access_token"), metadata)

    def _id_token_claims(
        self, id_token: str, access_token: str | None, transaction: Transaction
    ) -> dict[str, Any]:
        verify = {
            "issuer": self.issuer,
            "client_id": self._client_id,
            "nonce": transaction.nonce,
            "access_token": access_token,
            "algorithms": self.metadata().signing_algorithms,
        }
        try:
            try:
                return verify_id_token(id_token, keys=self._key_set(refresh=False), **verify)
            except InvalidKeyIdError:  # the provider may have rotated its keys
                return verify_id_token(id_token, keys=self._key_set(refresh=True), **verify)
        except (JoseError, ValueError) as error:
            raise SignInRefused(f"the ID token is not valid: {error}") from None

    def _identity(
        self, claims: dict[str, Any], access_token: str | None, metadata: ProviderMetadata
    ) -> Identity:
        subject = str(claims["sub"])
        role_claim = self._settings.oidc_role_claim
        if not claim_values(claims, role_claim) and metadata.userinfo_endpoint and access_token:
            claims = {**self._userinfo(metadata.userinfo_endpoint, access_token, subject), **claims}
        name = str(claims.get("preferred_username") or claims.get("email") or subject)
        role = role_for(claim_values(claims, role_claim), self._settings.oidc_role_map)
        if role is None:
            raise SignInRefused(
                f"{name} signed in at the identity provider, but there is no role for you on "
                f"this node (claim {role_claim!r})",
                who=name,
            )
        return Identity(subject=subject, name=name, role=role)

    def _userinfo(self, endpoint: str, access_token: str, subject: str) -> dict[str, Any]:
        try:
            with httpx.Client(verify=self._verify, timeout=_TIMEOUT) as http:
                response = http.get(endpoint, headers={"Authorization": f"Bearer {access_token}"})
                response.raise_for_status()
                userinfo = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ProviderUnreachable(f"the userinfo endpoint failed: {error}") from None
        if not isinstance(userinfo, dict) or userinfo.get("sub") != subject:
            # OpenID Connect Core 5.3.2: another subject's claims must not be used.
            raise SignInRefused("the userinfo answer is for another subject")
        return userinfo
