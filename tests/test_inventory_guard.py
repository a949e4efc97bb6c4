"""A forgotten -i fails at once and clearly, instead of acting on a default inventory."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(p for p in (ROOT / "playbooks").glob("*.yml")
                      if p.name not in {"inventory-check.yml", "verify-web.yml", "verify-processes.yml"})


def test_ansible_cfg_names_no_inventory():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    assert not cfg.has_option("defaults", "inventory")


@pytest.mark.parametrize("playbook", ENTRY_POINTS, ids=lambda p: p.name)
def test_every_entry_playbook_checks_the_inventory_first(playbook):
    first = yaml.safe_load(playbook.read_text())[0]
    assert first.get("ansible.builtin.import_playbook") == "inventory-check.yml", playbook.name


def test_site_yml_without_an_inventory_fails_naming_the_fix():
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    env.pop("ANSIBLE_INVENTORY", None)
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "site.yml"], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode != 0
    assert "No inventory" in result.stdout + result.stderr and "-i inventories/" in result.stdout + result.stderr
    assert "PLAY [Provision the base host]" not in result.stdout
