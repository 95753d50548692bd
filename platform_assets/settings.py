"""Where the platform runs, and where its local defaults come from.

One switch, ``PLATFORM_ENV``: ``LOCAL`` (the default, a laptop or CI with the services from
``deploy/local``) or ``PROD`` (a cluster). In LOCAL mode the defaults in
``deploy/local/services.env`` are loaded into the environment without overriding anything already
set, so ``dg.EnvVar`` resolves everywhere and the same resource definitions serve both modes.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_ENV_FILE = PROJECT_ROOT / "deploy" / "local" / "services.env"

# Settings holding a path relative to the project root in LOCAL mode.
_PROJECT_RELATIVE = ("PLATFORM_DATA_DIR", "LAKE_ROOT", "SOURCE_FILES_ROOT", "BENTOML_HOME", "PGSSLROOTCERT",
                     "REDIS_TLS_CA_CERTS", "KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION",
                     "KAFKA_SSL_KEY_LOCATION")


def platform_env() -> str:
    env = os.environ.get("PLATFORM_ENV", "LOCAL").upper()
    if env not in ("LOCAL", "PROD"):
        raise ValueError(f"PLATFORM_ENV must be LOCAL or PROD, got {env!r}")
    return env


def load_local_defaults() -> None:
    """Fill unset variables from ``services.env``; relative paths are resolved against the project."""
    if platform_env() != "LOCAL" or not LOCAL_ENV_FILE.exists():
        return
    for key, value in dotenv_values(LOCAL_ENV_FILE).items():
        if value is None or key in os.environ:
            continue
        if key in _PROJECT_RELATIVE and "://" not in value and not os.path.isabs(value):
            value = str(PROJECT_ROOT / value)
        os.environ[key] = value


def setting(name: str) -> str:
    """A required setting, with an error that names it."""
    load_local_defaults()
    try:
        return os.environ[name]
    except KeyError:
        raise RuntimeError(
            f"Setting {name} is not set. In PROD every connection setting comes from the environment; "
            f"see deploy/local/services.env for the full list."
        ) from None
