#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Converge a role's set of files, directories and links in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: managed_files
short_description: Converge a set of files, directories and symbolic links in one module run
description:
  - Brings every entry of O(files), in order, to its state, which is a regular file with the given content
    (rendered on the controller, typically with C(lookup('ansible.builtin.template', ...))), a
    directory, a symbolic link, or nothing. Owner, group and mode are set where they differ.
  - It replaces what would otherwise be one C(ansible.builtin.template), C(copy) or C(file) task item
    per path. Each of those is two module runs (a stat, then the file's attributes) and three shell
    round trips on a converged host; this module is one run for the whole set, which is what makes
    an idempotent converge of the stack fast.
  - A file is written to a temporary file next to its destination, checked with O(files[].validate)
    when given, and renamed over the destination, so readers see the old or the new content, never
    a partial one. Content that is already there is neither validated nor written again.
  - The result is changed when any entry changed. Group entries by the handler they notify.
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  files:
    description: The entries, converged in the order given (a directory before the files in it).
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path on the managed host.
        type: path
        required: true
      state:
        description:
          - V(file), a regular file holding O(files[].content); V(directory), created with its parents
            when missing; V(link), a symbolic link to O(files[].src), replacing a file or link already
            there (never a directory); V(absent), removed (a directory with what it holds).
        type: str
        choices: [file, directory, link, absent]
        default: file
      content:
        description:
          - The file's whole content (with O(files[].state=file), this or O(files[].secret_content)).
        type: str
      secret_content:
        description:
          - The file's whole content when it is a secret (a key, a cookie, a file of passwords), in
            place of O(files[].content), for a task that also writes files whose diff you want to see.
          - Ansible masks its value wherever it would appear in the output (C(no_log) for this
            option only), and the diff says only whether it changed, never what it holds.
        type: str
      src:
        description: The link's target (required with O(files[].state=link)); not resolved.
        type: str
      owner:
        description: Owner (name or uid). Unset keeps the current owner (root for a new entry).
        type: str
      group:
        description: Group (name or gid). Unset keeps the current group.
        type: str
      mode:
        description: Octal mode as a quoted string (V("0640")); not applied to links.
        type: raw
      validate:
        description:
          - Command that checks the new content before it replaces the file; C(%s) stands for the
            temporary file's path. A failing command fails the task and leaves the file as it was.
        type: str
  report_unlisted:
    description:
      - Directories to look through for entries that match O(report_unlisted[].patterns) and are not
        in O(files), without touching them (RV(unlisted)). That is what a role wrote once and no longer
        wants, for the tasks that follow to stop or remove, in their own order.
      - Replaces a separate M(ansible.builtin.find) run after the files are written.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the directory (a missing directory holds nothing).
        type: path
        required: true
      patterns:
        description: Shell-style patterns matched against the names of the directory's entries.
        type: list
        elements: str
        required: true
attributes:
  check_mode:
    support: full
    details: Reports which entries would change; writes nothing and runs no O(files[].validate).
  diff_mode:
    support: full
    details: A diff per changed entry (content of files, type of entry, owner, group and mode).
notes:
  - A file's or link's parent directory must exist, or be an earlier entry of O(files); in check
    mode a missing parent (one a package still to be installed creates) counts as would-create.
  - Content is text (UTF-8); ship binary files with M(ansible.builtin.copy).
seealso:
  - module: ansible.builtin.template
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: configure | Write the memcached settings
  managed_files:
    files:
      - path: /etc/memcached.conf
        content: "{{ lookup('ansible.builtin.template', 'etc/memcached.conf.j2') }}"
        mode: "0644"
  notify: Restart memcached

- name: configure | Lay out the app's directories and the site link
  managed_files:
    files:
      - {path: /srv/demoapp, state: directory, mode: "0755"}
      - {path: /srv/demoapp/shared, state: directory, owner: demoapp, group: demoapp, mode: "0750"}
      - {path: /etc/nginx/sites-enabled/demoapp.conf, state: link, src: /etc/nginx/sites-available/demoapp.conf}
      - {path: /etc/nginx/sites-enabled/default, state: absent}

- name: configure | Write the broker's settings and its Erlang cookie (masked in the output and the diff)
  managed_files:
    files:
      - path: /etc/rabbitmq/rabbitmq.conf
        content: "{{ lookup('ansible.builtin.template', 'etc/rabbitmq/rabbitmq.conf.j2') }}"
        mode: "0640"
      - path: /var/lib/rabbitmq/.erlang.cookie
        secret_content: "{{ rabbitmq_erlang_cookie }}"
        owner: rabbitmq
        group: rabbitmq
        mode: "0400"
  notify: Restart rabbitmq

- name: configure | Write the worker units and report the ones written before that are no longer wanted
  managed_files:
    files:
      - path: /etc/systemd/system/celery-worker@default.service.d
        state: directory
    report_unlisted:
      - path: /etc/systemd/system
        patterns: ["celery-worker@*.service.d"]
  register: _units  # _units.unlisted: directories of the workers to stop and remove

- name: configure | Write the sshd settings, checked by sshd before they replace the old ones
  managed_files:
    files:
      - path: /etc/ssh/sshd_config.d/50-django-stack.conf
        content: "{{ lookup('ansible.builtin.template', 'etc/ssh/sshd_config.d/50-django-stack.conf.j2') }}"
        mode: "0644"
        validate: /usr/sbin/sshd -t -f %s
  notify: Reload sshd
"""

RETURN = r"""
files:
  description: One entry per path, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The path.
      type: str
    state:
      description: The state asked for.
      type: str
    changed:
      description: Whether the entry changed (or would change, in check mode).
      type: bool
  sample: [{"path": "/etc/memcached.conf", "state": "file", "changed": true}]
changed_paths:
  description: The paths that changed (or would change, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/etc/memcached.conf"]
unlisted:
  description:
    - Paths in the O(report_unlisted) directories that match their patterns and are not in O(files),
      sorted.
  returned: always
  type: list
  elements: str
  sample: ["/etc/systemd/system/celery-worker@reports.service.d"]
"""

import fnmatch
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native

FILE_SPEC = dict(
    path=dict(type="path", required=True),
    state=dict(type="str", choices=["file", "directory", "link", "absent"], default="file"),
    content=dict(type="str"),
    secret_content=dict(type="str", no_log=True),
    src=dict(type="str"),
    owner=dict(type="str"),
    group=dict(type="str"),
    mode=dict(type="raw"),
    validate=dict(type="str"),
)


def kind_of(path: str) -> str:
    """What is at path now: absent, link, directory, file (anything else counts as file)."""
    if os.path.islink(path):
        return "link"
    if not os.path.lexists(path):
        return "absent"
    return "directory" if os.path.isdir(path) else "file"


class Converger:
    def __init__(self, module: AnsibleModule):
        self.module = module
        self.check = module.check_mode
        self.diffs: list[dict] = []
        # Paths that exist only "on paper" in check mode (a directory that would be created).
        self.virtual: set[str] = set()

    def fail(self, entry: dict, msg: str, **extra) -> None:
        self.module.fail_json(msg=f"{entry['path']}: {msg}", path=entry["path"], **extra)

    def attributes(self, entry: dict, changed: bool, link: bool = False) -> bool:
        path = entry["path"]
        if path in self.virtual:
            return changed
        diff: dict = {"before": {"path": path}, "after": {"path": path}}
        args = self.module.load_file_common_arguments(
            dict(path=path, owner=entry["owner"], group=entry["group"], mode=None if link else entry["mode"]))
        # Links: owner and group of the link itself (lchown), never of its target.
        changed = self.module.set_owner_if_different(path, args["owner"], changed, diff, expand=False)
        changed = self.module.set_group_if_different(path, args["group"], changed, diff, expand=False)
        if not link:
            changed = self.module.set_mode_if_different(path, args["mode"], changed, diff, expand=False)
        if len(diff["before"]) > 1:
            self.diffs.append(dict(diff, before_header=f"{path} (attributes)", after_header=f"{path} (attributes)"))
        return changed

    def parent_missing(self, entry: dict) -> bool:
        """True in check mode when the parent directory is not there yet (a package still to be
        installed creates it, or an earlier entry would): the entry would be created. Outside
        check mode a missing parent fails the task."""
        parent = os.path.dirname(entry["path"].rstrip("/")) or "/"
        if os.path.isdir(parent):
            return False
        if self.check:
            self.virtual.add(entry["path"].rstrip("/"))
            self.type_change(entry["path"], "absent", entry["state"])
            return True
        self.fail(entry, f"the parent directory {parent} does not exist (list it earlier as a directory entry)")
        return True

    def type_change(self, path: str, before: str, after: str) -> None:
        self.diffs.append({"before_header": path, "after_header": path,
                           "before": {"path": path, "state": before}, "after": {"path": path, "state": after}})

    def file(self, entry: dict) -> bool:
        path, secret = entry["path"], entry["secret_content"] is not None
        content = entry["secret_content"] if secret else entry["content"]
        if self.parent_missing(entry):
            return True
        new = to_bytes(content, errors="surrogate_or_strict")
        now = kind_of(path)
        if now == "directory":
            self.fail(entry, "is a directory; refusing to replace it with a file")
        old = None
        if now == "file":
            with open(path, "rb") as handle:
                old = handle.read()
        if now == "link":
            self.type_change(path, "link", "file")
        changed = old != new or now == "link"
        if changed and secret:
            # Whether it changed, never what it holds (before or after).
            self.diffs.append({"before_header": path, "after_header": path,
                               "before": {"path": path, "secret_content": "(absent)" if old is None else "(secret)"},
                               "after": {"path": path, "secret_content": "(secret, changed)"}})
        elif changed:
            self.diffs.append({"before_header": path if old is not None else "/dev/null", "after_header": path,
                               "before": to_native(old, errors="surrogate_then_replace") if old is not None else "",
                               "after": content})
        if changed:
            if not self.check:
                self.write(entry, new, replace_link=now == "link")
        if self.check and now == "absent":
            return True
        return self.attributes(entry, changed)

    def write(self, entry: dict, data: bytes, replace_link: bool) -> None:
        path = entry["path"]
        if entry["validate"]:
            self.validate(entry, data)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            if replace_link:
                os.unlink(path)
            # A new file gets the umask's mode and root's ownership; the attributes are set right after.
            self.module.atomic_move(tmp, path, keep_dest_attrs=not replace_link)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def validate(self, entry: dict, data: bytes) -> None:
        """Run the validate command on a copy under the module's private temporary directory (so
        that what the command leaves behind, such as py_compile's __pycache__, is removed with it)."""
        command = entry["validate"]
        candidate = os.path.join(tempfile.mkdtemp(dir=self.module.tmpdir), os.path.basename(entry["path"]))
        with open(candidate, "wb") as handle:
            handle.write(data)
        rc, out, err = self.module.run_command(command % candidate)
        if rc != 0:
            self.fail(entry, f"validation failed, the file was left as it was: {command!r} exited {rc}: "
                             f"{(err or out).strip()}", rc=rc, stdout=out, stderr=err)

    def directory(self, entry: dict) -> bool:
        path = entry["path"]
        now = kind_of(path)
        if now == "directory":
            return self.attributes(entry, False)
        if now != "absent":
            self.fail(entry, f"is a {now}; refusing to replace it with a directory")
        self.type_change(path, "absent", "directory")
        if self.check:  # os.makedirs creates missing parents too: no parent check
            self.virtual.add(path.rstrip("/"))
            return True
        os.makedirs(path)
        return self.attributes(entry, True)

    def link(self, entry: dict) -> bool:
        path, src = entry["path"], entry["src"]
        if self.parent_missing(entry):
            return True
        now = kind_of(path)
        if now == "directory":
            self.fail(entry, "is a directory; refusing to replace it with a link")
        changed = now != "link" or os.readlink(path) != src
        if changed:
            before = os.readlink(path) if now == "link" else now
            self.diffs.append({"before_header": path, "after_header": path,
                               "before": {"path": path, "state": now, "src": before if now == "link" else None},
                               "after": {"path": path, "state": "link", "src": src}})
            if self.check:
                return True
            tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.link")
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(src, tmp)
            os.replace(tmp, path)  # atomic: the old entry or the new link, never nothing
        return self.attributes(entry, changed, link=True)

    def absent(self, entry: dict) -> bool:
        path = entry["path"]
        now = kind_of(path)
        if now == "absent":
            return False
        self.type_change(path, now, "absent")
        if not self.check:
            if now == "directory":
                shutil.rmtree(path)
            else:
                os.unlink(path)
        return True

    @staticmethod
    def unlisted(directories: list[dict], listed: set[str]) -> list[str]:
        found = []
        for directory in directories:
            base = directory["path"].rstrip("/") or "/"
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(base, name)
                if path not in listed and any(fnmatch.fnmatchcase(name, p) for p in directory["patterns"]):
                    found.append(path)
        return sorted(set(found))

    def check_input(self, entry: dict) -> None:
        """Fail on an entry that cannot be converged (before any entry is)."""
        if not os.path.isabs(entry["path"]):
            self.fail(entry, "path must be absolute")
        if entry["state"] == "file":
            if entry["content"] is not None and entry["secret_content"] is not None:
                self.fail(entry, "give content or secret_content, not both")
            if entry["content"] is None and entry["secret_content"] is None:
                self.fail(entry, "state=file needs content (or secret_content)")
        if entry["state"] == "link" and not entry["src"]:
            self.fail(entry, "state=link needs src")
        if entry["validate"] and "%s" not in entry["validate"]:
            self.fail(entry, f"validate must contain %s (got {entry['validate']!r})")

    def run(self, entry: dict) -> bool:
        return getattr(self, entry["state"])(entry)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=FILE_SPEC),
            report_unlisted=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path", required=True),
                patterns=dict(type="list", elements="str", required=True),
            )),
        ),
        supports_check_mode=True,
    )
    # Bad input fails before anything is changed.
    for directory in module.params["report_unlisted"]:
        if not os.path.isabs(directory["path"]):
            module.fail_json(msg=f"report_unlisted: {directory['path']}: path must be absolute")
    converger = Converger(module)
    for entry in module.params["files"]:
        converger.check_input(entry)
    results = []
    for entry in module.params["files"]:
        try:
            changed = converger.run(entry)
        except OSError as exc:
            module.fail_json(msg=f"{entry['path']}: {exc.strerror or exc}", path=entry["path"])
        results.append({"path": entry["path"], "state": entry["state"], "changed": bool(changed)})
    changed_paths = [r["path"] for r in results if r["changed"]]
    listed = {entry["path"].rstrip("/") for entry in module.params["files"]}
    unlisted = converger.unlisted(module.params["report_unlisted"], listed)
    result = dict(changed=bool(changed_paths), files=results, changed_paths=changed_paths, unlisted=unlisted)
    if module._diff:
        result["diff"] = converger.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
