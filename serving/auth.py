"""Bearer-JWT authentication with roles, as ASGI middleware in front of the whole service.

Tokens carry ``roles``: ``predict``, ``train`` or ``admin`` (admin may do everything). No token or a
bad one gives 401 with ``WWW-Authenticate: Bearer``; a valid token without the role gives 403.
Health and readiness endpoints and ``/metrics`` (for Prometheus) are open. The key comes from the
environment: ``SERVING_JWT_SECRET`` (HS256) or ``SERVING_JWT_PUBLIC_KEY`` (RS256, PEM); nothing is
kept in the repository.
"""

from __future__ import annotations

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


def _key_and_algorithms() -> tuple[str, list[str]]:
    if os.environ.get("SERVING_JWT_PUBLIC_KEY"):
        return os.environ["SERVING_JWT_PUBLIC_KEY"], ["RS256"]
    secret = os.environ.get("SERVING_JWT_SECRET")
    if not secret:
        raise AuthError(503, "authentication is not configured: set SERVING_JWT_SECRET or SERVING_JWT_PUBLIC_KEY")
    return secret, ["HS256"]


def verify(header: str | None) -> dict:
    """Claims of a valid bearer token; AuthError(401) otherwise."""
    if not header or not header.lower().startswith("bearer "):
        raise AuthError(401, "missing bearer token")
    key, algorithms = _key_and_algorithms()
    try:
        return jwt.decode(header.split(" ", 1)[1].strip(), key, algorithms=algorithms, issuer=ISSUER,
                          options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None


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
    roles = set(claims.get("roles") or [])
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
        except AuthError as err:
            body = json.dumps({"error": err.message}).encode()
            extra = [(b"www-authenticate", b'Bearer realm="platform"')] if err.status == 401 else []
            await send({"type": "http.response.start", "status": err.status,
                        "headers": [(b"content-type", b"application/json"), *extra]})
            await send({"type": "http.response.body", "body": body})
            return None
        if claims is not None:
            scope.setdefault("state", {})["principal"] = claims.get("sub")
        return await self.app(scope, receive, send)
