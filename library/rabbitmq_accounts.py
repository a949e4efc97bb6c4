#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""RabbitMQ vhosts, users, their permissions, and users that must not exist: one rabbitmqctl call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rabbitmq_accounts
short_description: Ensure RabbitMQ vhosts and users (password, tags, permissions) in one rabbitmqctl call
description:
  - Compares the broker's vhosts and users with the ones given and repairs what differs. A missing
    vhost is created; a missing user is created; a user's password, tags and permissions are set to
    the ones given, its permissions on other vhosts and its topic permissions are cleared; the users
    listed in O(absent_users) (the package's C(guest) by default) are deleted.
  - The whole comparison and every repair run inside one C(rabbitmqctl eval), on the node itself.
    M(community.rabbitmq.rabbitmq_vhost) and M(community.rabbitmq.rabbitmq_user) call C(rabbitmqctl)
    once per object read or written, and each call boots an Erlang VM (about 1 s each; a vhost, a
    user and the guest user cost 11 to 17 s on a fresh server, and 5 s to find nothing to do).
  - The password is compared by logging in with it (the broker stores a salted hash), so the
    module reports changed only when a password really differs.
  - The program reaches C(rabbitmqctl) on its standard input, never in its arguments, so no password
    shows up in a process list. Strings reach Erlang as byte lists, so no name or password can
    break out of them.
version_added: "1.0.0"
author:
  - django-stack maintainers
options:
  node:
    description: Erlang node name of the broker (C(rabbitmqctl --node)).
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
        description: The user's password.
        type: str
        required: true
      vhost:
        description: Vhost the permissions apply to; it must exist or be listed in O(vhosts).
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
  absent_users:
    description: Users that must not exist.
    type: list
    elements: str
    default: [guest]
attributes:
  check_mode:
    support: full
    details: The same C(rabbitmqctl eval) runs with its writes switched off and reports what it would change.
  diff_mode:
    support: none
notes:
  - Runs on the broker's host, as root (C(rabbitmqctl) reads the Erlang cookie).
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
  no_log: true
"""

RETURN = r"""
changes:
  description: What was changed (in check mode, what would be), in the order it was done; empty when nothing differed.
  returned: always
  type: list
  elements: str
  sample: ["vhost demoapp: created", "user demoapp: created", "user demoapp: permissions on demoapp set", "user guest: deleted"]
"""

import re

from ansible.module_utils.basic import AnsibleModule

ACTING_USER = "django-stack"

# The program `rabbitmqctl eval` runs on the node. The module puts its data first (Apply, Vhosts,
# Users, Absent); it evaluates to a list of {Change, Index} tuples (Index into Vhosts, Users or
# Absent), so that no name has to be parsed back out of Erlang's printout. With Apply = false it
# only compares. A failing write raises {failed, Change, Reason}: rabbitmqctl exits non-zero.
PROGRAM = r"""
Acting = __ACTING__,
Do = fun(Change, Write) ->
    case Apply of
        false -> Change;
        true ->
            case catch Write() of
                ok -> Change;
                {ok, _} -> Change;
                {'EXIT', {Reason, _Stack}} -> erlang:error({failed, Change, Reason});
                Other -> erlang:error({failed, Change, Other})
            end
    end
end,
Indexed = fun(List) -> lists:zip(lists:seq(0, length(List) - 1), List) end,
VhostChanges = [Do({vhost_added, I}, fun() -> rabbit_vhost:add(V, Acting) end)
                || {I, V} <- Indexed(Vhosts), not rabbit_vhost:exists(V)],
UserChanges = fun({I, {Name, Password, Tags, Vhost, Conf, Write, Read}}) ->
    Wanted = [{vhost, Vhost}, {configure, Conf}, {write, Write}, {read, Read}],
    case rabbit_auth_backend_internal:lookup_user(Name) of
        {ok, User} ->
            PasswordOk = element(1, rabbit_access_control:check_user_pass_login(Name, Password)) =:= ok,
            TagsNow = lists:sort([atom_to_binary(T, utf8) || T <- internal_user:get_tags(User)]),
            Permissions = rabbit_auth_backend_internal:list_user_permissions(Name),
            Topics = rabbit_auth_backend_internal:list_user_topic_permissions(Name),
            [Do({password_changed, I}, fun() -> rabbit_auth_backend_internal:change_password(Name, Password, Acting) end)
             || not PasswordOk]
            ++ [Do({tags_set, I}, fun() -> rabbit_auth_backend_internal:set_tags(Name, [binary_to_atom(T, utf8) || T <- Tags], Acting) end)
                || TagsNow =/= Tags]
            ++ [Do({permissions_set, I}, fun() -> rabbit_auth_backend_internal:set_permissions(Name, Vhost, Conf, Write, Read, Acting) end)
                || not lists:member(Wanted, Permissions)]
            ++ [Do({permissions_cleared, I}, fun() -> rabbit_auth_backend_internal:clear_permissions(Name, proplists:get_value(vhost, P), Acting) end)
                || P <- Permissions, proplists:get_value(vhost, P) =/= Vhost]
            ++ [Do({topic_permissions_cleared, I}, fun() -> rabbit_auth_backend_internal:clear_topic_permissions(Name, V, Acting) end)
                || V <- lists:usort([proplists:get_value(vhost, T) || T <- Topics])];
        _ ->
            [Do({user_added, I}, fun() -> rabbit_auth_backend_internal:add_user(Name, Password, Acting) end)]
            ++ [Do({tags_set, I}, fun() -> rabbit_auth_backend_internal:set_tags(Name, [binary_to_atom(T, utf8) || T <- Tags], Acting) end)
                || Tags =/= []]
            ++ [Do({permissions_set, I}, fun() -> rabbit_auth_backend_internal:set_permissions(Name, Vhost, Conf, Write, Read, Acting) end)]
    end
end,
AbsentChanges = [Do({user_deleted, I}, fun() -> rabbit_auth_backend_internal:delete_user(Name, Acting) end)
                 || {I, Name} <- Indexed(Absent), element(1, rabbit_auth_backend_internal:lookup_user(Name)) =:= ok],
VhostChanges ++ lists:append([UserChanges(U) || U <- Indexed(Users)]) ++ AbsentChanges.
"""

# Erlang's printout of the result: [{vhost_added,0},...] (rabbitmqctl's Erlang formatter).
CHANGE = re.compile(r"\{\s*([a-z_]+)\s*,\s*(\d+)\s*\}")

DESCRIBE = {
    "vhost_added": ("vhost", "created"),
    "user_added": ("user", "created"),
    "password_changed": ("user", "password changed"),
    "tags_set": ("user", "tags set"),
    "permissions_set": ("user", "permissions on {vhost} set"),
    "permissions_cleared": ("user", "permissions on other vhosts cleared"),
    "topic_permissions_cleared": ("user", "topic permissions cleared"),
    "user_deleted": ("absent", "deleted"),
}


def binary(value: str) -> str:
    """An Erlang binary literal of the UTF-8 bytes of value: safe for any character."""
    data = value.encode("utf-8")
    return "<<" + ",".join(str(b) for b in data) + ">>" if data else "<<>>"


def erlang_list(items) -> str:
    return "[" + ", ".join(items) + "]"


def program(apply: bool, vhosts: list[str], users: list[dict], absent: list[str]) -> str:
    user_terms = []
    for user in users:
        tags = sorted(set(t.strip() for t in user["tags"] if t.strip()))
        fields = [binary(user["name"]), binary(user["password"]), erlang_list(binary(t) for t in tags),
                  binary(user["vhost"]), binary(user["configure_priv"]), binary(user["write_priv"]),
                  binary(user["read_priv"])]
        user_terms.append("{" + ", ".join(fields) + "}")
    data = (
        f"Apply = {'true' if apply else 'false'},\n"
        f"Vhosts = {erlang_list(binary(v) for v in vhosts)},\n"
        f"Users = {erlang_list(user_terms)},\n"
        f"Absent = {erlang_list(binary(a) for a in absent)},"
    )
    return data + PROGRAM.replace("__ACTING__", binary(ACTING_USER))


def describe(out: str, vhosts: list[str], users: list[dict], absent: list[str]) -> list[str]:
    changes = []
    for code, index in CHANGE.findall(out):
        kind, text = DESCRIBE[code]
        i = int(index)
        if kind == "vhost":
            changes.append(f"vhost {vhosts[i]}: {text}")
        elif kind == "user":
            changes.append(f"user {users[i]['name']}: {text.format(vhost=users[i]['vhost'])}")
        else:
            changes.append(f"user {absent[i]}: {text}")
    return changes


def check_input(module: AnsibleModule, vhosts: list[str], users: list[dict], absent: list[str]) -> None:
    names = [u["name"] for u in users]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        module.fail_json(msg=f"users: each user is listed once, with one vhost; listed more than once: {', '.join(duplicates)}")
    both = sorted(set(names) & set(absent))
    if both:
        module.fail_json(msg=f"users and absent_users both name {', '.join(both)}: a user cannot be wanted and unwanted")
    for field, values in (("vhosts", vhosts), ("absent_users", absent)):
        if any(not v for v in values):
            module.fail_json(msg=f"{field}: an entry is empty")
    for user in users:
        for key in ("name", "password", "vhost"):
            if not user[key]:
                module.fail_json(msg=f"users: the {key} of user {user['name'] or '(unnamed)'} is empty")


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
        ),
        supports_check_mode=True,
    )
    p = module.params
    vhosts, users, absent = p["vhosts"], p["users"], p["absent_users"]
    check_input(module, vhosts, users, absent)

    rabbitmqctl = module.get_bin_path("rabbitmqctl")
    if rabbitmqctl is None:
        module.fail_json(msg="rabbitmq_accounts runs rabbitmqctl, which is not on this host: install rabbitmq-server first")
    rc, out, err = module.run_command(
        [rabbitmqctl, "--node", p["node"], "--quiet", "eval"],
        data=program(not module.check_mode, vhosts, users, absent),
        binary_data=True,
    )
    if rc != 0:
        module.fail_json(msg=f"rabbitmqctl eval on node {p['node']} failed (exit {rc}): {(err or out).strip()}",
                         rc=rc, stdout=out, stderr=err)
    if not re.fullmatch(r"\s*\[.*\]\s*", out, re.DOTALL):
        module.fail_json(msg=f"rabbitmqctl eval on node {p['node']} printed no list of changes: {out.strip()}",
                         rc=rc, stdout=out, stderr=err)
    changes = describe(out, vhosts, users, absent)
    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
