"""A throwaway systemd server for running one of library/'s modules for real: a container from the
project's local test image (the machine running the tests has no systemd as PID 1), with the
module and Ansible's module_utils copied in, run as AnsiballZ would run it."""

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

IMAGE = os.environ.get("DJSTACK_IMAGE", "localhost/djstack-debian:bookworm")
LIBRARY = Path(__file__).resolve().parents[1] / "library"
# Not /tmp: with --systemd=always podman mounts a tmpfs there, which `podman cp` does not write into.
WORK = "/opt/djstack-test"


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, **kw)


class ModuleServer:
    def __init__(self, name: str, module: str):
        self.name, self.module = name, module

    def exec(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return podman("exec", *(["-i"] if "input" in kw else []), self.name, *cmd, check=check, **kw)

    def run(self, args: dict, check_mode: bool = False, diff: bool = False) -> dict:
        """The module's result, with its exit status as _rc."""
        argfile = f"{WORK}/args-{uuid.uuid4().hex}.json"
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)})
        self.exec("sh", "-c", f"cat > {argfile}", input=payload)
        proc = podman("exec", "-e", f"PYTHONPATH={WORK}/lib", self.name, "python3", f"{WORK}/{self.module}.py", argfile,
                      check=False, timeout=300)
        assert proc.stdout, proc.stderr
        result = json.loads(proc.stdout)
        result["_rc"] = proc.returncode
        return result


@contextlib.contextmanager
def module_server(name: str, module: str, *, network: str = "none", hostname: str | None = None) -> Iterator[ModuleServer]:
    """Start the server (skip the test when podman or the image is missing), yield it, remove it."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/bootstrap.sh installs it)")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.skip(f"the local test image {IMAGE} is missing: run `make image`")
    podman("rm", "-f", "-t", "0", name, check=False)
    podman("run", "-d", "--name", name, *(["--hostname", hostname] if hostname else []), "--systemd=always",
           "--runtime=runc", f"--network={network}", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
           IMAGE)
    try:
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
