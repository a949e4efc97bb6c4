# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Child processes and the streams between them and the store.

A backup streams PRODUCER [| age -r ...] into a multipart upload (stream_upload: pg_dump for the
database, tar for the media); a restore feeds a downloaded file [| age -d] into CONSUMER
(feed_from_file: pg_restore for the database, tar -x for the media). Nothing is buffered on disk
and every process left is killed on the way out, whatever happened.
"""

from __future__ import annotations

import collections
import fcntl
import os
import shutil
import signal
import subprocess
import threading

from .errors import BackupError
from .util import MIB, tail

F_SETPIPE_SZ = 1031


class Proc:
    """A child process whose stderr is drained by a thread (last lines kept, or fed to a parser)."""

    def __init__(self, name: str, argv: list[str], stdin=None, stdout=None, parser=None, **kwargs):
        self.name = name
        self.argv = argv
        self.lines = collections.deque(maxlen=200)
        self.parser = parser
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, bufsize=0,
                                         close_fds=True, **kwargs)
        except OSError as exc:
            raise BackupError("cannot run %s (%s): %s" % (name, argv[0], exc))
        self.thread = threading.Thread(target=self._drain, daemon=True, name="stderr-" + name)
        self.thread.start()

    def _drain(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if self.parser is None or not self.parser(line):
                self.lines.append(line)

    def wait(self) -> int:
        rc = self.proc.wait()
        self.thread.join(10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def failure(self, rc: int) -> str:
        how = ("killed by %s" % signal.Signals(-rc).name) if rc < 0 else ("exit status %d" % rc)
        return "%s failed (%s): %s" % (self.name, how, tail(self.lines) or "(no error output)")


def enlarge_pipe(fileobj) -> None:
    try:
        fcntl.fcntl(fileobj.fileno(), F_SETPIPE_SZ, MIB)
    except OSError:
        pass


class Pipeline:
    """Processes connected by pipes, the first one first; kills everything left on close()."""

    def __init__(self):
        self.procs = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    @property
    def producer(self) -> Proc:
        return self.procs[0]

    def failures(self, accept=None) -> list[str]:
        """Wait for every process; what each failed one said. ACCEPT(proc, rc) may excuse a non-zero status."""
        problems = []
        for proc in self.procs:
            rc = proc.wait()
            if rc != 0 and not (accept and accept(proc, rc)):
                problems.append(proc.failure(rc))
        return problems

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


def age_encrypt_cmd(recipients: list[str]) -> list[str]:
    cmd = [shutil.which("age") or "age"]
    for recipient in recipients:
        cmd += ["-r", recipient.strip()]
    return cmd


def stream_upload(store, key: str, part_size: int, name: str, argv: list[str], recipients: list[str], on_part,
                  on_start=None, **popen) -> dict:
    """Upload what ARGV writes on its stdout (encrypted by `age -r` to RECIPIENTS, when given) to the
    multipart object KEY of STORE; returns what Store.upload_stream returns.

    ON_PART(pipeline, number, size) runs after each part, and once more with number None when the
    output has ended, before the upload is completed: raising there aborts the upload, so that an
    object is never completed from a producer that failed. ON_START() runs once every process runs."""
    pipeline = Pipeline()
    try:
        producer = pipeline.add(Proc(name, argv, stdout=subprocess.PIPE, **popen))
        enlarge_pipe(producer.proc.stdout)
        source = producer.proc.stdout
        if recipients:
            age = pipeline.add(Proc("age", age_encrypt_cmd(recipients), stdin=source, stdout=subprocess.PIPE))
            producer.proc.stdout.close()
            enlarge_pipe(age.proc.stdout)
            source = age.proc.stdout
        if on_start:
            on_start()
        return store.upload_stream(key, source, part_size, lambda number, size: on_part(pipeline, number, size))
    finally:
        pipeline.close()


def decrypted(pipeline: Pipeline, path: str, identity: str | None):
    """A readable stream of the plain bytes of the file PATH (through `age -d` when IDENTITY, the age
    identity itself, is given). The identity reaches age through a pipe it reads as /dev/fd/N: never
    on disk, never on a command line."""
    handle = open(path, "rb")
    if not identity:
        return handle
    readable, writable = os.pipe()
    try:
        # An identity is a few hundred bytes: it fits the pipe's buffer, so the write never blocks.
        os.write(writable, (identity.strip() + "\n").encode())
        os.close(writable)
        writable = None
        age = pipeline.add(Proc("age -d", [shutil.which("age"), "-d", "-i", "/dev/fd/%d" % readable],
                                stdin=handle, stdout=subprocess.PIPE, pass_fds=(readable,)))
    finally:
        os.close(readable)
        if writable is not None:
            os.close(writable)
        handle.close()
    return age.proc.stdout


def feed_from_file(path: str, identity: str | None, name: str, argv: list[str], **popen) -> list[str]:
    """Run ARGV with the plain bytes of the file PATH on its stdin (see decrypted); what every process
    that failed said, nothing when all succeeded."""
    pipeline = Pipeline()
    try:
        stream = decrypted(pipeline, path, identity)
        pipeline.add(Proc(name, argv, stdin=stream, **popen))
        stream.close()
        return pipeline.failures()
    finally:
        pipeline.close()
