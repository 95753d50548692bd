"""Mint a bearer token for local use: `python -m serving.mint_token --roles predict,train [--subject me]`.

Reads the signing secret from SERVING_JWT_SECRET, or from .local/serving/jwt-secret (created by
`make demo` on first use, git-ignored). Prints the token only, so `TOKEN=$(...)` works.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from serving.auth import mint

SECRET_FILE = Path(__file__).resolve().parent.parent / ".local" / "serving" / "jwt-secret"


def local_secret(create: bool = False) -> str:
    """The local signing secret: from the environment, else the git-ignored file (made when asked)."""
    if os.environ.get("SERVING_JWT_SECRET"):
        return os.environ["SERVING_JWT_SECRET"]
    if not SECRET_FILE.exists():
        if not create:
            raise SystemExit(f"no signing secret: set SERVING_JWT_SECRET or run make demo (creates {SECRET_FILE})")
        SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
        SECRET_FILE.write_text(secrets.token_urlsafe(48))
        SECRET_FILE.chmod(0o600)
    return SECRET_FILE.read_text().strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", default="predict", help="comma-separated: predict, train, admin")
    parser.add_argument("--subject", default=os.environ.get("USER", "local"))
    parser.add_argument("--ttl", type=int, default=8 * 3600, help="seconds")
    args = parser.parse_args(argv)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = set(roles) - {"predict", "train", "admin"}
    if unknown:
        parser.error(f"unknown role(s) {sorted(unknown)}")
    print(mint(args.subject, roles, local_secret(), args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
