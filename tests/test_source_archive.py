"""library/source_archive.py, run for real as Ansible runs it (a subprocess with JSON args)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import module_run


def run_module(tmp_path: Path, check_mode: bool = False, **args) -> dict:
    return module_run.run_module("source_archive", tmp_path, args, check_mode)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "manage.py").write_text("print('hello')\n")
    (src / "app" / "views.py").write_text("x = 1\n")
    (src / "app" / "__pycache__").mkdir()
    (src / "app" / "__pycache__" / "views.cpython-311.pyc").write_bytes(b"junk")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (src / "db.sqlite3").write_bytes(b"SQLite")
    (src / "static").mkdir()                      # the project's own assets at the root: kept
    (src / "static" / "site.css").write_text("x")
    (src / "media").mkdir()                       # uploads of a development server: left out
    (src / "media" / "upload.png").write_bytes(b"png")
    (src / ".env").write_text("SECRET_KEY=dev\n")    # a developer's secrets: left out
    (src / "app" / "static" / "app").mkdir(parents=True)   # an app's own assets: kept
    (src / "app" / "static" / "app" / "site.css").write_text("body {}")
    return src


def test_builds_a_content_addressed_archive(tmp_path, project):
    dest = tmp_path / "out"
    result = run_module(tmp_path, src=str(project), dest_dir=str(dest), name="demo")
    assert result["_rc"] == 0 and result["changed"] is True
    assert Path(result["path"]).name == f"demo-{result['id']}.tar.gz"
    with tarfile.open(result["path"]) as tar:
        names = sorted(tar.getnames())
    # .git, __pycache__, the root sqlite file, media/ and .env are left out; the root static/ and
    # app/static/ (the project's and an app's own assets) are kept.
    assert names == ["app", "app/static", "app/static/app", "app/static/app/site.css", "app/views.py", "manage.py",
                     "static", "static/site.css"]
    assert result["files"] == 4


def test_the_roles_list_is_what_a_deploy_leaves_out(tmp_path, project):
    import yaml

    root = Path(__file__).resolve().parents[1]
    exclude = yaml.safe_load((root / "roles/django_app/defaults/main.yml").read_text())["django_app_archive_exclude"]
    result = run_module(tmp_path, src=str(project), dest_dir=str(tmp_path / "out"), exclude=exclude)
    with tarfile.open(result["path"]) as tar:
        names = set(tar.getnames())
    assert {"static/site.css", "app/static/app/site.css", "manage.py"} <= names
    assert not names & {".env", "media", "media/upload.png", "db.sqlite3", ".git"}
    # A project that collects into its root static/ says so.
    again = run_module(tmp_path, src=str(project), dest_dir=str(tmp_path / "out2"), exclude=[*exclude, "/static"])
    with tarfile.open(again["path"]) as tar:
        assert "static/site.css" not in tar.getnames()


def test_same_tree_gives_same_bytes_and_no_change(tmp_path, project):
    first = run_module(tmp_path, src=str(project), dest_dir=str(tmp_path / "a"))
    again = run_module(tmp_path, src=str(project), dest_dir=str(tmp_path / "a"))
    elsewhere = run_module(tmp_path, src=str(project), dest_dir=str(tmp_path / "b"))
    assert again["changed"] is False
    assert first["sha256"] == again["sha256"] == elsewhere["sha256"]
    assert Path(first["path"]).read_bytes() == Path(elsewhere["path"]).read_bytes()


def test_a_changed_file_gives_a_new_id(tmp_path, project):
    first = run_module(tmp_path, src=str(project), dest_dir=str(tmp_path / "out"))
    (project / "app" / "views.py").write_text("x = 2\n")
    second = run_module(tmp_path, src=str(project), dest_dir=str(tmp_path / "out"))
    assert second["changed"] is True and second["id"] != first["id"]


def test_check_mode_reports_but_writes_nothing(tmp_path, project):
    dest = tmp_path / "out"
    result = run_module(tmp_path, check_mode=True, src=str(project), dest_dir=str(dest))
    assert result["changed"] is True
    assert not dest.exists()
    real = run_module(tmp_path, src=str(project), dest_dir=str(dest))
    assert real["id"] == result["id"]


def test_missing_source_fails_with_a_clear_message(tmp_path):
    result = run_module(tmp_path, src=str(tmp_path / "nope"), dest_dir=str(tmp_path / "out"))
    assert result["_rc"] != 0 and result["failed"] is True
    assert "is not a directory" in result["msg"]


def test_unwritable_destination_fails_with_a_clear_message(tmp_path, project):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_module(tmp_path, src=str(project), dest_dir=str(blocker / "sub"))
    assert result["_rc"] != 0 and "cannot write" in result["msg"]


def test_unreadable_file_fails(tmp_path, project):
    """The module names the file it cannot read. Root reads everything: as root, the module runs
    without the capabilities that let root bypass file permissions."""
    (project / "manage.py").chmod(0)
    command = module_run.module_command("source_archive", tmp_path, {"src": str(project), "dest_dir": str(tmp_path / "out")})
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    result = module_run.parse(proc.stdout, proc.returncode)
    assert result["_rc"] != 0 and "cannot read" in result["msg"], result


def test_ansible_doc_renders_the_documentation():
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "ansible-doc"), "-M", str(module_run.LIBRARY), "source_archive"],
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "gzip-compressed tar archive" in proc.stdout and "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
