"""playbooks/base.yml installs every tier's packages in one apt transaction: it must name the
packages of exactly the roles each host will run, as the tier playbooks decide them.

A role that installs packages and is missing from base.yml would still work (its own install step
installs them), but would cost a fresh server another apt transaction; a role named for hosts
that never run it would install packages nobody uses. Both are caught here, for every mix of
groups and both app servers.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Roles that install packages but stay out of the one transaction, and why.
KEPT_OUT = {"solr": "verifies the release archive before it installs Java"}
GROUPS = ["dbservers", "cacheservers", "brokers", "webservers", "workers", "searchservers", "backupservers"]
JINJA = jinja2.Environment()


def load(path: Path):
    return yaml.safe_load(path.read_text())


def roles_with_packages() -> list[str]:
    return sorted(p.parent.parent.name for p in ROOT.glob("roles/*/tasks/install.yml")
                  if "ansible.builtin.apt:" in p.read_text() and p.parent.parent.name != "common")


def true(condition: str | list | bool | None, context: dict) -> bool:
    if condition is None:
        return True
    conditions = condition if isinstance(condition, list) else [condition]
    return all(JINJA.compile_expression(str(c))(**context) for c in conditions)


def tier_conditions() -> dict[str, list[tuple[str, object]]]:
    """role -> [(the play's hosts pattern, the role's when)] for every play of site.yml that runs
    the role's main entry point (a `roles:` entry or an import_role without tasks_from)."""
    found: dict[str, list[tuple[str, object]]] = {}
    for item in load(ROOT / "site.yml"):
        for play in load(ROOT / item["ansible.builtin.import_playbook"]):
            if "hosts" not in play:
                continue
            for role in play.get("roles", []):
                found.setdefault(role["role"], []).append((play["hosts"], role.get("when")))
            for task in play.get("tasks", []):
                imported = task.get("ansible.builtin.import_role")
                if imported and "tasks_from" not in imported:
                    found.setdefault(imported["name"], []).append((play["hosts"], task.get("when")))
    return found


def base_imports() -> dict[str, dict]:
    play = load(ROOT / "playbooks" / "base.yml")[0]
    return {t["ansible.builtin.import_role"]["name"]: t for t in play["pre_tasks"]
            if t.get("ansible.builtin.import_role", {}).get("tasks_from") == "packages"}


def contexts():
    for n in range(len(GROUPS) + 1):
        for groups in itertools.combinations(GROUPS, n):
            for server in ("gunicorn", "apache_wsgi"):
                yield {"group_names": list(groups), "django_app_server": server}


def in_hosts(pattern: str, groups: list[str]) -> bool:
    return any(g == "all" or g in groups for g in pattern.split(":"))


def test_every_role_that_installs_packages_is_named_or_kept_out_for_a_reason():
    named = set(base_imports()) - {"common"}
    assert named | set(KEPT_OUT) == set(roles_with_packages())
    assert not named & set(KEPT_OUT)


@pytest.mark.parametrize("role", sorted(set(roles_with_packages()) - set(KEPT_OUT)))
def test_base_names_a_roles_packages_on_exactly_the_hosts_that_run_the_role(role):
    runs = tier_conditions()[role]
    task = base_imports()[role]
    for context in contexts():
        expected = any(in_hosts(hosts, context["group_names"]) and true(when, context) for hosts, when in runs)
        assert true(task.get("when"), context) == expected, (role, context)


@pytest.mark.parametrize("role", sorted(set(roles_with_packages()) - set(KEPT_OUT)))
def test_a_roles_packages_entry_point_names_what_its_install_step_installs(role):
    tasks = load(ROOT / "roles" / role / "tasks" / "packages.yml")
    assert len(tasks) == 1
    assert tasks[0]["ansible.builtin.set_fact"] == {f"{role}_host_packages": f"{{{{ _{role}_packages_wanted }}}}"}
    install = (ROOT / "roles" / role / "tasks" / ("prefetch.yml" if role == "django_app" else "install.yml")).read_text()
    assert f'name: "{{{{ _{role}_packages_wanted }}}}"' in install


def test_the_one_transaction_gets_every_named_roles_packages_and_keeps_services_stopped():
    installer = base_imports()["common"]
    collected = installer["vars"]["common_host_packages"]
    for role in set(base_imports()) - {"common"}:
        assert f"{role}_host_packages | default([])" in collected, role
    apt = [t for t in load(ROOT / "roles" / "common" / "tasks" / "packages.yml") if "ansible.builtin.apt" in t]
    assert len(apt) == 1 and apt[0]["ansible.builtin.apt"]["policy_rc_d"] == 101
