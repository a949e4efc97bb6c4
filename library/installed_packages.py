#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Read the installed Debian packages with one dpkg-query call, as package_facts reports them."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: installed_packages
short_description: Read the packages dpkg has installed, into ansible_facts.packages
description:
  - Runs one C(dpkg-query --show) and sets C(ansible_facts.packages) in the format of
    M(ansible.builtin.package_facts) (a name, then the list of its installed versions), so that a
    role can skip M(ansible.builtin.apt) when every package it needs is installed.
  - M(ansible.builtin.package_facts) with C(manager=apt) opens the apt cache through python3-apt
    (about 1.2 s on a small server) and fails where python3-apt is missing (a fresh server); dpkg's
    own database is on every Debian host and is read in a fraction of that.
  - Only fully installed packages are listed (dpkg status C(installed)); one that is unpacked,
    half-configured or removed with its configuration left is not, so apt runs and settles it.
version_added: "1.0.0"
author:
  - django-stack maintainers
options: {}
attributes:
  check_mode:
    support: full
    details: Reads only.
  diff_mode:
    support: none
  facts:
    support: full
notes:
  - Debian and its derivatives (dpkg) only; the module fails, saying so, where dpkg-query is missing.
seealso:
  - module: ansible.builtin.package_facts
"""

EXAMPLES = r"""
- name: install | Read the installed packages
  installed_packages:
  when: ansible_facts.packages is not defined

- name: install | Install nginx
  ansible.builtin.apt:
    name: [nginx, ssl-cert]
    state: present
  when: "['nginx', 'ssl-cert'] | reject('in', ansible_facts.packages) | list | length > 0"
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: dict
  contains:
    packages:
      description: Each installed package's name, with the list of its installed versions.
      returned: always
      type: dict
      sample: {"nginx": [{"name": "nginx", "version": "1.22.1-9+deb12u3", "arch": "amd64", "source": "dpkg"}]}
"""

from ansible.module_utils.basic import AnsibleModule

# One line per package: status (e.g. "install ok installed"), name, version, architecture.
FORMAT = "${Status}\\t${Package}\\t${Version}\\t${Architecture}\\n"


def parse(out: str) -> dict[str, list[dict[str, str]]]:
    packages: dict[str, list[dict[str, str]]] = {}
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        status, name, version, arch = fields
        if status.split()[-1:] != ["installed"]:
            continue
        packages.setdefault(name, []).append({"name": name, "version": version, "arch": arch, "source": "dpkg"})
    return packages


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    dpkg_query = module.get_bin_path("dpkg-query")
    if dpkg_query is None:
        module.fail_json(msg="installed_packages reads dpkg's database: dpkg-query is not on this host (not Debian?)")
    rc, out, err = module.run_command([dpkg_query, "--show", "--showformat", FORMAT])
    if rc != 0:
        module.fail_json(msg=f"dpkg-query --show failed (exit {rc}): {(err or out).strip()}", rc=rc, stderr=err)
    module.exit_json(changed=False, ansible_facts={"packages": parse(out)})


if __name__ == "__main__":
    main()
