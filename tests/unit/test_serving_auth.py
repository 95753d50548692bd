"""Bearer-JWT rules of the prediction service: who may call what."""

import time

import jwt
import pytest

from serving import auth

SECRET = "unit-test-secret-of-sufficient-length-0123456789"


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("SERVING_JWT_SECRET", SECRET)
    monkeypatch.delenv("SERVING_JWT_PUBLIC_KEY", raising=False)


def bearer(roles, **claims) -> str:
    return "Bearer " + auth.mint("tester", roles, SECRET, **claims)


def test_roles_grant_their_paths_and_admin_grants_all():
    assert auth.authorise("/predict", bearer(["predict"]))["sub"] == "tester"
    assert auth.authorise("/train/abc", bearer(["train"]))
    assert auth.authorise("/train", bearer(["admin"]))


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
def test_health_and_metrics_are_open(path):
    assert auth.authorise(path, None) is None


def test_missing_bad_and_expired_tokens_are_401():
    for header in (None, "Basic abc", "Bearer not-a-jwt", "Bearer " + jwt.encode({"sub": "x"}, "another-secret-that-is-long-enough-for-hs256", "HS256")):
        with pytest.raises(auth.AuthError) as err:
            auth.authorise("/predict", header)
        assert err.value.status == 401
    expired = "Bearer " + jwt.encode({"sub": "x", "roles": ["predict"], "iss": auth.ISSUER,
                                      "exp": int(time.time()) - 10}, SECRET, "HS256")
    with pytest.raises(auth.AuthError, match="token expired"):
        auth.authorise("/predict", expired)


def test_wrong_role_is_403_and_unknown_paths_need_admin():
    with pytest.raises(auth.AuthError) as err:
        auth.authorise("/train", bearer(["predict"]))
    assert err.value.status == 403 and "role 'train' required" in err.value.message
    with pytest.raises(auth.AuthError) as err:
        auth.authorise("/something-else", bearer(["predict", "train"]))
    assert err.value.status == 403


def test_rs256_public_key_verifies(monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("SERVING_JWT_PUBLIC_KEY", public.decode())
    token = "Bearer " + auth.mint("svc", ["predict"], private.decode(), algorithm="RS256")
    assert auth.authorise("/predict", token)["sub"] == "svc"
    with pytest.raises(auth.AuthError):
        auth.authorise("/predict", bearer(["predict"]))  # an HS256 token is refused once a public key is set


def test_unconfigured_service_refuses_with_503(monkeypatch):
    monkeypatch.delenv("SERVING_JWT_SECRET")
    with pytest.raises(auth.AuthError) as err:
        auth.authorise("/predict", "Bearer x")
    assert err.value.status == 503
