"""library/django_release.py, run for real as Ansible runs it, on a real directory tree."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from module_run import run_module


def run(tmp_path: Path, check_mode: bool = False, diff: bool = False, **args) -> dict:
    return run_module("django_release", tmp_path, args, check_mode, diff)


def make_release(root: Path, name: str, venv: str) -> Path:
    release = root / "releases" / name
    release.mkdir(parents=True)
    (release / "manage.py").write_text("# " + name)
    (root / "venvs" / venv).mkdir(parents=True, exist_ok=True)
    (release / ".venv").symlink_to(Path("..", "..", "venvs", venv))
    (root / "archives").mkdir(exist_ok=True)
    (root / "archives" / (name.split("-", 1)[1] + ".tar.gz")).write_text("x")
    return release


@pytest.fixture
def root(tmp_path) -> Path:
    app = tmp_path / "app"
    make_release(app, "20260101T000000Z-aaaaaaaaaaaa", "v1")
    make_release(app, "20260102T000000Z-bbbbbbbbbbbb", "v1")
    make_release(app, "20260103T000000Z-cccccccccccc", "v2")
    return app


def test_content_id_names_an_existing_or_a_new_release(tmp_path, root):
    found = run(tmp_path, root=str(root), content_id="bbbbbbbbbbbb")
    assert found["_rc"] == 0 and found["changed"] is False
    assert found["release_id"] == "20260102T000000Z-bbbbbbbbbbbb" and found["new"] is False
    fresh = run(tmp_path, root=str(root), content_id="dddddddddddd", timestamp="20260104T101500Z")
    assert fresh["release_id"] == "20260104T101500Z-dddddddddddd" and fresh["new"] is True
    assert not (root / "releases" / fresh["release_id"]).exists()  # naming creates nothing


def test_switch_sets_previous_and_current_and_is_idempotent(tmp_path, root):
    first = run(tmp_path, root=str(root), switch_to="20260101T000000Z-aaaaaaaaaaaa")
    assert first["changed"] is True and first["switched_from"] is None and first["previous"] is None
    second = run(tmp_path, root=str(root), switch_to="20260102T000000Z-bbbbbbbbbbbb")
    assert second["changed"] is True and second["switched_from"] == "20260101T000000Z-aaaaaaaaaaaa"
    assert second["venv_changed"] is False  # both releases use venvs/v1
    assert os.readlink(root / "current") == "releases/20260102T000000Z-bbbbbbbbbbbb"
    assert os.readlink(root / "previous") == "releases/20260101T000000Z-aaaaaaaaaaaa"
    assert (root / "current" / "manage.py").read_text() == "# 20260102T000000Z-bbbbbbbbbbbb"
    again = run(tmp_path, root=str(root), switch_to="20260102T000000Z-bbbbbbbbbbbb")
    assert again["changed"] is False and again["switched_from"] is None
    third = run(tmp_path, root=str(root), switch_to="20260103T000000Z-cccccccccccc")
    assert third["venv_changed"] is True  # v1 -> v2: a graceful reload would keep the old packages


def test_check_mode_and_diff_change_nothing(tmp_path, root):
    make_release(root, "20260104T000000Z-dddddddddddd", "v3")
    run(tmp_path, root=str(root), switch_to="20260101T000000Z-aaaaaaaaaaaa")
    result = run(tmp_path, check_mode=True, diff=True, root=str(root), switch_to="20260103T000000Z-cccccccccccc", keep=2)
    assert result["changed"] is True and result["current"] == "20260103T000000Z-cccccccccccc"
    assert "current -> 20260101T000000Z-aaaaaaaaaaaa" in result["diff"]["before"]
    assert "current -> 20260103T000000Z-cccccccccccc" in result["diff"]["after"]
    assert str(root / "releases" / "20260102T000000Z-bbbbbbbbbbbb") in result["removed"]
    assert os.readlink(root / "current") == "releases/20260101T000000Z-aaaaaaaaaaaa"
    assert len(list((root / "releases").iterdir())) == 4


def test_keep_never_removes_current_or_previous_and_prunes_unused_venvs_and_archives(tmp_path, root):
    make_release(root, "20260104T000000Z-dddddddddddd", "v3")
    run(tmp_path, root=str(root), switch_to="20260101T000000Z-aaaaaaaaaaaa")
    run(tmp_path, root=str(root), switch_to="20260102T000000Z-bbbbbbbbbbbb")
    result = run(tmp_path, root=str(root), keep=2)
    # Newest two (c, d) plus current (b) and previous (a): nothing to remove yet.
    assert result["_rc"] == 0 and result["changed"] is False and result["removed"] == []
    result = run(tmp_path, root=str(root), switch_to="20260104T000000Z-dddddddddddd", keep=2)
    assert sorted(result["releases"]) == ["20260102T000000Z-bbbbbbbbbbbb", "20260103T000000Z-cccccccccccc",
                                          "20260104T000000Z-dddddddddddd"]
    assert not (root / "releases" / "20260101T000000Z-aaaaaaaaaaaa").exists()
    assert not (root / "archives" / "aaaaaaaaaaaa.tar.gz").exists()
    assert (root / "venvs" / "v1").is_dir()  # still used by b
    run(tmp_path, root=str(root), switch_to="20260103T000000Z-cccccccccccc", keep=2)
    assert not (root / "venvs" / "v1").exists()  # b went, and with it the last user of v1
    assert sorted(p.name for p in (root / "venvs").iterdir()) == ["v2", "v3"]
    assert run(tmp_path, root=str(root), keep=2)["changed"] is False


def test_switch_is_atomic_for_readers(tmp_path, root):
    """A reader polling `current` during many switches never finds it missing."""
    run(tmp_path, root=str(root), switch_to="20260101T000000Z-aaaaaaaaaaaa")
    missing = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            if not (root / "current" / "manage.py").exists():
                missing.append(time.monotonic())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for name in ["20260102T000000Z-bbbbbbbbbbbb", "20260101T000000Z-aaaaaaaaaaaa"] * 5:
            assert run(tmp_path, root=str(root), switch_to=name)["changed"] is True
    finally:
        stop.set()
        thread.join()
    assert missing == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"switch_to": "20990101T000000Z-nothere00000"}, "there is no release directory"),
        ({"switch_to": "../etc"}, "is not a release id"),
        ({"keep": 1}, "keep at least 2"),
        ({"content_id": "a/b"}, "content_id"),
        ({"content_id": "abc", "timestamp": "yesterday"}, "timestamp"),
    ],
    ids=["unknown-release", "path-in-id", "keep-one", "bad-content-id", "bad-timestamp"],
)
def test_bad_input_fails_naming_the_option(tmp_path, root, args, message):
    result = run(tmp_path, root=str(root), **args)
    assert result["_rc"] != 0 and result["failed"] is True
    assert message in result["msg"]
    assert not (root / "current").exists()
