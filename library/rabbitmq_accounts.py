#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""RabbitMQ vhosts, users, their permissions and users that must not exist, through the broker's
definitions export and import: no password or password hash on any command line."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rabbitmq_accounts
short_description: Ensure RabbitMQ vhosts and users (password, tags, permissions) without a password on a command line
description:
  - Compares the broker's vhosts and users with the ones given and repairs only what differs. A
    missing vhost is created; a missing user is created; a user's password, tags and permissions on
    its vhost are set to the ones given, its permissions on other vhosts and all its topic
    permissions are cleared; the users listed in O(absent_users) (the package's C(guest) by default)
    are deleted.
  - Why this module exists (a domain gap) - no maintained module manages RabbitMQ users without
    putting the password on C(rabbitmqctl)'s command line, where any local user sees it in the
    process list; M(community.rabbitmq.rabbitmq_user) runs C(add_user), C(change_password) and
    C(authenticate_user) with the password as an argument.
  - It uses only RabbitMQ's public interfaces - C(rabbitmqctl export_definitions -) to read the
    broker's definitions (JSON on standard output), C(rabbitmqctl import_definitions <file>) to
    create and update vhosts, users and permissions, and C(rabbitmqctl)'s documented
    C(clear_permissions), C(clear_topic_permissions) and C(delete_user), whose arguments are names
    only. The definitions file (password hashes, no password) lives only while the import runs, in a
    directory only the user C(rabbitmqctl) runs as can read (Debian's wrapper runs it as C(rabbitmq));
    RabbitMQ 4.0 reads no definitions from standard input, and imports a file asynchronously.
  - A password is compared with the stored salted hash (base64 of a 4-byte salt and the hash of the
    salt and the UTF-8 password, with the user's C(hashing_algorithm) - SHA-256, SHA-512 or MD5),
    without calling the broker. A hash in another algorithm counts as different, so the password is
    set again. A password is written as a newly salted SHA-256 hash, never as clear text.
  - After a change the definitions are exported again and compared until the broker applied every
    change (RabbitMQ 4.0 imports in the background); the task fails if it has not within
    O(import_timeout) seconds. An import is not atomic - when it fails, part of it may be applied;
    the next run repairs the rest.
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  node:
    description: Erlang node name of the broker (C(rabbitmqctl --node)), C(name) or C(name@host).
    type: str
    default: rabbit@localhost
  vhosts:
    description: Virtual hosts that must exist. Vhosts not listed are left alone.
    type: list
    elements: str
    default: []
  users:
    description:
      - Users that must exist, each with exactly the permissions given, on one vhost. Users not listed
        (other than O(absent_users)) are left alone.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: User name.
        type: str
        required: true
      password:
        description: The user's password; not empty. It is never logged or returned.
        type: str
        required: true
      vhost:
        description: Vhost the permissions apply to; it must be listed in O(vhosts).
        type: str
        required: true
      configure_priv:
        description: Regular expression of the resources the user may configure.
        type: str
        default: ".*"
      write_priv:
        description: Regular expression of the resources the user may write to.
        type: str
        default: ".*"
      read_priv:
        description: Regular expression of the resources the user may read from.
        type: str
        default: ".*"
      tags:
        description:
          - User tags, for example C(monitoring) or C(administrator); none by default.
          - A comma-separated string is a list too (C(monitoring,policymaker)); empty entries are ignored.
        type: list
        elements: str
        default: []
  import_timeout:
    description: Seconds to wait for the broker to apply an import before the task fails.
    type: int
    default: 60
  absent_users:
    description: Users that must not exist.
    type: list
    elements: str
    default: [guest]
attributes:
  check_mode:
    support: full
    details: The definitions are exported and compared; nothing is written. The result says what would change.
  diff_mode:
    support: none
notes:
  - Runs on the broker's host, as root (C(rabbitmqctl) reads the Erlang cookie).
  - Names (vhosts, users, O(absent_users)) must not be empty, start with C(-), or hold control
    characters, C($), a backquote or a backslash - Debian's C(rabbitmqctl) wrapper passes its
    arguments through a shell. Input is checked before the broker is touched.
  - The passwords are C(no_log) options; the result names what changed and holds no password or
    hash, so the task needs no task-level C(no_log).
  - Tested with RabbitMQ 3.10 (Debian 12).
seealso:
  - module: community.rabbitmq.rabbitmq_user
  - module: community.rabbitmq.rabbitmq_vhost
"""

EXAMPLES = r"""
- name: service | Ensure the vhosts and users, and that guest is gone
  rabbitmq_accounts:
    node: rabbit@localhost
    vhosts: [demoapp]
    users:
      - name: demoapp
        password: "{{ vault_rabbitmq_app_password }}"
        vhost: demoapp
      - name: monitor
        password: "{{ vault_rabbitmq_monitor_password }}"
        vhost: demoapp
        configure_priv: "^$"
        write_priv: "^$"
        tags: [monitoring]
    absent_users: [guest]
"""

RETURN = r"""
vhosts_created:
  description: Vhosts created (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [demoapp]
users_created:
  description: Users created, with their tags and permissions.
  returned: always
  type: list
  elements: str
  sample: [demoapp, monitor]
users_updated:
  description: Existing users that were repaired, each with what differed (C(password), C(tags), C(permissions) on its vhost).
  returned: always
  type: dict
  sample: {"demoapp": ["password", "tags"]}
permissions_cleared:
  description: Permissions of a listed user on a vhost other than its own, cleared.
  returned: always
  type: list
  elements: dict
  sample: [{"user": "monitor", "vhost": "/"}]
topic_permissions_cleared:
  description: Topic permissions of a listed user, cleared (per vhost).
  returned: always
  type: list
  elements: dict
  sample: [{"user": "demoapp", "vhost": "demoapp"}]
users_removed:
  description: Users of O(absent_users) that existed and were deleted.
  returned: always
  type: list
  elements: str
  sample: [guest]
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
WRITTEN_ALGORITHM = "rabbit_password_hashing_sha256"
NODE = re.compile(r"[A-Za-z0-9_.-]+(@[A-Za-z0-9_.-]+)?")
# Debian's /usr/sbin/rabbitmqctl runs `su rabbitmq -c "... \"arg\""`, escaping only double quotes.
UNSAFE = re.compile(r"[\x00-\x1f\x7f$`\\]")
# Names reach rabbitmqctl as arguments too: its Erlang VM reads them as UTF-8 only in a UTF-8 locale.
ENV = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def name_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if name.startswith("-"):
        return "starts with -"
    if UNSAFE.search(name):
        return "holds a control character, $, ` or \\ (Debian's rabbitmqctl passes its arguments through a shell)"
    return None


def tag_list(value) -> list[str]:
    """Tags as a sorted list: from a list or a comma-separated string (both occur in exports)."""
    items = value.split(",") if isinstance(value, str) else (value or [])
    return sorted({part.strip() for item in items for part in str(item).split(",") if part.strip()})


def password_matches(user: dict, password: str) -> bool:
    """Whether the stored hash is of this password: base64(salt(4) + H(salt + UTF-8 password))."""
    hash_function = HASHES.get(user.get("hashing_algorithm") or WRITTEN_ALGORITHM)
    try:
        raw = base64.b64decode(user.get("password_hash") or "", validate=True)
    except (binascii.Error, ValueError):
        return False
    if hash_function is None or len(raw) <= 4:
        return False
    return hmac.compare_digest(raw[4:], hash_function(raw[:4] + password.encode("utf-8")).digest())


def new_hash(password: str) -> str:
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def check_input(module: AnsibleModule, node: str, vhosts: list, users: list, absent: list) -> None:
    """Refuse bad input before rabbitmqctl runs."""
    if not NODE.fullmatch(node):
        module.fail_json(msg=f"node: {node!r} is not an Erlang node name (name or name@host: letters, digits, _ . -)")
    for field, values in (("vhosts", vhosts), ("absent_users", absent),
                          ("users", [u["name"] for u in users]), ("users' vhost", [u["vhost"] for u in users])):
        for value in values:
            problem = name_problem(value)
            if problem:
                module.fail_json(msg=f"{field}: the name {value!r} {problem}")
    names = [u["name"] for u in users]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        module.fail_json(msg=f"users: each user is listed once, with one vhost; listed more than once: {', '.join(duplicates)}")
    both = sorted(set(names) & set(absent))
    if both:
        module.fail_json(msg=f"users and absent_users both name {', '.join(both)}: a user cannot be wanted and unwanted")
    for user in users:
        if not user["password"]:
            module.fail_json(msg=f"users: the password of user {user['name']} is empty")
        if user["vhost"] not in vhosts:
            module.fail_json(msg=f"users: the vhost {user['vhost']!r} of user {user['name']} is not listed in vhosts")


def compare(defs: dict, vhosts: list, users: list, absent: list) -> tuple[dict, dict]:
    """What differs (the result, without secrets) and the definitions document that repairs it."""
    have_vhosts = {v.get("name") for v in defs.get("vhosts") or []}
    have_users = {u.get("name"): u for u in defs.get("users") or []}
    permissions: dict = {}
    for p in defs.get("permissions") or []:
        permissions.setdefault(p.get("user"), {})[p.get("vhost")] = (p.get("configure"), p.get("write"), p.get("read"))
    topics: dict = {}
    for t in defs.get("topic_permissions") or []:
        topics.setdefault(t.get("user"), set()).add(t.get("vhost"))

    result = {"vhosts_created": [], "users_created": [], "users_updated": {}, "permissions_cleared": [],
              "topic_permissions_cleared": [], "users_removed": []}
    doc: dict = {"vhosts": [], "users": [], "permissions": []}
    for vhost in dict.fromkeys(vhosts):
        if vhost not in have_vhosts:
            result["vhosts_created"].append(vhost)
            doc["vhosts"].append({"name": vhost})
    for user in users:
        name, vhost, tags = user["name"], user["vhost"], tag_list(user["tags"])
        wanted = (user["configure_priv"], user["write_priv"], user["read_priv"])
        current = have_users.get(name)
        if current is None:
            result["users_created"].append(name)
            differs = ["password", "tags", "permissions"]
        else:
            differs = [attribute for attribute, same in (
                ("password", password_matches(current, user["password"])),
                ("tags", tag_list(current.get("tags")) == tags),
                ("permissions", permissions.get(name, {}).get(vhost) == wanted)) if not same]
            if differs:
                result["users_updated"][name] = differs
        if "password" in differs or "tags" in differs:
            doc["users"].append({"name": name, "password_hash": new_hash(user["password"]),
                                 "hashing_algorithm": WRITTEN_ALGORITHM, "tags": tags})
        if "permissions" in differs:
            doc["permissions"].append({"user": name, "vhost": vhost, "configure": wanted[0],
                                       "write": wanted[1], "read": wanted[2]})
        result["permissions_cleared"] += [{"user": name, "vhost": other}
                                          for other in sorted(permissions.get(name, {})) if other != vhost]
        result["topic_permissions_cleared"] += [{"user": name, "vhost": other} for other in sorted(topics.get(name, ()))]
    result["users_removed"] = [name for name in dict.fromkeys(absent) if name in have_users]
    return result, doc


class Broker:
    """rabbitmqctl against one node; a failure ends the module with rabbitmqctl's error output."""

    def __init__(self, module: AnsibleModule, node: str):
        self.module, self.node, self.wrote = module, node, False
        self.rabbitmqctl = module.get_bin_path("rabbitmqctl")
        if self.rabbitmqctl is None:
            module.fail_json(msg="rabbitmq_accounts runs rabbitmqctl, which is not on this host: install rabbitmq-server first")

    def run(self, *args: str, data: str | None = None, writes: bool = True, shown: str | None = None) -> str:
        rc, out, err = self.module.run_command([self.rabbitmqctl, "--node", self.node, "--quiet", *args],
                                               data=data, binary_data=True, environ_update=ENV)
        if rc != 0:
            # Only stderr: the standard output of export_definitions holds password hashes.
            self.module.fail_json(msg=f"rabbitmqctl {shown or ' '.join(args)} on node {self.node} failed (exit {rc}): "
                                      f"{err.strip() or '(no error output)'}", rc=rc, stderr=err, changed=self.wrote)
        self.wrote = self.wrote or writes
        return out

    def import_definitions(self, doc: dict) -> None:
        """Import a definitions document from a file only the user rabbitmqctl runs as can read: Debian's
        wrapper runs it as rabbitmq when called as root. The file goes as soon as the command returns."""
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("rabbitmq")
            except KeyError:
                owner = None
        directory = tempfile.mkdtemp(prefix="rabbitmq-accounts-")
        try:
            path = os.path.join(directory, "definitions.json")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(doc, handle)
            if owner:
                os.chown(path, owner.pw_uid, owner.pw_gid)
                os.chown(directory, owner.pw_uid, owner.pw_gid)
            self.run("import_definitions", path, shown="import_definitions")  # the file is gone by then
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def definitions(self) -> dict:
        out = self.run("export_definitions", "-", writes=False)
        try:
            defs = json.loads(out)
        except ValueError:
            defs = None
        if not isinstance(defs, dict):
            self.module.fail_json(msg=f"rabbitmqctl export_definitions on node {self.node} printed no JSON "
                                      f"definitions document ({len(out)} characters)")
        return defs


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            node=dict(type="str", default="rabbit@localhost"),
            vhosts=dict(type="list", elements="str", default=[]),
            users=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                    vhost=dict(type="str", required=True),
                    configure_priv=dict(type="str", default=".*"),
                    write_priv=dict(type="str", default=".*"),
                    read_priv=dict(type="str", default=".*"),
                    tags=dict(type="list", elements="str", default=[]),
                ),
            ),
            absent_users=dict(type="list", elements="str", default=["guest"]),
            import_timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    p = module.params
    node, vhosts, users, absent = p["node"], p["vhosts"], p["users"], p["absent_users"]
    check_input(module, node, vhosts, users, absent)

    broker = Broker(module, node)
    result, doc = compare(broker.definitions(), vhosts, users, absent)
    # Any error message that quotes the document is masked like the passwords.
    module.no_log_values.update(u["password_hash"] for u in doc["users"])
    for key in ("permissions_cleared", "topic_permissions_cleared"):
        for entry in result[key]:
            problem = name_problem(entry["vhost"])
            if problem:
                module.fail_json(msg=f"user {entry['user']} has permissions on the vhost {entry['vhost']!r}, whose name "
                                     f"{problem}: clear them by hand; nothing was changed", **result)
    changed = any(result.values())
    if changed and not module.check_mode:
        if any(doc.values()):
            broker.import_definitions(doc)
        for entry in result["permissions_cleared"]:
            broker.run("clear_permissions", "-p", entry["vhost"], entry["user"])
        for entry in result["topic_permissions_cleared"]:
            broker.run("clear_topic_permissions", "-p", entry["vhost"], entry["user"])
        for name in result["users_removed"]:
            broker.run("delete_user", name)
        deadline = time.monotonic() + p["import_timeout"]
        while True:
            left, _ = compare(broker.definitions(), vhosts, users, absent)
            if not any(left.values()):
                break
            if time.monotonic() > deadline:
                module.fail_json(msg=f"node {node} still differs {p['import_timeout']} s after the repair (import_timeout): "
                                     f"{json.dumps(left, sort_keys=True)}", changed=True, **result)
            time.sleep(1)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
