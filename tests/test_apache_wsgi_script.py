"""The apache_wsgi role's WSGI script, rendered by Ansible's own template module and run in a fresh
Python process, as a mod_wsgi daemon process runs it when it starts.

A deploy moves `current` while old daemon processes still serve (a graceful restart lets them
finish, and take, requests until they are idle). What such a process imports after the switch must
come from its own release, never from the new one through the link."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "roles" / "apache_wsgi" / "templates" / "etc" / "apache2" / "django-stack" / "app.wsgi.j2"
ANSIBLE = Path(sys.executable).parent / "ansible"


def make_release(root: Path, name: str) -> Path:
    package = root / "releases" / name / "pinapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text(
        "import os\n\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.environ['PIN_SETTING'].encode()]\n"
    )
    # Imported only after the switch: the lazy import a real app does on its first request of a kind.
    (package / "late.py").write_text(f"RELEASE = {name!r}\n")
    return package.parent


def switch(current: Path, release: str) -> None:
    """Atomically, as django_release does: a new link renamed over `current`."""
    tmp = current.with_name(".current.tmp")
    tmp.symlink_to(Path("releases") / release)
    os.replace(tmp, current)


@pytest.fixture()
def rendered(tmp_path: Path) -> dict[str, Path]:
    site = tmp_path / "srv"
    make_release(site, "A")
    make_release(site, "B")
    current = site / "current"
    current.symlink_to(Path("releases") / "A")
    env_file = site / "env"
    env_file.write_text("# settings\nPIN_SETTING='from the env file'\n")
    script = tmp_path / "pinapp.wsgi"
    variables = {
        "apache_wsgi_app_name": "pinapp",
        "apache_wsgi_user": "nobody",
        "apache_wsgi_working_dir": str(current),
        "apache_wsgi_env_file": str(env_file),
        "apache_wsgi_wsgi_app": "pinapp.wsgi:application",
        "ansible_python_interpreter": sys.executable,
    }
    result = subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-i", "localhost,", "-m", "ansible.builtin.template",
         "-a", f"src={TEMPLATE} dest={script} mode=0640", "-e", json.dumps(variables)],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {"script": script, "current": current, "site": site}


def run_daemon(script: Path, current: Path, after_start: str) -> dict[str, object]:
    """Load the script as mod_wsgi does at process start, switch `current`, then run `after_start`."""
    code = f"""
import json, os, sys
namespace = {{"__file__": {str(script)!r}, "__name__": "_mod_wsgi_pinapp"}}
exec(compile(open({str(script)!r}).read(), {str(script)!r}, "exec"), namespace)
body = b"".join(namespace["application"]({{}}, lambda status, headers: None))
{after_start}
import pinapp.late
link = {str(current)!r}
print(json.dumps({{"body": body.decode(), "late": pinapp.late.RELEASE, "cwd": os.getcwd(),
                   "path0": sys.path[0], "release": namespace["RELEASE"],
                   "through_link": any(p == link or p.startswith(link + "/") for p in sys.path)}}))
"""
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False,
                            cwd="/", env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_script_serves_the_app_with_the_settings_of_the_env_file(rendered):
    out = run_daemon(rendered["script"], rendered["current"], "")
    assert out["body"] == "from the env file"
    assert out["late"] == "A"


def test_a_process_keeps_importing_its_own_release_after_current_moves(rendered):
    current = rendered["current"]
    tmp = current.with_name(".current.tmp")
    move_current = f"os.symlink('releases/B', {str(tmp)!r}); os.replace({str(tmp)!r}, {str(current)!r})"
    out = run_daemon(rendered["script"], current, move_current)
    assert os.path.realpath(current).endswith("/releases/B")  # the switch happened under the process
    assert out["late"] == "A", "a lazy import after the switch came from the new release"
    release_a = str((rendered["site"] / "releases" / "A").resolve())
    assert out["release"] == out["path0"] == out["cwd"] == release_a
    assert not out["through_link"], "sys.path still goes through the current link"


def test_a_process_started_after_the_switch_runs_the_new_release(rendered):
    switch(rendered["current"], "B")
    out = run_daemon(rendered["script"], rendered["current"], "")
    assert out["late"] == "B"
    assert out["release"] == str((rendered["site"] / "releases" / "B").resolve())
