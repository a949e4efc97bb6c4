# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Backup sets of a Django stack on S3: create, list, prune, restore.

The core of the django_backup, django_backup_info and django_restore modules (imported by them as
``ansible.module_utils.django_stack_backup.<module>``), and the command line of the systemd timer
on the server (``python3 -m django_stack_backup.cli``, installed by the backup role), so both run
the same code. Pure Python 3.11: stdlib, boto3/botocore (Debian 12's 1.26) and psycopg2; no Ansible.
The modules of the package import each other relatively, so the same files work in both places.

A backup *set* is a directory of objects in a bucket::

    <prefix>/<set_id>/db.dump[.age]      pg_dump -Fc, streamed (optionally encrypted with age)
    <prefix>/<set_id>/media.tar[.age]    tar of media_root, streamed (when media_root is given)
    <prefix>/<set_id>/manifest.json      what the set holds: versions, migrations, row counts, SHA-256
    <prefix>/<set_id>/COMPLETE           the manifest's SHA-256, written last, after every object
                                         above was uploaded and verified

A set without a COMPLETE marker that matches its manifest (and objects of the sizes the
manifest gives) is incomplete: it is listed as such, never restored, never counted by
retention. Every failure raises errors.BackupError with a message naming what to check.

    errors      BackupError and its kinds, signals turned into errors
    util        constants of the set format, times, sizes, timers
    config      every option (the modules' argument specs), validation per command
    store       the bucket: listing, streaming multipart uploads, verified downloads
    pipeline    child processes and the streams between them and the store
    postgres    connections, pg_dump/pg_restore, tables, row counts, database administration
    sets        listing and validating the sets, picking one, freshness
    retention   grandfather-father-son pruning
    backup      one backup set
    restore, restore_db, restore_media    one restore
    cli         the server's command line
"""
