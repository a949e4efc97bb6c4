#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Pick, switch and prune the releases of a release-based Django deploy."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: django_release
short_description: Name a release for some content, switch C(current) atomically, keep the last N releases
description:
  - Works on an app root laid out as C(releases/<id>/) (one directory per release, C(id) =
    C(<UTC time>-<content id>), so names sort by age), C(venvs/<hash>/) (virtualenvs, linked from
    C(releases/<id>/.venv)), C(archives/<content id>.tar.gz) (shipped archives), and the symbolic
    links C(current) (the release being served) and C(previous) (the one served before it).
  - With O(content_id), returns the name of the newest existing release of that content, or a new
    name for it (C(<timestamp>-<content_id>)); nothing is created.
  - With O(release), tells what putting that release live would change, RV(live) (it is current
    already) and RV(venv_changes) (it runs from another virtualenv than the current one, so an
    app server must restart, as a reload keeps the old packages loaded).
  - With O(rollback_to), chooses the release a rollback goes back to (that id, or C(previous) when
    empty) and works out, from the C(.release.json) that each release wrote when it went live, the
    migration each app of the current release must go back to (RV(migration_targets)). Fails,
    changing nothing, when there is nothing to roll back to or a record is missing.
  - With O(switch_to), makes that release current. C(previous) is set to the release that was
    current, then C(current) is replaced by renaming a temporary symbolic link over it, so a
    reader sees the old or the new target, never a missing link.
  - With O(keep), removes all but the newest O(keep) releases, never the current or the previous
    one, then the virtualenvs and archives that no remaining release uses.
  - Without O(switch_to) or O(keep) the module only reads.
  - A release that went live records, in C(releases/<id>/.release.json), its id (key C(release))
    and the leaf migrations of its code (key C(migrations), a list of C(app.migration) names).
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  root:
    description: The app root holding C(releases/), C(venvs/), C(archives/), C(current) and C(previous).
    type: path
    required: true
  content_id:
    description:
      - Id of the release's content (the archive's hash or the git commit), letters, digits, C(.) and C(_).
      - The result RV(release_id) is the newest release named C(*-<content_id>), or a new name.
    type: str
  timestamp:
    description:
      - UTC time (C(YYYYMMDDTHHMMSSZ)) a new release name starts with; give one value to every host
        of a deploy so their release names match. Defaults to now.
    type: str
  release:
    description: Release id to describe (RV(live), RV(venv_changes)); read only.
    type: str
  rollback_to:
    description:
      - Release id a rollback goes back to; the empty string means the one C(previous) points to.
      - Read only; the switch itself is O(switch_to).
    type: str
  switch_to:
    description: Release id (a directory under C(releases/)) to make current.
    type: str
  keep:
    description:
      - Number of releases to keep (at least 2, so that a rollback target survives); the current and
        the previous release are always kept on top of the newest ones.
    type: int
attributes:
  check_mode:
    support: full
    details: Reports what would be switched or removed and changes nothing.
  diff_mode:
    support: full
    details: Shows the targets of C(current) and C(previous) before and after.
notes:
  - The switch is a C(rename(2)) of a symbolic link, atomic on the same filesystem. Processes that
    resolved C(current) before the switch keep running the old code until they are reloaded.
"""

EXAMPLES = r"""
- name: Name the release of this archive
  django_release:
    root: /srv/demoapp
    content_id: "{{ archive.id }}"
  register: release

- name: Read what putting it live changes
  django_release:
    root: /srv/demoapp
    release: "{{ release.release_id }}"
  register: plan

- name: Choose the release a rollback goes back to, and the migrations to unapply
  django_release:
    root: /srv/demoapp
    rollback_to: ""
  register: rollback

- name: Make it current and keep the last five releases
  django_release:
    root: /srv/demoapp
    switch_to: "{{ release.release_id }}"
    keep: 5
  register: switch
  notify: "reload django app"
"""

RETURN = r"""
release_id:
  description: With O(content_id), the release for that content (existing or new); with O(rollback_to), the release to go back to.
  returned: when content_id or rollback_to is given
  type: str
  sample: 20261124T101500Z-3f2a9c41d0be
new:
  description: With O(content_id), true when no release of that content exists yet.
  returned: when content_id is given
  type: bool
live:
  description: With O(release), true when that release is the one being served already.
  returned: when release is given
  type: bool
venv_changes:
  description: >-
    With O(release), true when that release runs from another virtualenv than the current one (or when
    nothing is current yet).
  returned: when release is given
  type: bool
rollback_from:
  description: With O(rollback_to), the release being served, which the rollback leaves.
  returned: when rollback_to is given
  type: str
migration_targets:
  description:
    - With O(rollback_to), per app of the current release whose recorded state differs from the older
      release's, the migration to go back to (C(zero) for an app the older release does not have).
  returned: when rollback_to is given
  type: list
  elements: dict
  sample: [{"app": "notes", "migration": "0002_note_tags"}, {"app": "jobs", "migration": "zero"}]
current:
  description: Release id C(current) points to after the run (null when there is none).
  returned: always
  type: str
  sample: 20261124T101500Z-3f2a9c41d0be
previous:
  description: Release id C(previous) points to after the run (null when there is none).
  returned: always
  type: str
switched_from:
  description: Release id that was current before O(switch_to) changed it (null when nothing was switched).
  returned: always
  type: str
venv_changed:
  description: True when the switch changed the virtualenv the current release runs from (a reload is then not enough).
  returned: always
  type: bool
releases:
  description: Release ids after the run, oldest first.
  returned: always
  type: list
  elements: str
removed:
  description: Paths removed (or, in check mode, that would be removed) by O(keep).
  returned: always
  type: list
  elements: str
"""

import json
import os
import re
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CONTENT_RE = re.compile(r"^[A-Za-z0-9._]+$")
STAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")


def link_target_id(path):
    """Basename of a symlink's target, or None when there is no link."""
    if not os.path.islink(path):
        return None
    return os.path.basename(os.readlink(path).rstrip("/"))


def list_releases(releases_dir):
    if not os.path.isdir(releases_dir):
        return []
    return sorted(name for name in os.listdir(releases_dir)
                  if not name.startswith(".") and os.path.isdir(os.path.join(releases_dir, name)))


def venv_of(releases_dir, release):
    """Resolved virtualenv of a release (its .venv link), or None."""
    if not release:
        return None
    link = os.path.join(releases_dir, release, ".venv")
    return os.path.realpath(link) if os.path.islink(link) else None


def atomic_symlink(target, path):
    """Point the symlink `path` at `target` by renaming a temporary link over it."""
    tmp = os.path.join(os.path.dirname(path), ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, path)


def plan_removals(root, releases, keep, protected):
    """Paths that pruning to `keep` releases removes: old releases, then unused venvs and archives."""
    releases_dir = os.path.join(root, "releases")
    kept = set(releases[-keep:]) | {r for r in protected if r}
    doomed = [r for r in releases if r not in kept]
    remaining = [r for r in releases if r in kept]
    paths = [os.path.join(releases_dir, r) for r in doomed]

    used_venvs = {venv_of(releases_dir, r) for r in remaining}
    venvs_dir = os.path.join(root, "venvs")
    if os.path.isdir(venvs_dir):
        for name in sorted(os.listdir(venvs_dir)):
            path = os.path.join(venvs_dir, name)
            if os.path.realpath(path) not in used_venvs:
                paths.append(path)

    used_content = {r.split("-", 1)[1] for r in remaining if "-" in r}
    archives_dir = os.path.join(root, "archives")
    if os.path.isdir(archives_dir):
        for name in sorted(os.listdir(archives_dir)):
            content = name.split(".tar", 1)[0]
            if content not in used_content:
                paths.append(os.path.join(archives_dir, name))
    return paths


def read_record(releases_dir, release):
    """The migrations a release recorded when it went live (its .release.json), or None."""
    path = os.path.join(releases_dir, release, ".release.json")
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    migrations = record.get("migrations") if isinstance(record, dict) else None
    if not isinstance(migrations, list) or not all(isinstance(m, str) and "." in m for m in migrations):
        return None
    return migrations


def migration_targets(older, newer):
    """Where each app of the newer release's leaves goes back to, to reach the older release's state.

    Both are lists of "app.migration" leaves. An app whose leaf is the same in both is left out; an
    app the older release does not have goes back to "zero".
    """
    older_by_app = {}
    for leaf in older:
        app, name = leaf.split(".", 1)
        older_by_app[app] = name
    targets = []
    for leaf in newer:
        app = leaf.split(".", 1)[0]
        goal = older_by_app.get(app, "zero")
        if "%s.%s" % (app, goal) not in newer and {"app": app, "migration": goal} not in targets:
            targets.append({"app": app, "migration": goal})
    return targets


def plan_rollback(module, releases_dir, releases, current, previous, wanted):
    """release_id, rollback_from and migration_targets of a rollback to `wanted` ("" = previous)."""
    target = wanted or previous
    if not current:
        module.fail_json(msg="django_release: nothing to roll back: no release is current", releases=releases)
    if not target:
        module.fail_json(msg="django_release: nothing to roll back to: no previous release, and rollback_to is empty",
                         current=current, releases=releases)
    if target not in releases:
        module.fail_json(msg="django_release: cannot roll back to %s: no such release (releases: %s)"
                         % (target, ", ".join(releases) or "none"), current=current, releases=releases)
    if target == current:
        module.fail_json(msg="django_release: %s is the release being served already" % target,
                         current=current, releases=releases)
    records = {r: read_record(releases_dir, r) for r in (target, current)}
    missing = [r for r in (target, current) if records[r] is None]
    if missing:
        module.fail_json(msg="django_release: cannot roll back from %s to %s: %s recorded no migration state "
                             "(releases/<id>/.release.json): it never went live through this role"
                             % (current, target, " and ".join(missing)), current=current, releases=releases)
    return dict(release_id=target, rollback_from=current,
                migration_targets=migration_targets(records[target], records[current]))


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            content_id=dict(type="str"),
            timestamp=dict(type="str"),
            release=dict(type="str"),
            rollback_to=dict(type="str"),
            switch_to=dict(type="str"),
            keep=dict(type="int"),
        ),
        mutually_exclusive=[("content_id", "release", "rollback_to")],
        supports_check_mode=True,
    )
    p = module.params
    root = p["root"]
    releases_dir = os.path.join(root, "releases")
    current_link = os.path.join(root, "current")
    previous_link = os.path.join(root, "previous")

    if p["content_id"] is not None and not CONTENT_RE.match(p["content_id"]):
        module.fail_json(msg="django_release: content_id %r may hold only letters, digits, '.' and '_'" % p["content_id"])
    if p["timestamp"] is not None and not STAMP_RE.match(p["timestamp"]):
        module.fail_json(msg="django_release: timestamp %r is not a UTC time like 20261124T101500Z" % p["timestamp"])
    if p["keep"] is not None and p["keep"] < 2:
        module.fail_json(msg="django_release: keep=%d would leave no rollback target; keep at least 2 releases" % p["keep"])
    for name in ("release", "rollback_to"):
        if p[name] and not ID_RE.match(p[name]):
            module.fail_json(msg="django_release: %s %r is not a release id" % (name, p[name]))
    if p["switch_to"] is not None:
        if not ID_RE.match(p["switch_to"]) or "/" in p["switch_to"]:
            module.fail_json(msg="django_release: switch_to %r is not a release id" % p["switch_to"])
        if not os.path.isdir(os.path.join(releases_dir, p["switch_to"])):
            module.fail_json(msg="django_release: switch_to %s: there is no release directory %s"
                             % (p["switch_to"], os.path.join(releases_dir, p["switch_to"])),
                             releases=list_releases(releases_dir))

    releases = list_releases(releases_dir)
    current = link_target_id(current_link)
    previous = link_target_id(previous_link)
    result = dict(changed=False, current=current, previous=previous, switched_from=None, venv_changed=False,
                  removed=[], releases=releases)
    before = dict(current=current, previous=previous)

    if p["content_id"]:
        existing = [r for r in releases if r.endswith("-" + p["content_id"])]
        if existing:
            result.update(release_id=existing[-1], new=False)
        else:
            stamp = p["timestamp"] or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            result.update(release_id="%s-%s" % (stamp, p["content_id"]), new=True)

    if p["release"]:
        result.update(live=p["release"] == current,
                      venv_changes=venv_of(releases_dir, current) is None
                      or venv_of(releases_dir, current) != venv_of(releases_dir, p["release"]))

    if p["rollback_to"] is not None:
        result.update(plan_rollback(module, releases_dir, releases, current, previous, p["rollback_to"]))

    target = p["switch_to"]
    if target and target != current:
        result.update(changed=True, switched_from=current,
                      venv_changed=venv_of(releases_dir, current) != venv_of(releases_dir, target))
        # previous first: if the run stops in between, current is still the old release.
        new_previous = current if current else previous
        if not module.check_mode:
            try:
                if new_previous and new_previous != previous:
                    atomic_symlink(os.path.join("releases", new_previous), previous_link)
                atomic_symlink(os.path.join("releases", target), current_link)
            except OSError as exc:
                module.fail_json(msg="django_release: cannot switch %s to %s: %s" % (current_link, target, exc), **result)
        current, previous = target, new_previous
        result.update(current=current, previous=previous)

    if p["keep"] is not None:
        paths = plan_removals(root, releases, p["keep"], [current, previous])
        if paths:
            result.update(changed=True, removed=paths)
            if not module.check_mode:
                for path in paths:
                    try:
                        remove(path)
                    except OSError as exc:
                        module.fail_json(msg="django_release: cannot remove %s: %s" % (path, exc), **result)
        result["releases"] = [r for r in releases if os.path.join(releases_dir, r) not in paths]

    if module._diff and (before["current"], before["previous"]) != (current, previous):
        result["diff"] = dict(
            before="current -> %s\nprevious -> %s\n" % (before["current"], before["previous"]),
            after="current -> %s\nprevious -> %s\n" % (current, previous),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
