#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: django-stack maintainers
# MIT License (see LICENSE)
"""Keep a self-signed TLS certificate and its private key as asked, in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: selfsigned_certificate
short_description: Keep a self-signed server certificate and its private key with the names and key type asked for
description:
  - Reads the private key and the certificate, and settles in the same run what is not as asked.
  - The key is (re)created when it is missing, unreadable, or not of O(key_type). The certificate
    is (re)issued when it is missing or unreadable, does not belong to the key, or its common name,
    subject alternative names, key usage or extended key usage differ from what is asked, or
    it expires within O(renew_days) days.
  - Replaces the read, key, signing-request and certificate steps of community.crypto
    (M(community.crypto.openssl_privatekey), M(community.crypto.openssl_csr_pipe),
    M(community.crypto.x509_certificate)), which cost a module run each, with one.
  - Files are written to a temporary file in the same directory and renamed over the old one, so
    a reader (nginx reloading) sees the old or the new file, never half of one.
version_added: "1.0.0"
author:
  - django-stack maintainers
requirements:
  - python3-cryptography on the host (Debian's package), 3.1 or later
options:
  path:
    description: Path of the certificate (PEM).
    type: path
    required: true
  key_path:
    description: Path of the private key (PEM, unencrypted, mode C(0600)).
    type: path
    required: true
  common_name:
    description: Subject common name (and issuer's, the certificate signs itself).
    type: str
    required: true
  subject_alt_names:
    description:
      - Subject alternative names, each C(DNS:<name>) or C(IP:<address>), in the order they are
        written. The certificate is reissued when the set differs.
    type: list
    elements: str
    required: true
  key_type:
    description: V(ecp256) (ECDSA on P-256, key usage digitalSignature) or V(rsa2048) (RSA 2048 bit, key usage digitalSignature and keyEncipherment).
    type: str
    choices: [ecp256, rsa2048]
    default: ecp256
  days:
    description: Days a newly issued certificate is valid.
    type: int
    default: 825
  renew_days:
    description: The certificate is reissued when it expires within this many days (0 reissues only an expired one).
    type: int
    default: 30
  owner:
    description: Owner of both files.
    type: str
    default: root
  group:
    description: Group of both files.
    type: str
    default: root
attributes:
  check_mode:
    support: full
    details: Reports whether the key would be created and the certificate issued; writes nothing.
  diff_mode:
    support: full
    details: The certificate's subject, names, key type and expiry before and after.
notes:
  - The certificate has C(basicConstraints CA:FALSE) and C(extendedKeyUsage serverAuth), as a
    browser or curl expects of a server certificate. It is signed with SHA-256.
  - The key is created with mode C(0600) and the certificate with C(0644); a file found with
    another mode or owner is set right (changed).
seealso:
  - module: community.crypto.x509_certificate
"""

EXAMPLES = r"""
- name: configure | Ensure the self-signed certificate of the site
  selfsigned_certificate:
    path: /etc/ssl/certs/demoapp.crt
    key_path: /etc/ssl/private/demoapp.key
    common_name: demo.example.com
    subject_alt_names: [DNS:demo.example.com, IP:127.0.0.1]
    key_type: ecp256
    days: 825
  notify: reload nginx
"""

RETURN = r"""
key_created:
  description: True when the private key was (or, in check mode, would be) created.
  returned: always
  type: bool
certificate_issued:
  description: True when the certificate was (or, in check mode, would be) issued.
  returned: always
  type: bool
reasons:
  description: Why the key was created or the certificate issued (empty when both were as asked).
  returned: always
  type: list
  elements: str
  sample: ["certificate names differ: DNS:old.example.com -> DNS:demo.example.com"]
not_after:
  description: Expiry of the certificate after the run (ISO 8601, UTC); null in check mode when it would be issued.
  returned: always
  type: str
  sample: "2029-03-07T10:15:00+00:00"
"""

import datetime
import grp
import ipaddress
import os
import pwd
import tempfile

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    HAS_CRYPTOGRAPHY = True
except ImportError:  # reported by main()
    HAS_CRYPTOGRAPHY = False

KEY_MODE = 0o600
CERT_MODE = 0o644
# keyUsage per key type: what TLS does with the key (RSA key exchange enciphers with it).
KEY_USAGES = {"ecp256": {"digital_signature"}, "rsa2048": {"digital_signature", "key_encipherment"}}
USAGE_FLAGS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
               "key_agreement", "key_cert_sign", "crl_sign")


def key_type_of(key) -> str | None:
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ecp256"
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048:
        return "rsa2048"
    return None


def new_key(key_type: str):
    if key_type == "ecp256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def parse_names(module: AnsibleModule, names: list[str]) -> list:
    """x509.GeneralName objects for DNS:/IP: strings; bad input fails the task, naming the entry."""
    parsed = []
    for name in names:
        kind, _, value = name.partition(":")
        if kind == "DNS" and value:
            parsed.append(x509.DNSName(value))
        elif kind == "IP" and value:
            try:
                parsed.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                module.fail_json(msg=f"subject_alt_names: {name!r} is not an IP address")
        else:
            module.fail_json(msg=f"subject_alt_names: {name!r} is neither DNS:<name> nor IP:<address>")
    return parsed


def spell(names) -> list[str]:
    out = []
    for name in names:
        if isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        else:
            out.append(repr(name))
    return out


def extension(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def not_after(cert) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)  # cryptography 42 and later
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def public_bytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def describe(cert) -> dict:
    if cert is None:
        return {}
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    san = extension(cert, x509.SubjectAlternativeName)
    return {"common_name": cn[0].value if cn else None, "subject_alt_names": spell(san) if san else [],
            "not_after": not_after(cert).isoformat()}


def certificate_problems(cert, key, common_name: str, names: list, key_type: str, renew_days: int) -> list[str]:
    """Why the certificate must be reissued (empty: it is as asked)."""
    problems = []
    if public_bytes(cert.public_key()) != public_bytes(key.public_key()):
        problems.append("certificate does not belong to the private key")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    have_cn = cn[0].value if cn else None
    if have_cn != common_name or cert.issuer != cert.subject:
        problems.append(f"certificate common name differs: {have_cn} -> {common_name}")
    san = extension(cert, x509.SubjectAlternativeName)
    have, want = spell(san) if san else [], spell(names)
    if sorted(have) != sorted(want):
        problems.append(f"certificate names differ: {', '.join(have) or '(none)'} -> {', '.join(want)}")
    usage = extension(cert, x509.KeyUsage)
    have_usage = {flag for flag in USAGE_FLAGS if usage is not None and getattr(usage, flag)}
    if have_usage != KEY_USAGES[key_type]:
        problems.append("certificate key usage differs")
    eku = extension(cert, x509.ExtendedKeyUsage)
    if eku is None or list(eku) != [ExtendedKeyUsageOID.SERVER_AUTH]:
        problems.append("certificate extended key usage is not serverAuth")
    left = not_after(cert) - datetime.datetime.now(datetime.timezone.utc)
    if left < datetime.timedelta(days=renew_days):
        problems.append(f"certificate expires in {left.days} days (renew_days {renew_days})")
    return problems


def issue(key, common_name: str, names: list, key_type: str, days: int):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    usages = {flag: flag in KEY_USAGES[key_type] for flag in USAGE_FLAGS}
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # An hour back: a client whose clock is a little behind still accepts it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(encipher_only=False, decipher_only=False, **usages), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def read(module: AnsibleModule, path: str, loader):
    """The object in a PEM file, or None when the file is missing or does not hold one (it is then
    replaced); any other failure to read it fails the task."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc}")
    try:
        return loader(data)
    except (ValueError, TypeError):
        return None


def write_atomic(module: AnsibleModule, path: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ansible-", dir=directory)
    except OSError as exc:
        module.fail_json(msg=f"cannot write {path}: {exc}")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            os.fchown(handle.fileno(), uid, gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        module.fail_json(msg=f"cannot write {path}: {exc}")


def fix_attributes(path: str, mode: int, uid: int, gid: int, check_mode: bool) -> bool:
    st = os.stat(path)
    if (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, uid, gid):
        return False
    if not check_mode:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            key_path=dict(type="path", required=True),
            common_name=dict(type="str", required=True),
            subject_alt_names=dict(type="list", elements="str", required=True),
            key_type=dict(type="str", choices=["ecp256", "rsa2048"], default="ecp256"),
            days=dict(type="int", default=825),
            renew_days=dict(type="int", default=30),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="root"),
        ),
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography (Debian: python3-cryptography)"))
    p = module.params
    if not p["common_name"]:
        module.fail_json(msg="common_name must not be empty")
    if not p["subject_alt_names"]:
        module.fail_json(msg="subject_alt_names must name at least one DNS: or IP: entry")
    if p["days"] < 1 or p["renew_days"] < 0 or p["renew_days"] >= p["days"]:
        module.fail_json(msg=f"days ({p['days']}) must be at least 1 and more than renew_days ({p['renew_days']}, at least 0)")
    try:
        uid = pwd.getpwnam(p["owner"]).pw_uid
        gid = grp.getgrnam(p["group"]).gr_gid
    except KeyError as exc:
        module.fail_json(msg=f"owner or group does not exist: {exc}")
    names = parse_names(module, p["subject_alt_names"])
    for path in (p["path"], p["key_path"]):
        if not os.path.isdir(os.path.dirname(path) or "."):
            module.fail_json(msg=f"the directory of {path} does not exist")

    reasons = []
    key = read(module, p["key_path"], lambda data: serialization.load_pem_private_key(data, password=None))
    old_key_type = None if key is None else (key_type_of(key) or "other")
    key_created = old_key_type != p["key_type"]
    if key is None:
        reasons.append("private key missing or unreadable")
    elif key_created:
        reasons.append(f"private key is not {p['key_type']}")
    if key_created:
        key = new_key(p["key_type"])

    cert = read(module, p["path"], x509.load_pem_x509_certificate)
    before = describe(cert)
    if key_created:
        issue_reasons = ["new private key"]
    elif cert is None:
        issue_reasons = ["certificate missing or unreadable"]
    else:
        issue_reasons = certificate_problems(cert, key, p["common_name"], names, p["key_type"], p["renew_days"])
    reasons += issue_reasons
    issued = bool(issue_reasons)

    attributes_changed = False
    new_cert = None
    if issued:
        new_cert = issue(key, p["common_name"], names, p["key_type"], p["days"])
    if not module.check_mode:
        # The key first: a certificate never lands next to a key it does not belong to for longer
        # than the two renames.
        if key_created:
            write_atomic(module, p["key_path"], key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
                KEY_MODE, uid, gid)
        if issued:
            write_atomic(module, p["path"], new_cert.public_bytes(serialization.Encoding.PEM), CERT_MODE, uid, gid)
    if not key_created and os.path.exists(p["key_path"]):
        attributes_changed |= fix_attributes(p["key_path"], KEY_MODE, uid, gid, module.check_mode)
    if not issued and os.path.exists(p["path"]):
        attributes_changed |= fix_attributes(p["path"], CERT_MODE, uid, gid, module.check_mode)
    if attributes_changed:
        reasons.append("owner or mode of the key or the certificate set right")

    after = describe(new_cert) if issued else before
    result = dict(
        changed=key_created or issued or attributes_changed,
        key_created=key_created,
        certificate_issued=issued,
        reasons=reasons,
        not_after=None if (issued and module.check_mode) else after.get("not_after"),
    )
    if module._diff and (key_created or issued):
        shown_after = {k: v for k, v in after.items() if k != "not_after" or not module.check_mode}
        result["diff"] = {"before_header": p["path"], "after_header": p["path"],
                          "before": {**before, "key_type": old_key_type} if (cert is not None or old_key_type) else {},
                          "after": {**shown_after, "key_type": p["key_type"]}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
