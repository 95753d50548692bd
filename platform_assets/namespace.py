"""Isolation by environment: the one naming rule for what two catalogues could collide on.

``PLATFORM_NAMESPACE`` (lowercase letters, digits, underscores; empty by default) lets two catalogues
share one set of servers. Empty, every name is today's exactly. Set to ``acme``:

- warehouse schemas: ``<ns>_<schema>`` (``acme_marts``, ``acme_quarantine``, ``acme_streaming``);
- Kafka topics and consumer groups: ``<name>.<ns>`` (``iot.sensor-readings.acme``);
- Redis keys: ``<ns>:<key>`` (``acme:features:iris:17``);
- MLflow experiments: ``<MLFLOW_EXPERIMENT_PREFIX>/<ns>/<experiment>`` (``platform/acme/iris_species``);
- registered models: ``<MLFLOW_REGISTRY_PREFIX>[.]<ns>.<model>`` (``acme.iris_species``,
  ``staging_acme.iris_species``);
- document collections the platform writes: ``<ns>_<collection>``;
- the lake: ``<LAKE_ROOT>/namespaces/<ns>`` (``data/lake/namespaces/acme/raw/iris``).

Topics and groups take the namespace as a *suffix* on purpose: the broker's ACLs are prefixed by each
catalogue topic and by ``platform.`` (``deploy/local/kafka/provision.py``), so every namespace's
names stay allowed without re-provisioning, as per-test topic copies already are. The MLflow
prefixes keep their meaning (a server-wide prefix per environment); the namespace nests inside them.

Like the catalogue location (``PLATFORM_CATALOGUE_DIR``), the namespace is a setting of the process,
read from its environment (``deploy/local/services.env`` in LOCAL mode, the deployment in PROD), not
run config: topic names are asset keys and sensor targets, fixed when the code location loads. Every
function takes an explicit ``ns`` for tests and tools; ``None`` means this process's setting.

Not namespaced: Dagster's asset keys (a user's ``--select`` stays the same). Give each namespace its
own Dagster instance (``DAGSTER_HOME``, or ``DAGSTER_PG_DB`` on the shared PostgreSQL): automation
and sensors react to every materialisation of a key in their instance.
"""

from __future__ import annotations

import functools
import os
import re

SETTING = "PLATFORM_NAMESPACE"
_VALID = re.compile(r"[a-z][a-z0-9_]{0,29}")
REGISTRY_SEPARATORS = "._-/"


class NamespaceError(ValueError):
    """``PLATFORM_NAMESPACE`` holds something no server accepts as part of a name."""


def validate(value: str) -> str:
    """``value`` if it is a namespace (empty included), else an error naming the setting and the rule.

    A leading letter and a length bound keep every derived name valid unquoted: PostgreSQL schema
    names (63 bytes), Kafka topics, Redis keys, MLflow names."""
    if value == "" or (_VALID.fullmatch(value) and not value.endswith("_") and "__" not in value):
        return value
    raise NamespaceError(
        f"{SETTING}={value!r} is not a namespace: use 1-30 lowercase letters, digits and single underscores, "
        f"starting with a letter (for example 'acme' or 'team_2'), or leave it empty for the default names")


@functools.cache
def _load_defaults_once() -> None:
    from platform_assets.settings import load_local_defaults

    load_local_defaults()  # parses services.env: once, not for every key built


def current(environ=None) -> str:
    """This process's namespace (``""`` when unset), validated."""
    if environ is None:
        _load_defaults_once()
        environ = os.environ
    return validate(environ.get(SETTING, "").strip())


def _ns(ns: str | None) -> str:
    return current() if ns is None else validate(ns)


def schema(name: str, ns: str | None = None) -> str:
    """A warehouse schema: ``marts`` → ``acme_marts``."""
    n = _ns(ns)
    return f"{n}_{name}" if n else name


def topic(name: str, ns: str | None = None) -> str:
    """A Kafka topic: ``iot.sensor-readings`` → ``iot.sensor-readings.acme`` (still under its ACL prefix)."""
    n = _ns(ns)
    return f"{name}.{n}" if n else name


def group(name: str, ns: str | None = None) -> str:
    """A Kafka consumer group: ``platform.sensor_readings`` → ``platform.sensor_readings.acme``."""
    return topic(name, ns)


def redis_key(*parts: str, ns: str | None = None) -> str:
    """A Redis key from its parts: ``("features", "iris", "17")`` → ``acme:features:iris:17``."""
    n = _ns(ns)
    return ":".join([n, *parts] if n else parts)


def experiment(name: str, prefix: str = "", ns: str | None = None) -> str:
    """An MLflow experiment: prefix ``platform``, ``iris`` → ``platform/acme/iris`` (``platform/iris`` without)."""
    return "/".join(p for p in (prefix, _ns(ns), name) if p)


def registered_model(model: str, prefix: str = "", ns: str | None = None) -> str:
    """A registered model name. The namespace joins the model with a dot; ``prefix`` (the server-wide
    ``MLFLOW_REGISTRY_PREFIX``) comes first, with a dot unless it already ends in a separator:
    ``("temp_max", "")`` → ``acme.temp_max``; ``("temp_max", "staging_")`` → ``staging_acme.temp_max``;
    ``("temp_max", "acme")`` without a namespace → ``acme.temp_max``."""
    n = _ns(ns)
    name = f"{n}.{model}" if n else model
    if not prefix:
        return name
    return f"{prefix}{name}" if prefix[-1] in REGISTRY_SEPARATORS else f"{prefix}.{name}"


def collection(name: str, ns: str | None = None) -> str:
    """A document-store collection the platform writes: ``machine_events`` → ``acme_machine_events``."""
    return schema(name, ns)


def lake_root(root: str, ns: str | None = None) -> str:
    """The lake of a namespace: ``<root>/namespaces/<ns>`` (``root`` itself without one). Lake paths are
    ``<root>/<zone>/<table>``, so no zone or table of the default lake can be named ``namespaces/...``."""
    n = _ns(ns)
    return f"{root.rstrip('/')}/namespaces/{n}" if n else root
