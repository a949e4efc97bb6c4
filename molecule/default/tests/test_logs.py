"""The journal forwarded to a remote syslog endpoint (common_syslog_forward_target, here a listener
on the server itself): rsyslog sends every message, RFC 5424 over TCP, and writes no local file."""

from __future__ import annotations

import secrets
import shlex
import time

from stackhelpers import podman_hosts

testinfra_hosts = podman_hosts("webservers")[:1]

RECEIVED = "/run/test-syslog.txt"
LISTENER = r"""
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        with open('/run/test-syslog.txt', 'ab') as f:
            for chunk in iter(lambda: self.request.recv(65536), b''):
                f.write(chunk); f.flush()
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('127.0.0.1', 45514), H).serve_forever()
"""


def test_every_journal_message_reaches_the_remote_syslog_endpoint(host):
    """A message logged while the endpoint is down is queued and arrives once it is up, as does
    one logged after; neither is written to a local file."""
    host.run(f"systemctl stop test-syslog.service; rm -f {RECEIVED}")
    token = secrets.token_hex(8)
    host.check_output(f"logger -t forward-check before-{token}")
    host.check_output(f"systemd-run --unit=test-syslog --property=Type=simple python3 -c {shlex.quote(LISTENER)}")
    try:
        # rsyslog retries a refused endpoint every 10 s, then sends what it queued meanwhile.
        deadline = time.monotonic() + 150
        received = ""
        while not (f"before-{token}" in received and f"after-{token}" in received) and time.monotonic() < deadline:
            host.run(f"logger -t forward-check after-{token}")
            time.sleep(3)
            received = host.run(f"cat {RECEIVED}").stdout
        assert f"before-{token}" in received and f"after-{token}" in received, (
            received[-2000:] + host.run("journalctl -u rsyslog -n 5 --no-pager").stdout)
        line = next(line for line in received.splitlines() if f"before-{token}" in line)
        assert " forward-check " in line and ">1 " in line, line  # RFC 5424: <PRI>1 TIME HOST APP ...
    finally:
        host.run("systemctl stop test-syslog.service; systemctl reset-failed test-syslog.service")
    assert host.service("rsyslog").is_running
    # rsyslog writes no local file: Debian's package made /var/log/syslog, nothing writes to it.
    assert token not in host.run("cat /var/log/syslog /var/log/user.log 2>/dev/null").stdout
