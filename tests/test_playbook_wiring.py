"""Every play that runs a role entry point reading a variable the stack wires (playbooks/vars/wiring.yml)
loads that wiring: without it the role falls back to its all-in-one defaults (Solr on 127.0.0.1, the
database on the socket), which are wrong on a split inventory. Found by a restore and a deploy whose
Solr step asked 127.0.0.1 on a worker where Solr listens on its private address only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WIRED = yaml.safe_load((ROOT / "playbooks" / "vars" / "wiring.yml").read_text())["stack_wired_variables"]
INCLUDE = re.compile(r"(?:include_tasks|import_tasks):\s*(?:file:\s*)?([\w./-]+\.yml)")


def reads_wired(role: str, entry: str, seen: set | None = None) -> set[str]:
    """The wired variables an entry point's tasks (and the task files they include) name."""
    seen = seen if seen is not None else set()
    path = ROOT / "roles" / role / "tasks" / entry
    if path in seen or not path.exists():
        return set()
    seen.add(path)
    text = path.read_text()
    found = {name for name in WIRED if re.search(rf"\b{name}\b", text)}
    # Through the role's own derived variables (vars/main.yml), such as solr's _solr_base_url.
    for name, names in derived(role).items():
        if re.search(rf"\b{name}\b", text):
            found |= names
    for included in INCLUDE.findall(text):
        found |= reads_wired(role, included, seen)
    return found


def derived(role: str) -> dict[str, set[str]]:
    """The role's vars/main.yml variables made from wired ones, and which."""
    path = ROOT / "roles" / role / "vars" / "main.yml"
    values = yaml.safe_load(path.read_text()) if path.exists() else None
    return {key: {name for name in WIRED if re.search(rf"\b{name}\b", str(value))}
            for key, value in (values or {}).items()
            if any(re.search(rf"\b{name}\b", str(value)) for name in WIRED)}


def entry_points(tasks: list) -> set[tuple[str, str]]:
    found = set()
    for task in tasks or []:
        for key in ("ansible.builtin.import_role", "ansible.builtin.include_role"):
            if key in task:
                found.add((task[key]["name"], task[key].get("tasks_from", "main") + ".yml"))
        for key in ("block", "rescue", "always"):
            found |= entry_points(task.get(key))
    return found


def plays():
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            if isinstance(play, dict) and "hosts" in play:
                yield pytest.param(path, play, id=f"{path.name}:{play.get('name', '?')}")


@pytest.mark.parametrize(("path", "play"), list(plays()))
def test_a_play_running_a_wired_entry_point_loads_the_wiring(path, play):
    entries = {(r if isinstance(r, str) else r.get("role", r.get("name")), "main.yml") for r in play.get("roles", [])}
    for key in ("pre_tasks", "tasks", "post_tasks"):
        entries |= entry_points(play.get(key))
    wired = {f"{role}/{entry}": sorted(reads_wired(role, entry)) for role, entry in entries if role != "stack"}
    wired = {k: v for k, v in wired.items() if v}
    if not wired:
        return
    where = f"{path.name}: {play.get('name')} runs {wired}"
    assert "vars/wiring.yml" in play.get("vars_files", []), f"{where} without vars/wiring.yml"
    assert ("stack", "wiring.yml") in entries, f"{where} without the stack role's wiring"
