"""Roles are read and run alone: each reads only its own variables, the playbooks wire them
together from django_app's export, docs/architecture.md's ownership table says exactly what the
playbooks do, and no handler decides what to do from another task's register.

These read the Jinja in the roles and playbooks (every variable a template or a task argument
uses), not their wording."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import jinja2.nodes
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
ENV = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
# Task keys whose values are bare Jinja expressions, without {{ }}.
BARE = {"when", "that", "changed_when", "failed_when", "until"}


def names_in(template: str) -> set[str]:
    """Variables a Jinja template reads (not those it sets itself, nor loop variables)."""
    try:
        tree = ENV.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise AssertionError(f"cannot parse {template[:200]!r}: {exc}") from exc
    stored = {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx in ("store", "param")}
    return {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx == "load"} - stored


def yaml_names(node, key: str | None = None) -> set[str]:
    """Variables read by the Jinja in a YAML document's strings."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            found |= yaml_names(v, str(k))
    elif isinstance(node, list):
        for v in node:
            found |= yaml_names(v, key)
    elif isinstance(node, str):
        if key in BARE and "{{" not in node:
            found |= names_in("{{ " + node + " }}")
        elif "{{" in node or "{%" in node:
            found |= names_in(node)
    elif isinstance(node, bool) or node is None:
        pass
    return found


def role_files(role: str) -> list[Path]:
    base = ROOT / "roles" / role
    return sorted(p for sub in ("defaults", "vars", "tasks", "handlers", "templates")
                  for p in (base / sub).rglob("*") if p.is_file())


def names_read_by(path: Path) -> set[str]:
    if path.suffix == ".j2":
        return names_in(path.read_text())
    return yaml_names(yaml.safe_load(path.read_text()))


def owner(name: str) -> str | None:
    """The role whose prefix a variable carries (role_x or _role_x), if any."""
    bare = name.lstrip("_")
    matches = [r for r in ROLES if bare.startswith(r + "_")]
    return max(matches, key=len) if matches else None


@pytest.mark.parametrize("role", ROLES)
def test_a_role_reads_no_other_roles_variables(role):
    foreign = sorted({f"{path.relative_to(ROOT)}: {name}" for path in role_files(role)
                      for name in names_read_by(path) if owner(name) not in (None, role)})
    assert not foreign, "a role reads another role's variables (pass them through its own):\n" + "\n".join(foreign)


def test_the_walk_sees_the_roles_jinja():
    """A walk that found nothing would pass the test above vacuously."""
    read = names_read_by(ROOT / "roles" / "gunicorn" / "templates" / "etc" / "systemd" / "system"
                         / "gunicorn@.service.d" / "app.conf.j2")
    assert {"gunicorn_user", "gunicorn_env_file", "gunicorn_virtualenv"} <= read
    assert "_celery_units_of_host" in names_read_by(ROOT / "roles" / "celery" / "handlers" / "main.yml")


# --- docs/architecture.md's ownership table against what the playbooks pass ----------------------

def export_fields() -> dict[str, set[str]]:
    """django_app_export's fields and the django_app variables each one is made of."""
    export = yaml.safe_load((ROOT / "roles" / "django_app" / "vars" / "main.yml").read_text())["django_app_export"]
    return {field: names_in(str(value)) for field, value in export.items()}


def wiring_in_playbooks() -> dict[str, set[str]]:
    """export field -> the role variables the playbooks set from it (`vars:` of role entries and imports)."""
    wired: dict[str, set[str]] = {}

    def walk(node):
        if isinstance(node, dict):
            for name, value in (node.get("vars") or {}).items():
                for field in re.findall(r"django_app_export\.([a-z0-9_]+)", str(value)):
                    wired.setdefault(field, set()).add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        walk(yaml.safe_load(path.read_text()))
    return wired


def ownership_table() -> dict[str, tuple[set[str], set[str]]]:
    """export field -> (django_app variables it comes from, role variables it is passed to)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Who owns which variable", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = (set(re.findall(r"`([a-z0-9_]+)`", cells[1])),
                                         set(re.findall(r"`([a-z0-9_]+)`", cells[2])))
    return rows


def test_the_ownership_table_lists_every_field_of_the_export_and_what_it_is_made_of():
    table = ownership_table()
    fields = export_fields()
    assert set(table) == set(fields), f"table rows {sorted(table)} != django_app_export fields {sorted(fields)}"
    wrong = {f: (sorted(table[f][0]), sorted(made)) for f, made in fields.items() if table[f][0] != made}
    assert not wrong, f"the table's 'from' column differs from roles/django_app/vars/main.yml: {wrong}"


def test_the_ownership_table_names_exactly_what_the_playbooks_pass():
    table = ownership_table()
    wired = wiring_in_playbooks()
    assert len(wired) >= 10, "the walk found too little wiring to be looking in the right place"
    unknown = set(wired) - set(export_fields())
    assert not unknown, f"the playbooks read fields django_app_export does not have: {sorted(unknown)}"
    differ = {f: {"table": sorted(table.get(f, ((), ()))[1]), "playbooks": sorted(wired.get(f, set()))}
              for f in set(table) | set(wired) if table.get(f, ((), set()))[1] != wired.get(f, set())}
    assert not differ, f"docs/architecture.md's table and the playbooks disagree: {differ}"


# --- handlers: notified by what changed, never deciding from a register ----------------------------

def registers() -> set[str]:
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("register"), str):
                found.add(node["register"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("playbooks/*.yml")]:
        walk(yaml.safe_load(path.read_text()))
    return found


def derived_from(names: set[str], definitions: dict[str, set[str]]) -> set[str]:
    """Every variable `names` read, following the role variables they are defined from."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += definitions.get(name, ())
    return seen


@pytest.mark.parametrize("role", [r for r in ROLES if (ROOT / "roles" / r / "handlers" / "main.yml").exists()])
def test_no_handler_reads_a_register(role):
    definitions = {}
    for path in (ROOT / "roles" / role / "vars").glob("*.yml"):
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            definitions[name] = yaml_names(value)
    handlers = yaml.safe_load((ROOT / "roles" / role / "handlers" / "main.yml").read_text())
    regs = registers()
    assert regs, "no register found: the walk is looking in the wrong place"
    for handler in handlers:
        read = derived_from(yaml_names(handler), definitions)
        assert not read & regs, f"{role} handler {handler['name']!r} reads the register(s) {sorted(read & regs)}"


# --- README: one heading scheme, and the handlers said where a reader looks for them -------------

SECTIONS = ["Requirements", "Variables", "Handlers", "Tags", "Check mode", "Example", "License"]


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_follows_the_common_heading_scheme(role):
    text = (ROOT / "roles" / role / "README.md").read_text()
    assert text.startswith(f"# Role `{role}`\n"), f"{role}/README.md must start with '# Role `{role}`'"
    headings = re.findall(r"^## (.+)$", text, re.M)
    positions = [headings.index(s) if s in headings else -1 for s in SECTIONS]
    assert -1 not in positions, f"{role}/README.md lacks {[s for s, p in zip(SECTIONS, positions) if p < 0]}"
    assert positions == sorted(positions), f"{role}/README.md: sections out of order: {headings}"
    assert headings[positions[0]:] == SECTIONS, (
        f"{role}/README.md: from Requirements on, the sections are exactly {SECTIONS} (got {headings[positions[0]:]})")


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_handlers_section_names_every_handler_and_topic(role):
    path = ROOT / "roles" / role / "handlers" / "main.yml"
    handlers = yaml.safe_load(path.read_text()) if path.exists() else []
    section = (ROOT / "roles" / role / "README.md").read_text().split("\n## Handlers\n", 1)[1].split("\n## ", 1)[0]
    for handler in handlers or []:
        assert f"`{handler['name']}`" in section, f"{role}/README.md's Handlers section does not name {handler['name']!r}"
        listen = handler.get("listen") or []
        for topic in [listen] if isinstance(listen, str) else listen:
            assert f"`{topic}`" in section, f"{role}/README.md's Handlers section does not name the topic {topic!r}"


def role_uses_in_playbooks():
    """(playbook, role, entry point, the vars passed) for every role entry and import_role."""
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()):
            for entry in play.get("roles", []):
                yield path.name, entry["role"], "main", set(entry.get("vars") or {})
            for task in play.get("pre_tasks", []) + play.get("tasks", []):
                imported = task.get("ansible.builtin.import_role")
                if imported:
                    yield path.name, imported["name"], imported.get("tasks_from", "main"), set(task.get("vars") or {})


def test_every_use_of_a_role_passes_the_app_values_its_entry_point_requires():
    """Ansible would stop such a run at the role's argument check; this finds it without a server."""
    wired_names = {name for _, consumers in ownership_table().values() for name in consumers}
    uses = list(role_uses_in_playbooks())
    assert len(uses) > 20
    missing = []
    for playbook, role, entry, passed in uses:
        specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        options = (specs.get(entry) or {}).get("options") or {}
        needed = {name for name, opt in options.items() if opt.get("required") and name in wired_names}
        if needed - passed:
            missing.append(f"{playbook}: {role}/{entry} lacks {sorted(needed - passed)}")
    assert not missing, "\n".join(missing)
