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
  - With O(switch_to), makes that release current. C(previous) is set to the release that was
    current, then C(current) is replaced by renaming a temporary symbolic link over it, so a
    reader sees the old or the new target, never a missing link.
  - With O(keep), removes all but the newest O(keep) releases, never the current or the previous
    one, then the virtualenvs and archives that no remaining release uses.
  - Without O(switch_to) or O(keep) the module only reads.
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
  description: With O(content_id), the release for that content (existing or new).
  returned: when content_id is given
  type: str
  sample: 20261124T101500Z-3f2a9c41d0be
new:
  description: With O(content_id), true when no release of that content exists yet.
  returned: when content_id is given
  type: bool
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
            switch_to=dict(type="str"),
            keep=dict(type="int"),
        ),
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
