"""The backup role ships its own code: the django_stack_backup package in roles/backup/module_utils,
packed by AnsiballZ with the modules of roles/backup/library when the role is loaded, and installed
on the server with the django-stack-backup command that runs its command line (the installed_backup
fixture runs the role's install tasks; backup_support.py says how)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from backup_support import COUNTS, PACKAGE, PREFIX, ROOT, SYSTEM_PYTHON, ansible_env, run_playbook

pytestmark = pytest.mark.usefixtures("backup_host_tools")

SUBCOMMANDS = ("backup", "prune", "list", "check-freshness", "restore")


def package_files() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")


def test_the_role_installs_the_package_and_its_command(installed_backup, tmp_path):
    package = installed_backup.core_dir / "django_stack_backup"
    # Every file of the package, and only those: the controller's __pycache__ (there while the role ran) is not.
    assert sorted(p.name for p in package.iterdir()) == package_files()
    assert all(name.endswith(".py") for name in package_files())
    for path in [installed_backup.core_dir, package, *package.iterdir()]:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (0, 0), path
        assert stat.S_IMODE(st.st_mode) == (0o755 if path.is_dir() else 0o644), path
        if path.is_file():
            assert path.read_bytes() == (PACKAGE / path.name).read_bytes()
    assert stat.S_IMODE(installed_backup.config_dir.stat().st_mode) == 0o700
    command = installed_backup.command
    assert stat.S_IMODE(command.stat().st_mode) == 0o755
    assert f"export PYTHONPATH={installed_backup.core_dir}\n" in command.read_text()

    # Run from anywhere: a django_stack_backup in the working directory is not what runs (python3 -P).
    decoy = tmp_path / "django_stack_backup"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('the working directory was imported from')\n")
    (decoy / "cli.py").write_text("raise SystemExit('the working directory was imported from')\n")
    proc = subprocess.run([str(command), "--help"], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: django_stack_backup [-h] --config CONFIG [-o KEY=VALUE]")
    assert all(f"django_stack_backup --config FILE {name}" in proc.stdout for name in SUBCOMMANDS)
    proc = subprocess.run([str(command), "--config", "/nonexistent.json", "list"], capture_output=True, text=True,
                          check=False, cwd=tmp_path)
    assert proc.returncode == 1 and "cannot read the config file /nonexistent.json" in proc.stderr
    proc = subprocess.run([str(command), "--config", "x.json", "nosuchcommand"], capture_output=True, text=True,
                          check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'nosuchcommand'" in proc.stderr
    assert not (package / "__pycache__").exists()  # -B: the installed package stays as the role wrote it


def test_a_copy_of_the_package_runs_standalone(env, tmp_path):
    """The package alone (no Ansible), its parent directory on PYTHONPATH, as on the server."""
    lib = tmp_path / "lib"
    shutil.copytree(PACKAGE, lib / "django_stack_backup", ignore=shutil.ignore_patterns("__pycache__"))
    command = [SYSTEM_PYTHON, "-P", "-m", "django_stack_backup.cli"]
    run_env = dict(os.environ, PYTHONPATH=str(lib), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([*command, "--help"], capture_output=True, text=True, check=False, env=run_env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert all(f"django_stack_backup --config FILE {name}" in proc.stdout for name in SUBCOMMANDS)
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(env.args(media_root=str(env.media))))
    config.chmod(0o600)
    proc = subprocess.run([*command, "--config", str(config), "backup"], capture_output=True, text=True,
                          check=False, env=run_env, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)
    assert made["command"] == "backup" and made["manifest"]["database"]["tables"] == COUNTS
    assert [o["key"].rsplit("/", 1)[1] for o in made["objects"]] == ["db.dump", "media.tar", "manifest.json"]
    assert env.keys() == [f"{PREFIX}/{made['set_id']}/{n}" for n in ("COMPLETE", "db.dump", "manifest.json",
                                                                       "media.tar")]
    rc, listing, err = env.cli(env.args(), "list")  # the installed command reads what the copy wrote
    assert rc == 0, err
    assert listing["latest_complete"]["set_id"] == made["set_id"] and listing["complete_count"] == 1


def test_the_modules_come_with_the_role(env, tmp_path):
    """Nothing but the loaded role tells Ansible where django_backup_info and its module_utils are; AnsiballZ
    packs the part of the package the module imports, following its relative imports."""
    backup_env = ansible_env(tmp_path, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_KEEP_REMOTE_FILES="1")
    del backup_env["ANSIBLE_LIBRARY"], backup_env["ANSIBLE_MODULE_UTILS"]
    rc, results = run_playbook(tmp_path, [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "load the backup role", "ansible.builtin.import_role": {
                       "name": "backup", "tasks_from": "packages.yml"}},
                  {"name": "list", "django_backup_info": env.s3_args()}]}], env=backup_env)
    listing = results[-1]
    assert rc == 0, listing.get("msg")
    assert any("python3-boto3" in r.get("ansible_facts", {}).get("backup_host_packages", []) for r in results)
    assert listing["changed"] is False and listing["count"] == 0 and listing["latest_complete"] is None

    wrappers = list(Path(backup_env["ANSIBLE_REMOTE_TEMP"]).glob("*/AnsiballZ_django_backup_info.py"))
    assert len(wrappers) == 1
    proc = subprocess.run([SYSTEM_PYTHON, str(wrappers[0]), "explode"], capture_output=True, text=True, check=False,
                          cwd=wrappers[0].parent)
    assert proc.returncode == 0, proc.stderr
    packed = wrappers[0].parent / "debug_dir" / "ansible" / "module_utils" / "django_stack_backup"
    assert sorted(p.name for p in packed.iterdir()) == \
        ["__init__.py", "config.py", "errors.py", "sets.py", "store.py", "util.py"]
    for path in packed.iterdir():
        assert path.read_bytes() == (PACKAGE / path.name).read_bytes()
