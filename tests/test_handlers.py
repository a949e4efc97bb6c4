"""Every `notify:` in the roles and playbooks names a handler, or a topic a handler listens to.
Ansible reports a missing one only when the notifying task changes something, which may be a
rare path (the app server switch, say): this finds it without running anything."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def handler_names() -> set[str]:
    names = set()
    for path in ROOT.glob("roles/*/handlers/*.yml"):
        for handler in yaml.safe_load(path.read_text()) or []:
            names.add(handler["name"])
            listen = handler.get("listen") or []
            names.update([listen] if isinstance(listen, str) else listen)
    return names


def notifications(node, where: str, found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        if "notify" in node:
            notify = node["notify"]
            found += [(where, name) for name in ([notify] if isinstance(notify, str) else notify)]
        for value in node.values():
            notifications(value, where, found)
    elif isinstance(node, list):
        for value in node:
            notifications(value, where, found)
    return found


def test_every_notify_has_a_handler():
    files = [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("playbooks/*.yml"), ROOT / "site.yml"]
    found: list[tuple[str, str]] = []
    for path in files:
        notifications(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT)), found)
    assert len(found) > 20, "the walk found too few notify: entries to be looking in the right place"
    names = handler_names()
    missing = sorted({f"{where}: {name}" for where, name in found if name not in names})
    assert not missing, "notify names no handler or listen topic:\n" + "\n".join(missing)
