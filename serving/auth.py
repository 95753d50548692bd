"""Bearer-JWT authentication with roles, as ASGI middleware in front of the whole service.

Tokens carry ``roles``: ``predict``, ``train`` or ``admin`` (admin may do everything). No token or a
bad one gives 401 with ``WWW-Authenticate: Bearer``; a valid token without the role gives 403.
Health and readiness endpoints and ``/metrics`` (for Prometheus) are open. The key comes from the
environment, first set wins: ``SERVING_JWKS_URL`` (an identity provider's key set: RSA or EC keys
chosen by the token's ``kid``, cached, fetched again when an unknown ``kid`` appears, so a rotated key
works without a restart), ``SERVING_JWT_PUBLIC_KEY`` (RS256, PEM) or ``SERVING_JWT_SECRET`` (HS256);
nothing is kept in the repository. ``SERVING_JWT_AUDIENCE`` and ``SERVING_JWT_ISSUER`` are checked
when set (tokens of the local secret or key must carry ``iss`` = ``dagster-ml-platform`` unless
another issuer is set); ``exp`` is required, with ``SERVING_JWT_LEEWAY_SECONDS`` (30) of clock skew.
``SERVING_JWT_ROLES_CLAIM`` names the claim holding the roles (dotted for nested claims, e.g.
``realm_access.roles``; a space-separated string such as ``scope`` is split).
"""

from __future__ import annotations

import functools
import json
import os
import time

import jwt

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/favicon.ico")
ROLE_BY_PATH = {"/predict": "predict", "/models": "predict", "/train": "train", "/train_status": "train"}
ISSUER = "dagster-ml-platform"


class AuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# Asymmetric algorithms only from a key set: an HS256 token must never verify against a public key.
JWKS_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
JWKS_CACHE_SECONDS = 300  # the key set is fetched at most this often while every kid is known
JWKS_REFRESH_COOLDOWN_SECONDS = 5  # an unknown kid fetches again, at most this often (no amplification)


@functools.lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    """One client per URL for the process: its cache is what keeps the IdP off the request path."""
    return jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=JWKS_CACHE_SECONDS, timeout=5,
                           cooldown_duration=JWKS_REFRESH_COOLDOWN_SECONDS)


def _key_and_algorithms(token: str) -> tuple[object, list[str]]:
    if os.environ.get("SERVING_JWKS_URL"):
        try:
            signing_key = _jwks_client(os.environ["SERVING_JWKS_URL"]).get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthError(503, f"identity provider keys unavailable: {exc}") from None
        except (jwt.PyJWKClientError, jwt.DecodeError) as exc:
            raise AuthError(401, f"invalid token: {exc}") from None
        algorithms = [signing_key.algorithm_name] if signing_key.algorithm_name in JWKS_ALGORITHMS else JWKS_ALGORITHMS
        return signing_key.key, algorithms
    if os.environ.get("SERVING_JWT_PUBLIC_KEY"):
        return os.environ["SERVING_JWT_PUBLIC_KEY"], ["RS256"]
    secret = os.environ.get("SERVING_JWT_SECRET")
    if not secret:
        raise AuthError(503, "authentication is not configured: set SERVING_JWKS_URL, SERVING_JWT_PUBLIC_KEY "
                             "or SERVING_JWT_SECRET")
    return secret, ["HS256"]


def _issuer() -> str | None:
    """The issuer to require: the configured one; the local one for local keys; none for an IdP that
    was not told which issuer to expect."""
    if os.environ.get("SERVING_JWT_ISSUER"):
        return os.environ["SERVING_JWT_ISSUER"]
    return None if os.environ.get("SERVING_JWKS_URL") else ISSUER


def verify(header: str | None) -> dict:
    """Claims of a valid bearer token; AuthError(401) otherwise (503 when keys cannot be had)."""
    if not header or not header.lower().startswith("bearer "):
        raise AuthError(401, "missing bearer token")
    token = header.split(" ", 1)[1].strip()
    key, algorithms = _key_and_algorithms(token)
    audience = os.environ.get("SERVING_JWT_AUDIENCE") or None
    issuer = _issuer()
    required = ["exp", "sub"] + (["aud"] if audience else []) + (["iss"] if issuer else [])
    try:
        return jwt.decode(token, key, algorithms=algorithms, audience=audience, issuer=issuer,
                          leeway=float(os.environ.get("SERVING_JWT_LEEWAY_SECONDS", "30")),
                          options={"require": required, "verify_aud": audience is not None})
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None


def roles_of(claims: dict) -> set[str]:
    """The roles in the configured claim (``roles`` by default)."""
    value: object = claims
    for part in os.environ.get("SERVING_JWT_ROLES_CLAIM", "roles").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return set(value.split())
    return {str(r) for r in value} if isinstance(value, list) else set()


def required_role(path: str) -> str | None:
    """The role a path needs; None for open paths. Unknown paths need admin."""
    if path in OPEN_PATHS or path.startswith("/static"):
        return None
    for prefix, role in ROLE_BY_PATH.items():
        if path == prefix or path.startswith(prefix + "/"):
            return role
    return "admin"


def authorise(path: str, header: str | None) -> dict | None:
    role = required_role(path)
    if role is None:
        return None
    claims = verify(header)
    roles = roles_of(claims)
    if "admin" not in roles and role not in roles:
        raise AuthError(403, f"role {role!r} required; token has {sorted(roles) or 'none'}")
    return claims


def mint(subject: str, roles: list[str], key: str, ttl_seconds: int = 3600, algorithm: str = "HS256") -> str:
    now = int(time.time())
    return jwt.encode({"sub": subject, "roles": roles, "iss": ISSUER, "iat": now, "exp": now + ttl_seconds},
                      key, algorithm=algorithm)


class JWTAuthMiddleware:
    """ASGI middleware: authorise every HTTP request before it reaches the service."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        try:
            claims = authorise(scope["path"], headers.get("authorization"))
        except AuthError as err:  # the service's one error body (serving/contract.py's Error)
            code = {401: "unauthorized", 403: "forbidden"}.get(err.status, "unavailable")
            body = json.dumps({"error": err.message, "code": code}).encode()
            extra = {401: [(b"www-authenticate", b'Bearer realm="platform"')],
                     503: [(b"retry-after", b"5")]}.get(err.status, [])
            await send({"type": "http.response.start", "status": err.status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), *extra]})
            await send({"type": "http.response.body", "body": body})
            return None
        if claims is not None:
            scope.setdefault("state", {})["principal"] = claims.get("sub")
        return await self.app(scope, receive, send)
