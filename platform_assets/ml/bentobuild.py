"""Build the service's Bento without BentoML's two fixed costs, same Bento contents.

``bentoml.bentos.build_bentofile`` with the project root as build context took 5-5.6 s per
``ml_pipeline`` run (tests/benchmarks/bench_training.py), whatever the data size:

- about 1 s walking every file under the root (``.venv`` and ``.local`` included: ~100,000 paths
  matched against the include patterns) to copy the dozen files the bentofile includes. Here the
  included files are first copied into a small staging folder (only the folders the include
  patterns name are walked), and BentoML builds from that, applying the same include/exclude rules;
- about 3.7 s locking the Python requirements (``uv pip compile``, with the package index) on every
  build. The first build's locked ``env/python/requirements.txt`` is kept in the BentoML home, keyed
  by what the lock depends on (``requirements_txt``, BentoML's and Python's versions, the platform),
  and later builds use it as their (already locked) requirements with ``lock_packages: false``.
  Changing the requirements or BentoML makes a new key and so a new lock; so does deleting the
  folder. The lock is then as of its first build (pinned transitive versions do not drift with the
  package index between builds: the same requirements give the same image).

The service module is imported from the project (not the staging copy) before the build, as the
plain build did, so nothing in this process points at the deleted staging folder afterwards.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

LOCK_DIR = "platform-requirement-locks"
BUILD_DIR = "_platform_bento_build"  # the staged bentofile and locked requirements, inside the staging folder
_WILDCARDS = set("*?[")
_NEVER = {".git", ".venv", "venv", "__pycache__", ".local", "node_modules"}


def _roots(patterns: list[str]) -> list[str]:
    """The literal leading folders of include patterns (``serving/*.py`` -> ``serving``; ``*.py`` -> ``.``)."""
    roots = set()
    for pattern in patterns:
        parts = pattern.strip("/").split("/")
        head = []
        for part in parts[:-1]:
            if _WILDCARDS & set(part) or part == "**":
                break
            head.append(part)
        roots.add("/".join(head) or ".")
    return sorted(roots)


def stage_context(project: Path, include: list[str], extra: list[str], stage: Path) -> int:
    """Copy the files ``include`` matches (gitwildmatch, as BentoML) and the ``extra`` files into ``stage``."""
    from pathspec import PathSpec

    spec = PathSpec.from_lines("gitwildmatch", include)
    copied = 0
    for root in _roots(include):
        base = project / root
        if base.is_file():
            candidates = [base]
        else:
            candidates = []
            for folder, dirs, files in os.walk(base):
                dirs[:] = [d for d in dirs if d not in _NEVER]
                candidates += [Path(folder) / f for f in files]
        for path in candidates:
            rel = path.relative_to(project).as_posix()
            if spec.match_file(rel) and not (stage / rel).exists():
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, stage / rel)
                copied += 1
    for rel in extra:
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, stage / rel)
    return copied


def lock_key(requirements: bytes) -> str:
    """What the locked requirements depend on: the requirements file, BentoML's and Python's versions,
    and the platform (BentoML locks for linux/x86_64 unless it runs on it)."""
    import platform

    import bentoml

    seed = b"\0".join([requirements, bentoml.__version__.encode(), sys.version.split()[0].encode(),
                        platform.system().encode(), platform.machine().encode()])
    return hashlib.sha256(seed).hexdigest()[:16]


def _bentoml_home() -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get())


def _without_bentoml(locked: str) -> str:
    """The lock minus its ``bentoml==`` line: BentoML appends its own requirement to every build."""
    return "".join(line for line in locked.splitlines(keepends=True)
                   if not line.strip().lower().startswith("bentoml=="))


def build(bentofile: Path, project: Path):
    """Build the Bento of ``bentofile`` (its include list and ``python.requirements_txt`` relative to
    ``project``); returns ``(bento, how)`` where ``how`` says whether the requirements lock was reused."""
    import bentoml

    config = yaml.safe_load(bentofile.read_text())
    python = dict(config.get("python") or {})
    requirements = python.get("requirements_txt")
    service_module = config["service"].split(":", 1)[0]
    added = str(project) not in sys.path
    if added:
        sys.path.insert(0, str(project))
    try:
        importlib.import_module(service_module)  # from the project, as a build from the project root imports it
    finally:
        if added:
            sys.path.remove(str(project))

    cached = None
    if requirements and python.get("lock_packages", True) and not python.get("packages"):
        cached = _bentoml_home() / LOCK_DIR / f"{lock_key((project / requirements).read_bytes())}.txt"
    reuse = cached is not None and cached.is_file()
    with tempfile.TemporaryDirectory(prefix="bento-context-") as tmp:
        stage = Path(tmp)
        stage_context(project, list(config.get("include") or ["*"]), [requirements] if requirements else [], stage)
        if reuse:
            locked = stage / BUILD_DIR / "locked-requirements.txt"
            locked.parent.mkdir()
            locked.write_text(_without_bentoml(cached.read_text()))
            config["python"] = {**python, "requirements_txt": f"{BUILD_DIR}/{locked.name}", "lock_packages": False}
        staged_file = stage / BUILD_DIR / "bentofile.yaml"
        staged_file.parent.mkdir(exist_ok=True)
        config["exclude"] = [*(config.get("exclude") or []), f"/{BUILD_DIR}/"]  # not in the Bento itself
        staged_file.write_text(yaml.safe_dump(config, sort_keys=False))
        bento = bentoml.bentos.build_bentofile(str(staged_file), build_ctx=str(stage))
    if cached is not None and not reuse:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(bento.path) / "env" / "python" / "requirements.txt", cached)
    return bento, ("reused lock " + cached.name if reuse else "locked" if cached is not None else "no lock")
