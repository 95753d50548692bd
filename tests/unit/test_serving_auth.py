"""Bearer-JWT rules of the prediction service: who may call what."""

import json
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
                                      "exp": int(time.time()) - 120}, SECRET, "HS256")  # past the leeway
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


# -- keys from an identity provider's JWKS URL ------------------------------------------------------
class _Jwks:
    """A local JWKS endpoint (http.server in a thread) whose key set the test can rotate."""

    def __init__(self):
        import http.server
        import threading

        self.keys: dict[str, object] = {}  # kid -> private key
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body = json.dumps({"keys": [outer.jwk(kid) for kid in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwk(self, kid: str) -> dict:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        return {**public, "kid": kid, "use": "sig", "alg": "RS256"}

    def rotate(self, kid: str, keep_old: bool = False) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys = {**(self.keys if keep_old else {}), kid: new}

    def token(self, kid: str, roles=("predict",), **claims) -> str:
        now = int(time.time())
        payload = {"sub": "idp-user", "roles": list(roles), "iss": "https://idp.example/realms/platform",
                   "aud": "fleet-predictions", "iat": now, "exp": now + 300, **claims}
        return "Bearer " + jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def idp(monkeypatch):
    server = _Jwks()
    server.rotate("key-1")
    auth._jwks_client.cache_clear()
    monkeypatch.setattr(auth, "JWKS_REFRESH_COOLDOWN_SECONDS", 0)
    monkeypatch.setenv("SERVING_JWKS_URL", server.url)
    monkeypatch.setenv("SERVING_JWT_AUDIENCE", "fleet-predictions")
    monkeypatch.setenv("SERVING_JWT_ISSUER", "https://idp.example/realms/platform")
    yield server
    server.server.shutdown()
    auth._jwks_client.cache_clear()


def test_jwks_token_verifies_and_the_key_set_is_cached(idp):
    for _ in range(3):
        assert auth.authorise("/predict", idp.token("key-1"))["sub"] == "idp-user"
    assert idp.fetches == 1  # one fetch, then the cache


def test_a_rotated_key_is_fetched_by_its_kid_and_the_retired_one_refused(idp):
    old = idp.token("key-1")
    assert auth.authorise("/predict", old)
    idp.rotate("key-2")  # the IdP publishes a new key and retires the old one
    assert auth.authorise("/predict", idp.token("key-2"))["sub"] == "idp-user"
    assert idp.fetches == 2  # the unknown kid fetched the set again
    auth._jwks_client.cache_clear()  # a restarted replica sees only the new set
    with pytest.raises(auth.AuthError, match="Unable to find a signing key") as err:
        auth.authorise("/predict", old)
    assert err.value.status == 401


@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": "another-service"}, "Audience doesn't match"),
    ({"iss": "https://evil.example"}, "Invalid issuer"),
    ({"exp": int(time.time()) - 120}, "token expired"),
])
def test_audience_issuer_and_expiry_are_checked(idp, claims, reason):
    with pytest.raises(auth.AuthError, match=reason) as err:
        auth.authorise("/predict", idp.token("key-1", **claims))
    assert err.value.status == 401


def test_expiry_has_a_small_leeway(idp):
    assert auth.authorise("/predict", idp.token("key-1", exp=int(time.time()) - 5))  # 5 s late: clock skew
    with pytest.raises(auth.AuthError, match="token expired"):
        auth.authorise("/predict", idp.token("key-1", exp=int(time.time()) - 31))


def test_an_hs256_token_is_refused_when_keys_come_from_jwks(idp):
    forged = "Bearer " + jwt.encode({"sub": "x", "roles": ["admin"], "aud": "fleet-predictions",
                                     "iss": "https://idp.example/realms/platform", "exp": int(time.time()) + 60},
                                    SECRET, "HS256", headers={"kid": "key-1"})
    with pytest.raises(auth.AuthError) as err:
        auth.authorise("/predict", forged)
    assert err.value.status == 401


def test_nested_roles_claim_of_an_identity_provider(idp, monkeypatch):
    monkeypatch.setenv("SERVING_JWT_ROLES_CLAIM", "realm_access.roles")
    token = idp.token("key-1", roles=(), realm_access={"roles": ["train"]})
    assert auth.authorise("/train", token)
    with pytest.raises(auth.AuthError) as err:
        auth.authorise("/predict", token)
    assert err.value.status == 403


def test_unreachable_key_set_is_503_not_401(idp, monkeypatch):
    token = idp.token("key-1")
    idp.server.shutdown()
    idp.server.server_close()
    auth._jwks_client.cache_clear()
    with pytest.raises(auth.AuthError, match="identity provider keys unavailable") as err:
        auth.authorise("/predict", token)
    assert err.value.status == 503
