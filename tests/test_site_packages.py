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
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = Path(__file__).resolve().parents[1]
# Roles that install packages but stay out of the one transaction, and why.
KEPT_OUT = {"solr": "verifies the release archive before it installs Java"}
GROUPS = ["dbservers", "cacheservers", "brokers", "webservers", "workers", "searchservers", "backupservers",
          "loadbalancers"]
JINJA = jinja2.Environment()


def load(path: Path):
    return yaml.safe_load(path.read_text())


def apt_tasks(path: Path) -> list[dict]:
    """The ansible.builtin.apt tasks of a task file, blocks included."""
    found = []
    for task in load(path) or []:
        found += apt_tasks_in(task)
    return found


def apt_tasks_in(task: dict) -> list[dict]:
    if "block" in task:
        return [t for sub in task["block"] for t in apt_tasks_in(sub)]
    return [task] if "ansible.builtin.apt" in task else []


def roles_with_packages() -> list[str]:
    return sorted(p.parent.parent.name for p in ROOT.glob("roles/*/tasks/install.yml")
                  if apt_tasks(p) and p.parent.parent.name != "common")


def render(role: str, template: str, extra: dict) -> object:
    """A template evaluated as Ansible evaluates it in the role: its defaults and vars, and `extra`."""
    variables = {}
    for part in ("defaults", "vars"):
        path = ROOT / "roles" / role / part / "main.yml"
        variables.update(load(path) or {} if path.exists() else {})
    variables.update(extra)
    trusted = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in variables.items()}
    return Templar(loader=DataLoader(), variables=trusted).template(trust_as_template(template))


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
    play = next(p for p in load(ROOT / "playbooks" / "base.yml") if "hosts" in p)
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


# The inputs that change what a role installs: the users' extra packages, and the app's source.
PACKAGE_INPUTS = [{}, {"postgresql_extra_packages": ["postgresql-contrib"], "memcached_extra_packages": ["libmemcached-tools"],
                       "nginx_extra_packages": ["nginx-extras"], "rabbitmq_extra_packages": ["rabbitmq-extra"],
                       "django_app_source": "git", "backup_postgresql_client_version": 17,
                       "nginx_tls_mode": "acme"}]


@pytest.mark.parametrize("extra", PACKAGE_INPUTS, ids=["defaults", "extras"])
@pytest.mark.parametrize("role", sorted(set(roles_with_packages()) - set(KEPT_OUT)))
def test_a_roles_packages_entry_point_names_what_its_install_step_installs(role, extra):
    """The packages the entry point names for the one transaction are, for the same variables, the
    packages the role's own install step installs: base.yml's transaction leaves it nothing to do."""
    (named,) = [t["ansible.builtin.set_fact"][f"{role}_host_packages"]
                for t in load(ROOT / "roles" / role / "tasks" / "packages.yml")]
    (install,) = apt_tasks(ROOT / "roles" / role / "tasks" / "install.yml")
    named_packages = render(role, named, extra)
    assert named_packages and isinstance(named_packages, list)
    assert sorted(named_packages) == sorted(render(role, install["ansible.builtin.apt"]["name"], extra))


def test_the_one_transaction_gets_every_named_roles_packages_and_keeps_services_stopped():
    installer = base_imports()["common"]
    named = {f"{role}_host_packages": [f"pkg-of-{role}"] for role in set(base_imports()) - {"common"}}
    collected = render("common", installer["vars"]["common_host_packages"], named)
    assert sorted(collected) == sorted(p for packages in named.values() for p in packages)
    # A host in no tier: nothing named, nothing but the base packages.
    assert render("common", installer["vars"]["common_host_packages"], {}) == []
    (apt,) = apt_tasks(ROOT / "roles" / "common" / "tasks" / "packages.yml")
    assert apt["ansible.builtin.apt"]["policy_rc_d"] == 101
    base = render("common", "{{ _common_packages }}", {})
    assert sorted(render("common", apt["ansible.builtin.apt"]["name"], {"common_host_packages": ["nginx"]})) == sorted(base + ["nginx"])
