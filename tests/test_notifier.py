"""The notifier a failed unit's OnFailure= runs (roles/notifier): its settings as the role renders
them, the script run for real against a local webhook receiver and a stand-in MTA."""

from __future__ import annotations

import contextlib
import email
import email.policy
import importlib.machinery
import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import free_port
from role_templates import render_role_templates

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "roles/notifier/files/usr/local/sbin/django-stack-notify"
TOKEN = "T0KEN-unit-test-only-4f9c2"


def load_notifier(config: Path):
    loader = importlib.machinery.SourceFileLoader("django_stack_notify", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    module.CONFIG = str(config)
    return module


@contextlib.contextmanager
def receiver(status: int = 200):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def settings(tmp_path: Path, **variables) -> Path:
    rendered = render_role_templates(tmp_path, "notifier", ["etc/django-stack-notify/notify.json"], variables)
    config = tmp_path / "notify.json"
    config.write_text(rendered["etc/django-stack-notify/notify.json"])
    return config


def fake_sendmail(tmp_path: Path, status: int = 0) -> tuple[Path, Path]:
    spool = tmp_path / "mail.txt"
    program = tmp_path / "sendmail"
    program.write_text(f"#!/bin/sh\necho \"$@\" > {spool}.args\ncat > {spool}\nexit {status}\n")
    program.chmod(0o755)
    return program, spool


def test_a_failure_reaches_the_webhook_and_the_mta_and_the_journal(tmp_path, capsys):
    sendmail, spool = fake_sendmail(tmp_path)
    with receiver() as (url, received):
        config = settings(tmp_path, notifier_webhook_url=f"{url}/hooks/{TOKEN}", notifier_webhook_allow_http=True,
                          notifier_email_to=["ops@example.com", "oncall@example.com"],
                          notifier_email_from="stack@example.com", notifier_sendmail=str(sendmail))
        status = load_notifier(config).main(["django-stack-notify", "django-stack-backup@demoapp.service"])
    err = capsys.readouterr().err
    assert status == 0, err
    # Always a critical journal message first (the <2> prefix is systemd's priority for a line).
    assert err.startswith("<2>django-stack-backup@demoapp.service failed on "), err
    assert "journalctl -u django-stack-backup@demoapp.service" in err
    [notice] = received
    assert notice["path"] == f"/hooks/{TOKEN}" and notice["type"] == "application/json"
    assert notice["body"]["unit"] == "django-stack-backup@demoapp.service"
    assert notice["body"]["status"] == "failed" and notice["body"]["host"]
    assert notice["body"]["text"].startswith("django-stack-backup@demoapp.service failed on ")
    mail = email.message_from_string(spool.read_text(), policy=email.policy.default)
    assert mail["To"] == "ops@example.com, oncall@example.com" and mail["From"] == "stack@example.com"
    assert mail["Subject"].startswith("[django-stack] django-stack-backup@demoapp.service failed on ")
    assert "journalctl -u django-stack-backup@demoapp.service" in mail.get_content()
    assert Path(f"{spool}.args").read_text().split() == ["-t", "-oi"]
    assert TOKEN not in err


def test_a_destination_down_fails_the_report_without_showing_the_url_and_still_mails(tmp_path, capsys):
    sendmail, spool = fake_sendmail(tmp_path)
    config = settings(tmp_path, notifier_webhook_url=f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}",
                      notifier_webhook_allow_http=True, notifier_email_to=["ops@example.com"],
                      notifier_sendmail=str(sendmail), notifier_timeout=2)
    status = load_notifier(config).main(["django-stack-notify", "certbot.service"])
    err = capsys.readouterr().err
    # Non-zero: the reporting unit fails too, so systemctl --failed (and the monitoring) shows it.
    assert status == 1
    assert "<3>the webhook did not take the notice" in err and TOKEN not in err
    assert "certbot.service failed" in spool.read_text()


def test_a_webhook_that_answers_an_error_fails_the_report(tmp_path, capsys):
    with receiver(status=500) as (url, received):
        config = settings(tmp_path, notifier_webhook_url=f"{url}/{TOKEN}", notifier_webhook_allow_http=True)
        status = load_notifier(config).main(["django-stack-notify", "django-stack-wal-archive-check@demoapp.service"])
    assert status == 1 and len(received) == 1
    err = capsys.readouterr().err
    assert "did not take the notice (Internal Server Error)" in err and TOKEN not in err


def test_an_mta_that_refuses_fails_the_report(tmp_path, capsys):
    sendmail, _ = fake_sendmail(tmp_path, status=75)
    config = settings(tmp_path, notifier_email_to=["ops@example.com"], notifier_sendmail=str(sendmail))
    assert load_notifier(config).main(["django-stack-notify", "x.service"]) == 1
    assert "<3>the mail to ops@example.com was not queued" in capsys.readouterr().err


def test_without_a_destination_the_journal_only(tmp_path, capsys):
    status = load_notifier(tmp_path / "absent.json").main(["django-stack-notify", "x.service", "the", "disk", "is", "full"])
    assert status == 0
    assert capsys.readouterr().err.startswith("<2>the disk is full on ")


@pytest.mark.parametrize("argv", [["django-stack-notify"], ["django-stack-notify", ""]])
def test_a_call_without_a_unit_is_refused(tmp_path, argv):
    assert load_notifier(tmp_path / "absent.json").main(argv) == 2


def test_the_settings_file_is_json_with_the_types_the_script_reads(tmp_path):
    config = json.loads(settings(tmp_path, notifier_webhook_url="https://hooks.example.com/x", notifier_timeout="7").read_text())
    assert "Ansible" in config.pop("_managed")
    assert config == {"webhook_url": "https://hooks.example.com/x", "email_to": [], "email_from": "",
                      "sendmail": "/usr/sbin/sendmail", "timeout": 7}


@pytest.mark.parametrize(("role", "unit", "variable"), [
    ("backup", "django-stack-backup-failed@.service", "backup_on_failure_command"),
    ("pitr", "django-stack-pitr-failed@.service", "pitr_on_failure_command"),
    ("nginx", "django-stack-acme-failed@.service", "nginx_acme_on_failure_command"),
])
def test_each_failure_unit_runs_exactly_the_wired_command(tmp_path, role, unit, variable):
    """The units OnFailure= starts run the notifier with the failed unit's name and nothing else (a
    comment once ran on as arguments: the template's loop ate the line's end)."""
    name = f"etc/systemd/system/{unit}"
    rendered = render_role_templates(tmp_path, role, [name], {variable: ["/usr/local/sbin/django-stack-notify", "%i"]})[name]
    [line] = [line for line in rendered.splitlines() if line.startswith("ExecStart=")]
    assert line == 'ExecStart="/usr/local/sbin/django-stack-notify" "%i"', line
