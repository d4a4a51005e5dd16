"""OpenID Connect, without a provider: the settings' refusals, the role mapping, and the
ID token checks on tokens signed here (a forged, altered, expired or misdirected token
must never make a session; the flow against a real provider is tests/integration)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, OctKey, RSAKey
from pydantic import ValidationError

from node.auth.oidc_claims import claim_values, role_for, verify_id_token
from node.auth.oidc_settings import parse_role_map
from node.auth.roles import Role
from node.settings import Settings

ISSUER = "https://idp.hospital.test/realms/radiology"
CLIENT = "ainode"
NONCE = "n-0S6_WzA2Mj"
ENABLED = {"oidc_issuer": ISSUER, "oidc_client_id": CLIENT, "oidc_role_map": "rad=viewer"}


def test_role_map_and_settings() -> None:
    assert parse_role_map(" radiology-admins=admin, radiology = viewer,,") == {
        "radiology-admins": Role.ADMIN,
        "radiology": Role.VIEWER,
    }
    assert parse_role_map('{"CN=Rad,OU=Groups": "Operator"}') == {"CN=Rad,OU=Groups": Role.OPERATOR}
    assert parse_role_map("cn=rad=viewer") == {"cn=rad": Role.VIEWER}  # the last = splits
    with pytest.raises(ValueError, match="unknown role 'root'"):
        parse_role_map("wheel=root")
    with pytest.raises(ValueError, match="VALUE=ROLE"):
        parse_role_map("radiology")

    off = Settings()
    assert off.oidc_issuer is None and off.oidc_display_name is None
    on = Settings(**ENABLED)
    assert on.oidc_display_name == "idp.hospital.test"
    assert Settings(**ENABLED, oidc_provider_name="Hospital SSO").oidc_display_name == (
        "Hospital SSO"
    )
    assert Settings.load(**on.as_config()).oidc_role_map == {"rad": Role.VIEWER}
    from_file = Settings(**{**ENABLED, "oidc_role_map": {"CN=Rad,OU=X": "ADMIN"}})
    assert from_file.oidc_role_map == {"CN=Rad,OU=X": Role.ADMIN}
    assert Settings(**{**ENABLED, "oidc_issuer": "http://127.0.0.1:9000"}).oidc_issuer


def test_the_client_secret_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "oidc-client-secret"
    secret.write_text("s3cr3t-from-a-docker-secret\n")
    monkeypatch.setenv("AINODE_OIDC_ISSUER", ISSUER)
    monkeypatch.setenv("AINODE_OIDC_CLIENT_ID", CLIENT)
    monkeypatch.setenv("AINODE_OIDC_ROLE_MAP", "radiology=viewer")
    monkeypatch.setenv("AINODE_OIDC_CLIENT_SECRET_FILE", str(secret))
    settings = Settings.load()
    assert settings.oidc_client_secret is not None
    assert settings.oidc_client_secret.get_secret_value() == "s3cr3t-from-a-docker-secret"
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"oidc_issuer": "http://idp.hospital.test"}, "must be https"),
        ({"oidc_issuer": "idp.hospital.test"}, "not an http"),
        ({"oidc_client_id": None}, "needs oidc_client_id"),
        ({"oidc_role_map": ""}, "needs oidc_role_map"),
        ({"oidc_scopes": "profile email"}, "must include openid"),
        ({"oidc_redirect_url": "http://node.hospital.test/cb"}, "must be https"),
    ],
)
def test_settings_refuse(values: dict[str, Any], refusal: str) -> None:
    with pytest.raises(ValidationError, match=refusal):
        Settings(**{**ENABLED, **values})


def test_the_highest_role_matched_wins_and_no_match_is_none() -> None:
    mapping = parse_role_map("radiology-admins=admin,radiology-ops=operator,radiology=viewer")
    assert role_for(["radiology", "radiology-admins"], mapping) is Role.ADMIN
    assert role_for(["radiology-ops", "radiology"], mapping) is Role.OPERATOR
    assert role_for(["cardiology"], mapping) is None
    assert role_for([], mapping) is None
    claims = {"groups": ["a", "b"], "role": "c", "realm_access": {"roles": ["d"]}, "n": {"x": 1}}
    assert claim_values(claims, "groups") == ["a", "b"]
    assert claim_values(claims, "role") == ["c"]
    assert claim_values(claims, "realm_access.roles") == ["d"]
    assert claim_values(claims, "missing") == claim_values(claims, "n.y.z") == []


# ---- ID tokens -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-1"})


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "u-42", "aud": CLIENT, "exp": now + 300, "iat": now}
    claims["nonce"] = NONCE
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: Any, claims: dict[str, Any], alg: str = "RS256", kid: str = "idp-1") -> str:
    return jwt.encode({"alg": alg, "kid": kid}, claims, key, algorithms=[alg])


def _verify(token: str, key: RSAKey, nonce: str = NONCE) -> dict[str, Any]:
    return verify_id_token(
        token,
        keys=KeySet([key]).as_dict(private=False),
        issuer=ISSUER,
        client_id=CLIENT,
        nonce=nonce,
        access_token=None,
        algorithms=["RS256"],
    )


def test_a_good_id_token_passes(provider_key: RSAKey) -> None:
    assert _verify(_sign(provider_key, _claims()), provider_key)["sub"] == "u-42"
    several = _claims(aud=[CLIENT, "other"], azp=CLIENT)
    assert _verify(_sign(provider_key, several), provider_key)["azp"] == CLIENT


@pytest.mark.parametrize(
    "claims",
    [
        _claims(iss="https://evil.test"),
        _claims(aud="another-client"),
        _claims(exp=int(time.time()) - 3600),
        _claims(nonce="another-nonce"),
        _claims(nonce=None),
        _claims(exp=None),
        _claims(sub=None),
        _claims(aud=[CLIENT, "other"], azp="other"),
    ],
    ids=["issuer", "audience", "expired", "nonce", "no-nonce", "no-exp", "no-sub", "azp"],
)
def test_wrong_claims_are_refused(provider_key: RSAKey, claims: dict[str, Any]) -> None:
    with pytest.raises(JoseError):
        _verify(_sign(provider_key, claims), provider_key)


def test_forged_and_altered_signatures_are_refused(provider_key: RSAKey) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})  # the same kid
    with pytest.raises(BadSignatureError):
        _verify(_sign(forger, _claims()), provider_key)
    header, payload, signature = _sign(provider_key, _claims()).split(".")
    other_payload = _sign(provider_key, _claims(sub="admin")).split(".")[1]
    with pytest.raises(BadSignatureError):
        _verify(".".join([header, other_payload, signature]), provider_key)
    # A key the node has not fetched yet: the caller refreshes the JWKS and tries again.
    stranger = RSAKey.generate_key(2048, parameters={"kid": "idp-2"})
    with pytest.raises(InvalidKeyIdError):
        _verify(_sign(stranger, _claims(), kid="idp-2"), provider_key)


def test_unsigned_and_shared_secret_tokens_are_refused(provider_key: RSAKey) -> None:
    secret = OctKey.generate_key(256, parameters={"kid": "idp-1"})
    with pytest.raises(JoseError):
        _verify(_sign(secret, _claims(), alg="HS256"), provider_key)
    unsigned = _sign(provider_key, _claims()).rsplit(".", 1)[0] + "."
    with pytest.raises(JoseError):
        _verify(unsigned, provider_key)


def test_an_empty_nonce_never_passes(provider_key: RSAKey) -> None:
    with pytest.raises(JoseError, match="no nonce"):
        _verify(_sign(provider_key, _claims(nonce="")), provider_key, nonce="")
