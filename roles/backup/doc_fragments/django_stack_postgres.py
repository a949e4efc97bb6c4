# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""The PostgreSQL options that django_backup and django_restore share: which database, and how to
reach it (config.GROUPS in the django_stack_backup package)."""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  db_name:
    description: Name of the database.
    type: str
  db_host:
    description: Directory of PostgreSQL's Unix socket, or a host name or address for TCP.
    type: str
    default: /var/run/postgresql
  db_port:
    description: Port of the server (also the number in the socket file's name).
    type: int
    default: 5432
  db_user:
    description:
      - Role to connect as. C(postgres) (peer authentication on the socket), or the app's owner role over
        TCP with O(db_password) (an owner can dump its own database).
    type: str
    default: postgres
  db_password:
    description: Password of O(db_user) (TCP connections with scram-sha-256 or md5).
    type: str
  db_sslmode:
    description:
      - libpq's C(sslmode) for the connections and for C(pg_dump)/C(pg_restore); C(verify-full) for a server on
        another host (its certificate checked against O(db_sslrootcert) and the address). Unset, libpq's default.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  db_sslrootcert:
    description: CA certificate that verifies the server (libpq's C(sslrootcert)).
    type: path
  db_os_user:
    description:
      - OS user that runs C(pg_dump)/C(pg_restore) and opens the connections, for peer authentication.
        Honoured only when the module runs as root; a warning says so otherwise.
      - Unset means C(postgres) when running as root, O(db_host) is a socket directory and the user exists;
        else the user the module runs as.
    type: str
  pg_bin_dir:
    description:
      - Directory of C(pg_dump) and C(pg_restore). Unset picks C(/usr/lib/postgresql/<N>/bin) with the
        smallest N not older than the server, else the ones on E(PATH).
    type: path
"""
