"""Every role documents and validates its whole interface.

defaults/main.yml and meta/argument_specs.yml must list the same variables, every
public variable carries the role's prefix and a comment, and every template starts
with the ansible_managed header.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())


def load(path: Path):
    return yaml.safe_load(path.read_text()) or {}


def test_every_expected_role_exists():
    assert {"common", "postgresql", "memcached", "django_app", "gunicorn", "nginx"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_role_has_the_standard_files(role):
    base = ROOT / "roles" / role
    for rel in ("defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml", "README.md"):
        assert (base / rel).is_file(), f"{role}: {rel} is missing"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_have_the_same_keys(role):
    base = ROOT / "roles" / role
    defaults = set(load(base / "defaults/main.yml"))
    spec = load(base / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    required = {name for name, opt in spec.items() if opt.get("required")}
    assert defaults | required == set(spec), (
        f"{role}: only in defaults: {sorted(defaults - set(spec))}; "
        f"only in argument_specs: {sorted(set(spec) - defaults - required)}"
    )
    assert not (defaults & required), f"{role}: required variables must have no default: {sorted(defaults & required)}"


@pytest.mark.parametrize("role", ROLES)
def test_every_option_is_typed_and_described(role):
    spec = load(ROOT / "roles" / role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    for name, opt in spec.items():
        assert opt.get("type"), f"{role}: {name} has no type"
        assert opt.get("description"), f"{role}: {name} has no description"
        if opt["type"] == "list":
            assert opt.get("elements"), f"{role}: list {name} has no elements type"


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_are_prefixed_and_commented(role):
    path = ROOT / "roles" / role / "defaults/main.yml"
    lines = path.read_text().splitlines()
    for name in load(path):
        assert name.startswith(role + "_"), f"{role}: {name} lacks the {role}_ prefix"
        idx = next(i for i, line in enumerate(lines) if line.startswith(name + ":"))
        above = [line for line in lines[max(0, idx - 8):idx] if line.strip()]
        assert any(line.lstrip().startswith("#") for line in above), f"{role}: {name} has no comment"


@pytest.mark.parametrize("role", ROLES)
def test_templates_start_with_ansible_managed(role):
    for tpl in (ROOT / "roles" / role / "templates").rglob("*.j2"):
        head = tpl.read_text().splitlines()[:2]
        assert any("ansible_managed" in line for line in head), f"{tpl.relative_to(ROOT)} has no ansible_managed header"


@pytest.mark.parametrize("role", ROLES)
def test_readme_lists_every_variable(role):
    readme = (ROOT / "roles" / role / "README.md").read_text()
    spec = load(ROOT / "roles" / role / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    missing = [name for name in spec if name not in readme]
    assert not missing, f"{role}/README.md does not document {missing}"
