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


A, B, C = "20260101T000000Z-aaaaaaaaaaaa", "20260102T000000Z-bbbbbbbbbbbb", "20260103T000000Z-cccccccccccc"


def test_release_says_whether_it_is_live_and_whether_its_virtualenv_differs(tmp_path, root):
    nothing_served = run(tmp_path, root=str(root), release=B)
    assert nothing_served["live"] is False and nothing_served["venv_changes"] is True
    assert nothing_served["changed"] is False and not (root / "current").exists()  # a read
    run(tmp_path, root=str(root), switch_to=A)
    same_venv = run(tmp_path, root=str(root), release=B)
    assert same_venv["live"] is False and same_venv["venv_changes"] is False  # both use venvs/v1
    other_venv = run(tmp_path, root=str(root), release=C)
    assert other_venv["live"] is False and other_venv["venv_changes"] is True
    served = run(tmp_path, root=str(root), release=A)
    assert served["live"] is True and served["venv_changes"] is False


def record(root: Path, release: str, migrations: list[str]) -> None:
    (root / "releases" / release / ".release.json").write_text(
        '{"release": "%s", "migrations": %s}' % (release, str(migrations).replace("'", '"')))


def test_rollback_to_previous_names_the_migrations_each_app_goes_back_to(tmp_path, root):
    record(root, A, ["notes.0002_note_tags", "auth.0012_alter_user_first_name_max_length"])
    record(root, B, ["notes.0004_note_pinned", "jobs.0001_initial", "auth.0012_alter_user_first_name_max_length"])
    run(tmp_path, root=str(root), switch_to=A)
    run(tmp_path, root=str(root), switch_to=B)
    plan = run(tmp_path, root=str(root), rollback_to="")
    assert plan["_rc"] == 0 and plan["changed"] is False, plan
    assert plan["release_id"] == A and plan["rollback_from"] == B
    # notes goes back to the older leaf, jobs (absent from the older release) to zero; auth stays.
    assert plan["migration_targets"] == [{"app": "notes", "migration": "0002_note_tags"},
                                         {"app": "jobs", "migration": "zero"}]
    assert os.readlink(root / "current") == f"releases/{B}"  # planning switches nothing


def test_rollback_to_a_named_release_and_the_refusals(tmp_path, root):
    for release in (A, B, C):
        record(root, release, ["notes.0001_initial"])
    run(tmp_path, root=str(root), switch_to=A)
    run(tmp_path, root=str(root), switch_to=C)
    to_b = run(tmp_path, root=str(root), rollback_to=B)
    assert to_b["release_id"] == B and to_b["rollback_from"] == C and to_b["migration_targets"] == []

    for wanted, message in [(C, "is the release being served already"),
                            ("20260109T000000Z-ffffffffffff", "no such release"),
                            ("../../etc", "is not a release id")]:
        refused = run(tmp_path, root=str(root), rollback_to=wanted)
        assert refused["_rc"] != 0 and message in refused["msg"], refused
    (root / "releases" / A / ".release.json").unlink()
    unrecorded = run(tmp_path, root=str(root), rollback_to="")
    assert unrecorded["_rc"] != 0 and A in unrecorded["msg"] and "recorded no migration state" in unrecorded["msg"]
    assert os.readlink(root / "current") == f"releases/{C}"


def test_rollback_with_nothing_served_or_nothing_before_it_is_refused(tmp_path, root):
    none_served = run(tmp_path, root=str(root), rollback_to="")
    assert none_served["_rc"] != 0 and "no release is current" in none_served["msg"]
    run(tmp_path, root=str(root), switch_to=A)
    no_previous = run(tmp_path, root=str(root), rollback_to="")
    assert no_previous["_rc"] != 0 and "no previous release" in no_previous["msg"]
