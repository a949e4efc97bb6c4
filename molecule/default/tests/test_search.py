"""Solr for haystack: the service, its core, search through the site, a schema change that
reloads the core, and an archive with a wrong checksum refused before anything changes."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

from stackhelpers import (
    APP_NAME,
    PROJECT_DIR,
    app_version,
    curl,
    deploy,
    listeners,
    podman_hosts,
    post_form,
    run_playbook,
)

testinfra_hosts = podman_hosts("searchservers")[:1]

BASE = "https://localhost"
SOLR = "http://127.0.0.1:8983/solr"
VERSIONS = Path(__file__).resolve().parents[1] / "versions"


def core_status(host) -> dict:
    out = curl(host, f"{SOLR}/admin/cores?action=STATUS&core={APP_NAME}&wt=json").stdout
    return json.loads(out)["status"][APP_NAME]


def search(host, words: str) -> str:
    return curl(host, f"{BASE}/search/?q={words}", "-k").stdout


def test_solr_runs_as_its_own_user_on_loopback_only(host):
    service = host.service("solr.service")
    assert service.is_running and service.is_enabled
    main = host.check_output("systemctl show -p MainPID --value solr.service")
    assert host.check_output(f"ps -o user= -p {main}") == "solr"
    assert listeners(host, 8983) == ["127.0.0.1"]
    assert host.file("/opt/solr").linked_to.startswith("/opt/solr-")
    assert host.file("/var/solr/data").user == "solr"


def test_the_app_core_exists_with_the_apps_schema(host):
    status = core_status(host)
    assert status["name"] == APP_NAME, status
    schema = host.file(f"/var/solr/data/{APP_NAME}/conf/schema.xml").content_string
    assert '<field name="title"' in schema and 'class="solr.LatLonType"' not in schema


def test_a_note_created_through_the_site_is_found_through_the_search_page(host):
    word = f"heron{secrets.token_hex(4)}"
    assert post_form(host, "/notes/new/", f"title=Birdwatch {word}", "body=Seen by the lake.") == "302"
    page = search(host, word)
    assert f"Birdwatch {word}" in page and "1 result" in page, page[-2000:]
    assert "Birdwatch" not in search(host, f"absent{secrets.token_hex(4)}")


def test_a_schema_change_in_a_deploy_reloads_the_core(host, tmp_path):
    before = core_status(host)["startTime"]
    version = app_version(tmp_path / "demoapp", [VERSIONS / "search-field"])
    result = deploy(version)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"Reload the core for its new schema or config\]\s*\S*\s*changed", result.stdout.replace("*", "")) \
        or "RELOAD" in host.check_output("tail -n 200 /var/solr/logs/solr.log")
    assert '<field name="headline"' in host.file(f"/var/solr/data/{APP_NAME}/conf/schema.xml").content_string
    assert core_status(host)["startTime"] != before  # reloaded
    word = f"egret{secrets.token_hex(4)}"
    assert post_form(host, "/notes/new/", f"title=After reload {word}", "body=still found") == "302"
    assert f"After reload {word}" in search(host, word)


def test_an_archive_with_a_wrong_checksum_is_refused_before_anything_changes(host, tmp_path):
    # An operator supplies the archive of a newer release, with a checksum that is not its own.
    subprocess.run([sys.executable, str(PROJECT_DIR / "tests" / "solr-standin" / "build-archive.py"),
                    "--version", "9.7.1", "--output-dir", str(tmp_path)], check=True, capture_output=True)
    archive = tmp_path / "solr-9.7.1-standin.tgz"
    result = run_playbook("site.yml", "--tags", "solr", "-e", "solr_version=9.7.1",
                          "-e", f"solr_archive_local_path={archive}", "-e", "solr_archive_sha512=" + "0" * 128)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "refusing to install it" in output and "solr_archive_sha512" in output, output[-3000:]
    assert not host.file("/opt/solr-9.7.1").exists
    assert not host.file("/var/cache/django-stack/solr/solr-9.7.1.tgz").exists
    assert host.service("solr.service").is_running
    assert host.file("/opt/solr").linked_to.endswith("solr-9.7.0")
