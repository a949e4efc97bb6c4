"""A throwaway systemd server for running one of library/'s modules for real: a container from the
project's local test image (the machine running the tests has no systemd as PID 1), started with
the flags the project uses elsewhere, with the module and Ansible's module_utils copied in, run as
AnsiballZ would run it. Tests that use it are marked `container` (see conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import ansible.module_utils
import pytest

IMAGE = f"localhost/djstack-debian:{os.environ.get('DEBIAN_RELEASE', 'trixie')}"
LIBRARY = Path(__file__).resolve().parents[1] / "library"
# Not /tmp: with --systemd=always podman mounts a tmpfs there, which `podman cp` does not write into.
WORK = "/opt/djstack-test"
RUN_FLAGS = ("--systemd=always", "--runtime=runc", "--cap-add=SYS_ADMIN", "--cap-add=NET_ADMIN", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")


def missing_prerequisite(reason: str) -> None:
    """As conftest.missing_prerequisite: fail (`make test` installs podman and builds the image), or
    skip with DJSTACK_ALLOW_SKIP=1."""
    if os.environ.get("DJSTACK_ALLOW_SKIP") == "1":
        pytest.skip(reason)
    pytest.fail(f"missing prerequisite: {reason} (set DJSTACK_ALLOW_SKIP=1 to skip such tests)", pytrace=False)


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, **kw)


class ModuleServer:
    def __init__(self, name: str, module: str):
        self.name, self.module = name, module

    def exec(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return podman("exec", *(["-i"] if "input" in kw else []), self.name, *cmd, check=check, **kw)

    def module_command(self, args: dict, check_mode: bool = False, diff: bool = False) -> tuple[list[str], str]:
        """The podman command that runs the module once, and its arguments file: written 0600 (as
        AnsiballZ's payload is private to the user), removed by the run itself."""
        argfile = f"{WORK}/args-{uuid.uuid4().hex}.json"
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)})
        self.exec("sh", "-c", f"umask 077 && cat > {argfile}", input=payload)
        script = f'python3 {WORK}/{self.module}.py {argfile}; rc=$?; rm -f {argfile}; exit $rc'
        return ["podman", "exec", "-e", f"PYTHONPATH={WORK}/lib", self.name, "sh", "-c", script], argfile

    def run(self, args: dict, check_mode: bool = False, diff: bool = False) -> dict:
        """The module's result, with its exit status as _rc."""
        command, _ = self.module_command(args, check_mode, diff)
        proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
        return parse(proc)


def parse(proc: subprocess.CompletedProcess) -> dict:
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout)
    result["_rc"] = proc.returncode
    return result


@contextlib.contextmanager
def module_server(name: str, module: str, *, network: str = "none", hostname: str | None = None) -> Iterator[ModuleServer]:
    """Start the server, yield it, remove it (by name). A missing podman or image fails the test
    (skips it with DJSTACK_ALLOW_SKIP=1)."""
    if shutil.which("podman") is None:
        missing_prerequisite("podman is not installed (scripts/bootstrap.sh installs it)")
    if os.geteuid() != 0:
        missing_prerequisite("the throwaway server is a rootful podman container: run the tests as root")
    exists = podman("image", "exists", IMAGE, check=False)
    if exists.returncode != 0:
        missing_prerequisite(f"the local test image {IMAGE} is missing, or podman cannot run "
                             f"({exists.stderr.strip() or 'no such image'}): run `make image`")
    podman("rm", "-f", "-t", "0", name, check=False)
    started = podman("run", "-d", "--name", name, *(["--hostname", hostname] if hostname else []), *RUN_FLAGS,
                     f"--network={network}", IMAGE, check=False)
    try:
        if started.returncode != 0:
            missing_prerequisite(f"podman cannot start a container from {IMAGE}: {started.stderr.strip()}")
        server = ModuleServer(name, module)
        server.exec("systemctl", "is-system-running", "--wait", check=False, timeout=120)
        server.exec("mkdir", "-p", f"{WORK}/lib/ansible")
        podman("cp", str(LIBRARY / f"{module}.py"), f"{name}:{WORK}/{module}.py")
        # What AnsiballZ would ship with the module: Ansible's module_utils, from the controller's Ansible.
        server.exec("touch", f"{WORK}/lib/ansible/__init__.py")
        podman("cp", str(Path(ansible.module_utils.__file__).parent), f"{name}:{WORK}/lib/ansible/module_utils")
        yield server
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
