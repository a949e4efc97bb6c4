"""library/installed_packages.py, run for real as Ansible runs it, against this machine's dpkg
database (the project's machines are Debian 12), and compared with dpkg-query itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from module_run import run_module

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian host")


def run(tmp_path: Path, env: dict | None = None, check_mode: bool = False) -> dict:
    return run_module("installed_packages", tmp_path, {}, check_mode, env=env)


def dpkg_status(name: str) -> tuple[str, str]:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Status}\t${Version}", name],
                         capture_output=True, text=True, check=False).stdout
    status, _, version = out.partition("\t")
    return status, version


def test_lists_installed_packages_with_their_versions_as_package_facts_does(tmp_path):
    result = run(tmp_path)
    assert result["_rc"] == 0 and result["changed"] is False
    packages = result["ansible_facts"]["packages"]
    assert len(packages) > 50
    # dpkg itself is always installed: same version as dpkg-query reports.
    status, version = dpkg_status("dpkg")
    assert status == "install ok installed"
    assert packages["dpkg"] == [{"name": "dpkg", "version": version, "arch": packages["dpkg"][0]["arch"],
                                 "source": "dpkg"}]


def test_only_fully_installed_packages_are_listed(tmp_path):
    packages = run(tmp_path)["ansible_facts"]["packages"]
    every = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Status}\n"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    installed = {line.split("\t")[0] for line in every if line.endswith(" installed")}
    others = {line.split("\t")[0] for line in every if not line.endswith(" installed")}
    assert set(packages) == installed
    assert not set(packages) & (others - installed)


def test_check_mode_reads_the_same(tmp_path):
    assert run(tmp_path, check_mode=True)["ansible_facts"] == run(tmp_path)["ansible_facts"]


def test_without_dpkg_query_it_fails_saying_so(tmp_path):
    result = run(tmp_path, env=dict(os.environ, PATH=str(tmp_path)))
    assert result["_rc"] == 1 and result["failed"] is True
    assert "dpkg-query" in result["msg"]
