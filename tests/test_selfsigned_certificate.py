"""library/selfsigned_certificate.py, run for real as Ansible runs it (a JSON args file), on real
files, with real keys and certificates (the cryptography library, as on the host), checked with
openssl, as a TLS client would read them."""

from __future__ import annotations

import datetime
import grp
import ipaddress
import os
import pwd
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from module_run import run_module


def run(tmp_path: Path, check_mode: bool = False, diff: bool = False, **params) -> dict:
    args = {"path": str(tmp_path / "site.crt"), "key_path": str(tmp_path / "site.key"),
            "common_name": "demo.example.com", "subject_alt_names": ["DNS:demo.example.com", "IP:127.0.0.1"],
            "owner": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name, **params}
    return run_module("selfsigned_certificate", tmp_path, args, check_mode, diff)


def openssl_text(path: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout


def cert_of(tmp_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((tmp_path / "site.crt").read_bytes())


def test_creates_key_and_certificate_then_changes_nothing(tmp_path):
    first = run(tmp_path)
    assert first["_rc"] == 0, first
    assert first["changed"] and first["key_created"] and first["certificate_issued"]
    key, crt = tmp_path / "site.key", tmp_path / "site.crt"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and oct(crt.stat().st_mode & 0o777) == "0o644"
    text = openssl_text(crt)
    assert "Subject: CN = demo.example.com" in text and "Issuer: CN = demo.example.com" in text
    assert "DNS:demo.example.com, IP Address:127.0.0.1" in text
    assert "CA:FALSE" in text and "TLS Web Server Authentication" in text and "Digital Signature" in text
    assert "ASN1 OID: prime256v1" in text
    # The certificate belongs to the key, as nginx checks when it loads them.
    pub_cert = subprocess.run(f"openssl x509 -in {crt} -noout -pubkey", shell=True, capture_output=True, check=True).stdout
    pub_key = subprocess.run(f"openssl pkey -in {key} -pubout", shell=True, capture_output=True, check=True).stdout
    assert pub_cert == pub_key
    left = cert_of(tmp_path).not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert 823 < left.days <= 825

    before = (key.read_bytes(), crt.read_bytes())
    second = run(tmp_path)
    assert second["_rc"] == 0 and second["changed"] is False, second
    assert second["reasons"] == [] and (key.read_bytes(), crt.read_bytes()) == before


def test_check_mode_reports_and_writes_nothing(tmp_path):
    result = run(tmp_path, check_mode=True, diff=True)
    assert result["_rc"] == 0 and result["changed"] and result["key_created"] and result["certificate_issued"]
    assert not (tmp_path / "site.key").exists() and not (tmp_path / "site.crt").exists()
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["subject_alt_names"] == ["DNS:demo.example.com", "IP:127.0.0.1"]

    run(tmp_path)
    changed_names = run(tmp_path, check_mode=True, subject_alt_names=["DNS:demo.example.com"])
    assert changed_names["changed"] and changed_names["certificate_issued"] and not changed_names["key_created"]
    assert "DNS:demo.example.com, IP Address:127.0.0.1" in openssl_text(tmp_path / "site.crt")


def test_other_names_reissue_the_certificate_and_keep_the_key(tmp_path):
    run(tmp_path)
    key_before = (tmp_path / "site.key").read_bytes()
    result = run(tmp_path, diff=True, common_name="www.example.com",
                 subject_alt_names=["DNS:www.example.com", "DNS:*.example.com"])
    assert result["_rc"] == 0 and result["changed"] and result["certificate_issued"] and not result["key_created"]
    assert any("names differ" in r for r in result["reasons"]) and any("common name" in r for r in result["reasons"])
    assert (tmp_path / "site.key").read_bytes() == key_before
    assert "DNS:www.example.com, DNS:*.example.com" in openssl_text(tmp_path / "site.crt")
    assert result["diff"]["before"]["common_name"] == "demo.example.com"
    assert result["diff"]["after"]["common_name"] == "www.example.com"
    # The same names in another order are the same certificate.
    again = run(tmp_path, common_name="www.example.com", subject_alt_names=["DNS:*.example.com", "DNS:www.example.com"])
    assert again["changed"] is False


def test_another_key_type_replaces_key_and_certificate(tmp_path):
    run(tmp_path)
    result = run(tmp_path, key_type="rsa2048")
    assert result["_rc"] == 0 and result["key_created"] and result["certificate_issued"]
    text = openssl_text(tmp_path / "site.crt")
    assert "Public-Key: (2048 bit)" in text and "Key Encipherment" in text
    assert run(tmp_path, key_type="rsa2048")["changed"] is False


def test_a_certificate_of_another_key_or_near_expiry_is_reissued(tmp_path):
    run(tmp_path)
    # Another key's certificate with the right names: it does not belong to the key on disk.
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)

    def write_cert(key, days):
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("demo.example.com"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(usage, critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(key, hashes.SHA256()))
        (tmp_path / "site.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    write_cert(other, 400)
    result = run(tmp_path)
    assert result["certificate_issued"] and "certificate does not belong to the private key" in result["reasons"]
    assert run(tmp_path)["changed"] is False

    key = serialization.load_pem_private_key((tmp_path / "site.key").read_bytes(), password=None)
    write_cert(key, 10)
    result = run(tmp_path)
    assert result["certificate_issued"] and any("expires in" in r for r in result["reasons"]), result
    assert cert_of(tmp_path).not_valid_after_utc > now + datetime.timedelta(days=800)


def test_a_damaged_key_is_replaced_and_modes_are_set_right(tmp_path):
    run(tmp_path)
    (tmp_path / "site.key").write_text("not a key\n")
    result = run(tmp_path)
    assert result["key_created"] and result["certificate_issued"]
    assert "private key missing or unreadable" in result["reasons"]
    os.chmod(tmp_path / "site.key", 0o644)
    result = run(tmp_path)
    assert result["changed"] and not result["key_created"] and not result["certificate_issued"]
    assert oct((tmp_path / "site.key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("params, message", [
    ({"subject_alt_names": ["demo.example.com"]}, "neither DNS:<name> nor IP:<address>"),
    ({"subject_alt_names": ["IP:not-an-ip"]}, "is not an IP address"),
    ({"subject_alt_names": []}, "at least one DNS: or IP: entry"),
    ({"days": 10, "renew_days": 30}, "must be at least 1 and more than renew_days"),
    ({"key_type": "dsa"}, "value of key_type must be one of"),
    ({"owner": "no-such-user-here"}, "owner or group does not exist"),
])
def test_bad_input_fails_naming_it_and_writes_nothing(tmp_path, params, message):
    result = run(tmp_path, **params)
    assert result["_rc"] != 0 and result.get("failed"), result
    assert message in result["msg"], result["msg"]
    assert not (tmp_path / "site.key").exists() and not (tmp_path / "site.crt").exists()


def test_a_missing_directory_fails_clearly(tmp_path):
    result = run(tmp_path, path=str(tmp_path / "nowhere" / "site.crt"))
    assert result["_rc"] != 0 and "does not exist" in result["msg"]
