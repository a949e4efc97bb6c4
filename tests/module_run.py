"""Run a module of library/ as Ansible runs it on a host: a JSON file of its arguments, the
module's own Python, its JSON result on stdout. Real code path, real files, no mocks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "library"
# The project's module_utils, seen as ansible.module_utils.<name>, as Ansible ships them with a module.
MODULE_UTILS = ROOT / "module_utils"
RUN = ("import runpy, sys, ansible.module_utils as mu; mu.__path__.append(sys.argv[1]); "
       "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def module_command(module: str, tmp_path: Path, args: dict, check_mode: bool = False, diff: bool = False) -> list[str]:
    """The command line that runs `module` (a name in library/) with `args`; the arguments file goes in tmp_path."""
    argfile = tmp_path / f"args-{time.monotonic_ns()}.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(
        args, _ansible_check_mode=check_mode, _ansible_diff=diff,
        _ansible_remote_tmp=str(tmp_path / "remote-tmp"), _ansible_keep_remote_files=False)}))
    return [sys.executable, "-c", RUN, str(MODULE_UTILS), str(LIBRARY / f"{module}.py"), str(argfile)]


def parse(stdout: str, returncode: int) -> dict:
    """The module's result, with its exit status as _rc."""
    result = json.loads(stdout)
    result["_rc"] = returncode
    return result


def run_module(module: str, tmp_path: Path, args: dict, check_mode: bool = False, diff: bool = False,
               env: dict | None = None) -> dict:
    proc = subprocess.run(module_command(module, tmp_path, args, check_mode, diff),
                          capture_output=True, text=True, check=False, env=env)
    assert proc.stdout, proc.stderr
    return parse(proc.stdout, proc.returncode)
