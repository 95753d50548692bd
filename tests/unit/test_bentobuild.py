"""The Bento build's staging folder and requirement-lock key (platform_assets/ml/bentobuild.py)."""

from pathlib import Path

from platform_assets.ml import bentobuild


def test_roots_are_the_literal_folders_of_the_include_patterns():
    assert bentobuild._roots(["serving/*.py", "platform_assets/ml/config.py", "resources/*.py"]) == [
        "platform_assets/ml", "resources", "serving"]
    assert bentobuild._roots(["*.py"]) == ["."]
    assert bentobuild._roots(["src/**/*.py", "a/b*/c.py"]) == ["a", "src"]


def test_stage_copies_only_what_the_patterns_match(tmp_path: Path):
    project, stage = tmp_path / "project", tmp_path / "stage"
    for rel in ("serving/service.py", "serving/notes.md", "serving/__pycache__/service.cpython-311.pyc",
                "serving/requirements.txt", "resources/a.py", "resources/sub/b.py", "other/c.py",
                ".venv/lib/x.py"):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(rel)
    stage.mkdir()
    copied = bentobuild.stage_context(project, ["serving/*.py", "resources/*.py"], ["serving/requirements.txt"], stage)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    # gitwildmatch: "resources/*.py" does not cross folders, as in BentoML's own build
    assert files == ["resources/a.py", "serving/requirements.txt", "serving/service.py"]
    assert copied == 2
    assert (stage / "serving/service.py").read_text() == "serving/service.py"


def test_lock_key_follows_the_requirements_and_the_bentoml_line_is_left_to_bentoml():
    assert bentobuild.lock_key(b"pandas==2.3.0\n") == bentobuild.lock_key(b"pandas==2.3.0\n")
    assert bentobuild.lock_key(b"pandas==2.3.0\n") != bentobuild.lock_key(b"pandas==2.3.1\n")
    locked = "--index-url https://pypi.org/simple\n\nanyio==4.1\nbentoml==1.4.40\nBentoML==1.4.40\nbentoml-extra==1\n"
    assert bentobuild._without_bentoml(locked) == "--index-url https://pypi.org/simple\n\nanyio==4.1\nbentoml-extra==1\n"
