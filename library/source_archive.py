#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Build a reproducible tar.gz of a source tree, named after its content hash."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: source_archive
short_description: Build a reproducible, content-addressed tar.gz of a source directory
description:
  - Packs a local directory (typically a Django project on the controller) into a gzip-compressed
    tar archive whose bytes depend only on the files' paths, contents, modes and modification
    times, never on when or where it was built.
  - The archive is named C(<name>-<id>.tar.gz), where C(id) is the first 12 hex digits of the
    SHA-256 of the archive. The same tree always gives the same id, so the id can name a release.
  - Run it on the controller, with C(delegate_to) set to C(localhost) and C(run_once) set to true.
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  src:
    description: Directory to pack.
    type: path
    required: true
  dest_dir:
    description: Directory the archive is written to; created when missing.
    type: path
    required: true
  name:
    description: Prefix of the archive file name.
    type: str
    default: source
  exclude:
    description:
      - Shell-style patterns of files and directories to leave out. A pattern that starts with
        C(/) is anchored at O(src) and matched against the whole relative path (C(/media) is the
        top-level C(media) directory only); any other pattern is matched against every path
        component (C(__pycache__) anywhere).
    type: list
    elements: str
    default: [".git", "__pycache__", "*.pyc", ".venv", "/venv", "node_modules", "/*.sqlite3", "/media", ".env"]
attributes:
  check_mode:
    support: full
    details: In check mode the id is computed but no file is written.
  diff_mode:
    support: none
notes:
  - Symbolic links are stored as links; other special files are skipped.
"""

EXAMPLES = r"""
- name: Pack the app on the controller
  source_archive:
    src: "{{ playbook_dir }}/../examples/demoapp"
    dest_dir: "~/.cache/django-stack/archives"
    name: demoapp
  delegate_to: localhost
  run_once: true
  become: false
  register: app_archive

- name: Ship it
  ansible.builtin.copy:
    src: "{{ app_archive.path }}"
    dest: "/srv/demoapp/archives/{{ app_archive.id }}.tar.gz"
    mode: "0644"
"""

RETURN = r"""
path:
  description: Absolute path of the archive on the machine the module ran on.
  returned: always
  type: str
  sample: /root/.cache/django-stack/archives/demoapp-3f2a9c41d0be.tar.gz
id:
  description: First 12 hex digits of the archive's SHA-256; stable for an unchanged tree.
  returned: always
  type: str
  sample: 3f2a9c41d0be
sha256:
  description: Full SHA-256 of the archive.
  returned: always
  type: str
files:
  description: Number of regular files packed.
  returned: always
  type: int
  sample: 42
"""

import fnmatch
import gzip
import hashlib
import io
import os
import tarfile

from ansible.module_utils.basic import AnsibleModule


def is_excluded(relpath, patterns):
    """True when a pattern excludes the relative path.

    "/name" is anchored at the root and matches the whole relative path; any other
    pattern matches any single path component.
    """
    parts = relpath.split(os.sep)
    for pattern in patterns:
        if pattern.startswith("/"):
            if fnmatch.fnmatch(relpath, pattern[1:]):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def collect(src, patterns):
    """Sorted list of (relpath, fullpath) to pack, directories included."""
    entries = []
    for root, dirs, files in os.walk(src):
        rel_root = os.path.relpath(root, src)
        kept_dirs = []
        for d in sorted(dirs):
            rel = os.path.normpath(os.path.join(rel_root, d))
            if not is_excluded(rel, patterns):
                kept_dirs.append(d)
                entries.append((rel, os.path.join(root, d)))
        dirs[:] = kept_dirs
        for f in sorted(files):
            rel = os.path.normpath(os.path.join(rel_root, f))
            if not is_excluded(rel, patterns):
                entries.append((rel, os.path.join(root, f)))
    entries.sort()
    return entries


def build(src, patterns):
    """Return (archive bytes, number of regular files)."""
    raw = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, full in collect(src, patterns):
            info = tar.gettarinfo(full, arcname=rel)
            if not (info.isfile() or info.isdir() or info.issym()):
                continue
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = int(info.mtime)
            info.pax_headers = {}
            if info.isfile():
                count += 1
                with open(full, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    out = io.BytesIO()
    # mtime=0 and no file name in the gzip header: the bytes depend on the content only.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue(), count


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest_dir=dict(type="path", required=True),
            name=dict(type="str", default="source"),
            exclude=dict(
                type="list",
                elements="str",
                default=[".git", "__pycache__", "*.pyc", ".venv", "/venv", "node_modules",
                         "/*.sqlite3", "/media", ".env"],
            ),
        ),
        supports_check_mode=True,
    )
    src = module.params["src"]
    dest_dir = module.params["dest_dir"]
    name = module.params["name"]
    if not os.path.isdir(src):
        module.fail_json(msg="source_archive: src %r is not a directory on this machine" % src)
    if "/" in name or not name:
        module.fail_json(msg="source_archive: name must be a non-empty file name prefix, got %r" % name)

    try:
        data, count = build(src, module.params["exclude"])
    except OSError as exc:
        module.fail_json(msg="source_archive: cannot read %s: %s" % (src, exc))
    digest = hashlib.sha256(data).hexdigest()
    ident = digest[:12]
    path = os.path.join(dest_dir, "%s-%s.tar.gz" % (name, ident))
    result = dict(changed=False, path=path, id=ident, sha256=digest, files=count)

    if os.path.exists(path):
        module.exit_json(**result)
    result["changed"] = True
    if module.check_mode:
        module.exit_json(**result)
    try:
        os.makedirs(dest_dir, exist_ok=True)
        tmp = path + ".tmp.%d" % os.getpid()
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        module.fail_json(msg="source_archive: cannot write %s: %s" % (path, exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
