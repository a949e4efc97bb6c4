"""Render a role's templates as its tasks would (its defaults and vars loaded, Ansible's template
module), without a server: what the tests of a role's generated files read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAY = """
- name: Render a role's templates
  hosts: localhost
  gather_facts: false
  vars_files: {vars_files}
  tasks:
    - name: Render one template
      ansible.builtin.template:
        src: "{templates}/{{{{ item }}}}.j2"
        dest: "{{{{ out }}}}/{{{{ item | replace('/', '_') }}}}"
        mode: "0644"
      loop: {names}
"""


def render_role_templates(tmp_path: Path, role: str, names: list[str], variables: dict) -> dict[str, str]:
    """{name: rendered text} for each templates/<name>.j2 of the role, with `variables` on top."""
    base = ROOT / "roles" / role
    play = tmp_path / "render.yml"
    vars_files = [str(path) for path in (base / "defaults" / "main.yml", base / "vars" / "main.yml") if path.exists()]
    play.write_text(PLAY.format(vars_files=json.dumps(vars_files), templates=base / "templates", names=json.dumps(names)))
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_CONNECTION", "SSH_CLIENT")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play),
         "-e", json.dumps({**variables, "out": str(out), "ansible_python_interpreter": sys.executable})],
        capture_output=True, text=True, check=False, timeout=300,
        env=dict(env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return {name: (out / name.replace("/", "_")).read_text() for name in names}
