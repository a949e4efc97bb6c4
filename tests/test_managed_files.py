"""library/managed_files.py, run for real as Ansible runs it (a JSON args file), on real files."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from module_run import module_command, parse, run_module


def run(tmp_path: Path, files: list[dict], check_mode: bool = False, diff: bool = False) -> dict:
    return run_module("managed_files", tmp_path, {"files": files}, check_mode, diff)


def mode(path: Path) -> str:
    return oct(path.lstat().st_mode & 0o7777)


@pytest.fixture
def site(tmp_path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    return root


def test_writes_files_directories_and_links_then_changes_nothing(tmp_path, site):
    files = [
        {"path": str(site / "conf.d"), "state": "directory", "mode": "0750"},
        {"path": str(site / "conf.d" / "app.conf"), "content": "listen 127.0.0.1;\n", "mode": "0640"},
        {"path": str(site / "enabled.conf"), "state": "link", "src": str(site / "conf.d" / "app.conf")},
        {"path": str(site / "default"), "state": "absent"},
    ]
    (site / "default").write_text("Debian's default\n")
    first = run(tmp_path, files)
    assert first["_rc"] == 0, first
    assert first["changed"] is True
    assert first["changed_paths"] == [f["path"] for f in files]
    assert (site / "conf.d" / "app.conf").read_text() == "listen 127.0.0.1;\n"
    assert mode(site / "conf.d") == "0o750" and mode(site / "conf.d" / "app.conf") == "0o640"
    assert os.readlink(site / "enabled.conf") == str(site / "conf.d" / "app.conf")
    assert not (site / "default").exists()

    second = run(tmp_path, files)
    assert second["_rc"] == 0 and second["changed"] is False and second["changed_paths"] == []
    assert [f["changed"] for f in second["files"]] == [False] * 4


def test_changed_content_mode_and_link_target_are_put_back(tmp_path, site):
    conf = site / "app.conf"
    link = site / "current"
    files = [{"path": str(conf), "content": "a = 1\n", "mode": "0644"},
             {"path": str(link), "state": "link", "src": "releases/b"}]
    run(tmp_path, files)
    conf.write_text("a = 2\n")
    conf.chmod(0o666)
    link.unlink()
    link.symlink_to("releases/a")

    result = run(tmp_path, files)
    assert result["changed_paths"] == [str(conf), str(link)]
    assert conf.read_text() == "a = 1\n" and mode(conf) == "0o644"
    assert os.readlink(link) == "releases/b"


def test_only_the_mode_differs_changes_only_the_mode(tmp_path, site):
    conf = site / "app.conf"
    conf.write_text("same\n")
    conf.chmod(0o600)
    inode = conf.stat().st_ino
    result = run(tmp_path, [{"path": str(conf), "content": "same\n", "mode": "0644"}], diff=True)
    assert result["changed"] is True and mode(conf) == "0o644"
    assert conf.stat().st_ino == inode  # not rewritten
    assert any(d.get("before", {}).get("mode") == "0600" and d["after"]["mode"] == "0644" for d in result["diff"])


def test_owner_and_group_are_set(tmp_path, site):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    user = pwd.getpwnam("nobody")
    group = grp.getgrgid(user.pw_gid)
    conf = site / "secret.env"
    files = [{"path": str(conf), "content": "KEY=1\n", "owner": "nobody", "group": group.gr_name, "mode": "0600"}]
    run(tmp_path, files)
    assert (conf.stat().st_uid, conf.stat().st_gid) == (user.pw_uid, group.gr_gid)
    assert run(tmp_path, files)["changed"] is False


def test_check_mode_reports_every_change_and_writes_nothing(tmp_path, site):
    conf = site / "app.conf"
    conf.write_text("old\n")
    files = [
        {"path": str(site / "new-dir"), "state": "directory"},
        {"path": str(site / "new-dir" / "file"), "content": "x\n"},   # parent would be created
        {"path": str(conf), "content": "new\n"},
        {"path": str(site / "link"), "state": "link", "src": "app.conf"},
        {"path": str(site / "missing"), "state": "absent"},
    ]
    result = run(tmp_path, files, check_mode=True, diff=True)
    assert result["_rc"] == 0, result
    assert result["changed_paths"] == [str(site / "new-dir"), str(site / "new-dir" / "file"), str(conf),
                                       str(site / "link")]
    assert conf.read_text() == "old\n"
    assert sorted(p.name for p in site.iterdir()) == ["app.conf"]
    content_diff = next(d for d in result["diff"] if d.get("after") == "new\n")
    assert content_diff["before"] == "old\n" and content_diff["after_header"] == str(conf)


def test_check_mode_on_a_host_without_the_package_yet(tmp_path, site):
    """A parent directory a package would create is missing: would-create, not a failure."""
    result = run(tmp_path, [{"path": str(site / "etc-nginx" / "conf.d" / "x.conf"), "content": "x\n", "owner": "root"}],
                 check_mode=True)
    assert result["_rc"] == 0 and result["changed"] is True


def test_validate_refuses_bad_content_and_keeps_the_old_file(tmp_path, site):
    conf = site / "app.conf.py"
    conf.write_text("workers = 2\n")
    result = run(tmp_path, [{"path": str(conf), "content": "workers = (\n", "validate": f"{sys.executable} -m py_compile %s"}])
    assert result["_rc"] == 1 and result["failed"] is True
    assert "validation failed" in result["msg"] and str(conf) in result["msg"]
    assert conf.read_text() == "workers = 2\n"
    assert sorted(p.name for p in site.iterdir()) == ["app.conf.py"]  # no temporary file, no __pycache__

    good = run(tmp_path, [{"path": str(conf), "content": "workers = 3\n", "validate": f"{sys.executable} -m py_compile %s"}])
    assert good["changed"] is True and conf.read_text() == "workers = 3\n"
    assert sorted(p.name for p in site.iterdir()) == ["app.conf.py"]


def test_validate_runs_only_when_the_content_changes(tmp_path, site):
    conf = site / "app.conf"
    conf.write_text("same\n")
    result = run(tmp_path, [{"path": str(conf), "content": "same\n", "validate": "false %s"}])
    assert result["_rc"] == 0 and result["changed"] is False


@pytest.mark.parametrize("entry, message", [
    ({"state": "file"}, "needs content"),
    ({"state": "link"}, "needs src"),
    ({"state": "file", "content": "x", "validate": "true"}, "must contain %s"),
])
def test_bad_input_fails_with_a_message_naming_the_path(tmp_path, site, entry, message):
    path = str(site / "x")
    result = run(tmp_path, [dict(entry, path=path)])
    assert result["_rc"] == 1 and message in result["msg"] and path in result["msg"]
    assert not (site / "x").exists()


def test_refuses_to_replace_a_directory_and_needs_the_parent(tmp_path, site):
    (site / "dir").mkdir()
    replaced = run(tmp_path, [{"path": str(site / "dir"), "content": "x"}])
    assert replaced["_rc"] == 1 and "is a directory" in replaced["msg"]
    orphan = run(tmp_path, [{"path": str(site / "no" / "such" / "file"), "content": "x"}])
    assert orphan["_rc"] == 1 and "parent directory" in orphan["msg"]
    relative = run(tmp_path, [{"path": "relative/file", "content": "x"}])
    assert relative["_rc"] == 1 and "absolute" in relative["msg"]


def test_a_link_replaces_a_file_and_a_file_replaces_a_link(tmp_path, site):
    (site / "target").write_text("t\n")
    (site / "was-file").write_text("f\n")
    (site / "was-link").symlink_to("target")
    result = run(tmp_path, [{"path": str(site / "was-file"), "state": "link", "src": "target"},
                            {"path": str(site / "was-link"), "content": "now a file\n"}])
    assert result["changed_paths"] == [str(site / "was-file"), str(site / "was-link")]
    assert os.readlink(site / "was-file") == "target"
    assert not (site / "was-link").is_symlink() and (site / "was-link").read_text() == "now a file\n"
    assert (site / "target").read_text() == "t\n"  # the old link's target is untouched


def test_bad_input_anywhere_in_the_list_fails_before_anything_is_written(tmp_path, site):
    first, bad = site / "first.conf", site / "bad.conf"
    result = run(tmp_path, [{"path": str(first), "content": "ok\n"},
                            {"path": str(bad), "content": "plain-Xy1", "secret_content": "secret-Xy2"}])
    assert result["_rc"] == 1 and "not both" in result["msg"] and str(bad) in result["msg"]
    assert not first.exists()
    relative = run_module("managed_files", tmp_path, {
                       "files": [{"path": str(first), "content": "ok\n"}],
                       "report_unlisted": [{"path": "relative/dir", "patterns": ["*"]}]})
    assert relative["_rc"] == 1 and "relative/dir" in relative["msg"] and "absolute" in relative["msg"]
    assert not first.exists()


SECRET = "cookie-Zq7-not-in-any-output"


def test_secret_content_is_written_but_never_shown(tmp_path, site):
    cookie, conf = site / ".erlang.cookie", site / "rabbitmq.conf"
    files = [{"path": str(conf), "content": "listeners.tcp.default = 127.0.0.1:5672\n", "mode": "0640"},
             {"path": str(cookie), "secret_content": SECRET, "mode": "0400"}]
    proc = subprocess.run(module_command("managed_files", tmp_path, {"files": files}, diff=True),
                          capture_output=True, text=True, check=False)
    first = parse(proc.stdout, proc.returncode)
    assert first["_rc"] == 0 and first["changed_paths"] == [str(conf), str(cookie)]
    assert cookie.read_text() == SECRET and mode(cookie) == "0o400"
    assert SECRET not in proc.stdout + proc.stderr  # not in the diff, the invocation, anything
    assert "127.0.0.1:5672" in str(first["diff"])  # the other file's diff is shown
    assert first["invocation"]["module_args"]["files"][1]["secret_content"] != SECRET

    cookie.chmod(0o600)
    cookie.write_text("changed by hand")
    proc = subprocess.run(module_command("managed_files", tmp_path, {"files": files}, check_mode=True, diff=True),
                          capture_output=True, text=True, check=False)
    checked = parse(proc.stdout, proc.returncode)
    assert checked["changed_paths"] == [str(cookie)] and cookie.read_text() == "changed by hand"
    assert SECRET not in proc.stdout and "changed by hand" not in proc.stdout
    assert "(secret, changed)" in str(checked["diff"])

    again = run(tmp_path, files)
    assert again["changed_paths"] == [str(cookie)] and cookie.read_text() == SECRET and mode(cookie) == "0o400"
    assert run(tmp_path, files)["changed"] is False


def test_report_unlisted_names_what_the_list_no_longer_holds_and_touches_nothing(tmp_path, site):
    units = site / "system"
    units.mkdir()
    for name in ("celery-worker@default.service.d", "celery-worker@reports.service.d", "celery-beat@demo.service.d",
                 "nginx.service.d"):
        (units / name).mkdir()
    args = {"files": [{"path": str(units / "celery-worker@default.service.d"), "state": "directory"},
                      {"path": str(units / "celery-beat@demo.service.d") + "/", "state": "directory"}],
            "report_unlisted": [{"path": str(units), "patterns": ["celery-worker@*.service.d", "celery-beat@*.service.d"]},
                                {"path": str(site / "missing"), "patterns": ["*"]}]}
    result = run_module("managed_files", tmp_path, args)
    assert result["_rc"] == 0 and result["changed"] is False
    assert result["unlisted"] == [str(units / "celery-worker@reports.service.d")]
    assert (units / "celery-worker@reports.service.d").is_dir()  # reported, not removed
    assert run_module("managed_files", tmp_path, dict(args, report_unlisted=[]))["unlisted"] == []
