"""nginx's certificate from an ACME server (nginx_tls_mode: acme, host_vars): Pebble, started by
prepare.yml on the server, validates HTTP-01 through nginx; certbot.timer's renewal is served
without a dropped request; the provided mode (with OCSP stapling) is converged and served, then the
acme mode is restored without a new request. Runs before test_apache.py (file order)."""

from __future__ import annotations

import json
import secrets
import shlex

from stackhelpers import APP_NAME, curl, podman_hosts, recap, run_playbook

testinfra_hosts = podman_hosts("webservers")[:1]

PEBBLE_ROOT = "/var/tmp/pebble-root.pem"
LINEAGE = f"/etc/letsencrypt/live/{APP_NAME}"
ARCHIVE = f"/etc/letsencrypt/archive/{APP_NAME}"
WEBROOT = f"/var/www/acme/{APP_NAME}"


def pebble_root(host) -> str:
    """Pebble makes a new root at every start: fetch the running one (management interface)."""
    curl(host, "https://localhost:15000/roots/0", "--cacert", "/etc/pebble/ca.pem", "-o", PEBBLE_ROOT)
    return PEBBLE_ROOT


def served(host, ca: str | None = None) -> dict:
    """The leaf certificate nginx serves for localhost: issuer, names, serial."""
    pem = host.check_output("openssl s_client -connect 127.0.0.1:443 -servername localhost </dev/null 2>/dev/null"
                            " | openssl x509")
    out = host.check_output(f"printf '%s\\n' {shlex.quote(pem)} | openssl x509 -noout -issuer -serial -ext subjectAltName")
    return {"issuer": out.split("issuer=", 1)[1].splitlines()[0].strip(),
            "serial": out.split("serial=", 1)[1].splitlines()[0].strip(),
            "names": out.split("Subject Alternative Name", 1)[1].split("\n", 2)[1].strip()}


def test_nginx_serves_pebbles_certificate_for_the_domain(host):
    # Verified as a client would: Pebble's root, the chain nginx sends, the host name.
    assert curl(host, "https://localhost/healthz", "--cacert", pebble_root(host), "-o", "/dev/null",
                "-w", "%{http_code}").stdout == "200"
    leaf = served(host)
    assert leaf["issuer"].startswith("CN=Pebble Intermediate CA"), leaf
    assert leaf["names"] == "DNS:localhost", leaf  # nginx_server_names without 127.0.0.1
    for path, target in ((f"/etc/ssl/certs/{APP_NAME}.crt", f"{LINEAGE}/fullchain.pem"),
                         (f"/etc/ssl/private/{APP_NAME}.key", f"{LINEAGE}/privkey.pem")):
        assert host.file(path).is_symlink and host.check_output(f"readlink {path}") == target


def test_the_challenge_directory_is_served_over_plain_http_and_nothing_else_is(host):
    token = secrets.token_urlsafe(16)
    host.run(f"printf %s {token}-content > {WEBROOT}/.well-known/acme-challenge/{token}")
    try:
        got = curl(host, f"http://localhost/.well-known/acme-challenge/{token}", "-w", " %{http_code}").stdout
    finally:
        host.run(f"rm -f {WEBROOT}/.well-known/acme-challenge/{token}")
    assert got == f"{token}-content 200"
    # A token that is not there: 404, not a redirect; any other path still goes to HTTPS.
    assert curl(host, "http://localhost/.well-known/acme-challenge/none", "-o", "/dev/null",
                "-w", "%{http_code}").stdout == "404"
    assert curl(host, "http://localhost/.well-known/other", "-o", "/dev/null",
                "-w", "%{http_code} %{redirect_url}").stdout == "301 https://localhost/.well-known/other"


def test_certbot_timer_is_enabled_and_renewals_reload_nginx(host):
    assert host.service("certbot.timer").is_enabled and host.service("certbot.timer").is_running
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/reload-nginx")
    assert hook.mode == 0o755 and "systemctl reload nginx.service" in hook.content_string
    env = host.check_output("systemctl show -p Environment --value certbot.service")
    assert "REQUESTS_CA_BUNDLE=/etc/pebble/ca.pem" in env


def test_a_failed_renewal_runs_the_notifier(host):
    """certbot.service's OnFailure= (nginx_acme_on_failure_command, wired to roles/notifier): a
    renewal that fails is a critical journal message, weeks before the certificate expires."""
    assert "django-stack-acme-failed@certbot.service.service" in host.check_output(
        "systemctl show -p OnFailure --value certbot.service")
    since = host.check_output("date +%s")
    fail = "/run/systemd/system/certbot.service.d/fail.conf"
    host.run(f"mkdir -p {fail.rsplit('/', 1)[0]} && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > {fail}"
             " && systemctl daemon-reload")
    try:
        assert host.run("systemctl start certbot.service").rc != 0
        for _ in range(40):
            logged = host.run(f"journalctl -q -t django-stack-notify -p crit --since @{since} --no-pager").stdout
            if "certbot.service failed" in logged:
                break
            host.run("sleep 0.5")
        assert "certbot.service failed" in logged, logged
    finally:
        host.run(f"rm -f {fail} && systemctl daemon-reload && systemctl reset-failed certbot.service "
                 "'django-stack-acme-failed@*'")


REQUEST_LOOP = ("nohup bash -c 'while [ ! -e /tmp/acme-stop ]; do curl -s -o /dev/null --max-time 10 "
                "--cacert {ca} -w \"%{{http_code}}\\n\" https://localhost/healthz >> /tmp/acme-codes; done' "
                ">/dev/null 2>&1 &")


def test_a_renewal_from_certbot_service_is_served_and_drops_no_request(host):
    """The renewal certbot.timer runs (certbot.service, its environment and the deploy hook),
    forced through a runtime drop-in (the certificate is not due), while requests run."""
    ca = pebble_root(host)
    before, nginx_pid = served(host), host.service("nginx").systemd_properties["MainPID"]
    versions = int(host.check_output(f"ls {ARCHIVE}/cert*.pem | wc -l"))
    force = "/run/systemd/system/certbot.service.d/force-renewal.conf"
    host.run(f"mkdir -p {force.rsplit('/', 1)[0]} && printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/certbot -q renew"
             f" --no-random-sleep-on-renew --force-renewal\\n' > {force} && systemctl daemon-reload")
    host.run("rm -f /tmp/acme-stop /tmp/acme-codes")
    host.run(REQUEST_LOOP.format(ca=ca))
    try:
        host.run("sleep 2")
        renewal = host.run("systemctl start certbot.service")
        host.run("sleep 3")  # requests on the new certificate too
    finally:
        host.run("touch /tmp/acme-stop; sleep 1; rm -f /tmp/acme-stop")
        host.run(f"rm -f {force} && systemctl daemon-reload")
    codes = host.run("cat /tmp/acme-codes").stdout.split()
    assert renewal.rc == 0, host.run("journalctl -u certbot.service -n 30 --no-pager").stdout
    assert int(host.check_output(f"ls {ARCHIVE}/cert*.pem | wc -l")) == versions + 1
    after = served(host)
    assert after["serial"] != before["serial"] and after["issuer"].startswith("CN=Pebble Intermediate CA"), after
    new = host.check_output(f"openssl x509 -in {LINEAGE}/cert.pem -noout -serial").split("=", 1)[1]
    assert after["serial"] == new
    assert len(codes) > 20 and set(codes) == {"200"}, codes
    # Reloaded (the deploy hook), not restarted: the same master process.
    assert host.service("nginx").systemd_properties["MainPID"] == nginx_pid


# A root CA, an intermediate that signs the leaf and answers OCSP (openssl ocsp, on loopback), the
# leaf for localhost: what a commercial CA hands over (leaf + intermediate), made on the server.
PKI = r"""
set -eu
d=/var/tmp/provided-pki; rm -rf $d; mkdir -p $d; cd $d
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -days 2 -subj "/CN=django-stack provided test root" -keyout root.key -out root.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req $ec -subj "/CN=django-stack provided test intermediate" -keyout int.key -out int.csr 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n' > int.ext
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -set_serial 0x1001 -days 2 -extfile int.ext -out int.pem 2>/dev/null
openssl req $ec -subj /CN=localhost -keyout leaf.key -out leaf.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:8889\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial 0x2002 -days 2 -extfile leaf.ext -out leaf.pem 2>/dev/null
printf 'V\t%s\t\t2002\tunknown\t/CN=localhost\n' "$(date -u -d '+2 days' +%y%m%d%H%M%SZ)" > index.txt
"""


def test_a_provided_certificate_with_ocsp_stapling_is_served_then_acme_comes_back(host, tmp_path):
    """nginx_tls_mode provided on the same server (playbooks/app.yml, nginx only): the chain nginx
    serves verifies against the provided root, the OCSP answer is stapled; then the acme mode of
    host_vars comes back, with certbot's files untouched and nothing requested."""
    pki = "/var/tmp/provided-pki"
    host.check_output(f"bash -c {shlex.quote(PKI)}")
    versions = host.check_output(f"ls -l {ARCHIVE}")
    provided = {"nginx_tls_mode": "provided", "nginx_ocsp_stapling": True,
                "nginx_tls_certificate": host.file(f"{pki}/leaf.pem").content_string + host.file(f"{pki}/int.pem").content_string,
                "nginx_tls_certificate_key": host.file(f"{pki}/leaf.key").content_string}
    extra = tmp_path / "provided.json"
    extra.write_text(json.dumps(provided))
    # A transient unit (--collect: gone once stopped, failed or not); openssl ocsp takes a port only.
    responder = host.run(f"systemd-run --collect --unit=test-ocsp-responder --working-directory={pki} openssl ocsp"
                         " -index index.txt -port 8889 -rsigner int.pem -rkey int.key -CA int.pem -ignore_err")
    assert responder.rc == 0, responder.stderr
    try:
        result = run_playbook("playbooks/app.yml", "--tags", "nginx", "-e", f"@{extra}")
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert curl(host, "https://localhost/healthz", "--cacert", f"{pki}/root.pem", "-o", "/dev/null",
                    "-w", "%{http_code}").stdout == "200"
        leaf = served(host)
        assert leaf["issuer"] == "CN=django-stack provided test intermediate" and leaf["serial"] == "2002", leaf
        assert not host.file(f"/etc/ssl/certs/{APP_NAME}.crt").is_symlink
        assert host.file(f"/etc/ssl/private/{APP_NAME}.key").mode == 0o600
        # nginx fetches the OCSP answer on a first handshake, then staples it.
        status = ""
        for _ in range(10):
            status = host.run("openssl s_client -connect 127.0.0.1:443 -servername localhost -status </dev/null 2>&1").stdout
            if "Cert Status: good" in status:
                break
            host.run("sleep 1")
        assert "OCSP Response Status: successful" in status and "Cert Status: good" in status, status[-3000:]
    finally:
        host.run("systemctl stop test-ocsp-responder; systemctl reset-failed test-ocsp-responder")
        restored = run_playbook("playbooks/app.yml", "--tags", "nginx")
    assert restored.returncode == 0, restored.stdout[-4000:] + restored.stderr[-2000:]
    assert host.check_output(f"ls -l {ARCHIVE}") == versions  # no new certificate, nothing rewritten
    assert curl(host, "https://localhost/healthz", "--cacert", pebble_root(host), "-o", "/dev/null",
                "-w", "%{http_code}").stdout == "200"
    assert "ssl_stapling" not in host.file(f"/etc/nginx/sites-available/{APP_NAME}.conf").content_string


def test_check_diff_of_the_nginx_role_on_the_converged_host_reports_no_change():
    """The acme steps included: nothing would be requested, linked or reloaded."""
    result = run_playbook("--check", "--diff", "playbooks/app.yml", "--tags", "nginx")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    hosts = recap(result.stdout)
    assert all(counts["changed"] == 0 for counts in hosts.values()), result.stdout[-6000:]
    assert "acme | Enable and start certbot.timer" in result.stdout
