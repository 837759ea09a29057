"""The server's CA, serving certificate, admin token and kubeconfig, created on first start."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_pki(pki: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) under pki, generated if absent or missing a host."""
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_crt, ca_key = pki / "ca.crt", pki / "ca.key"
    srv_crt, srv_key = pki / "server.crt", pki / "server.key"
    now = dt.datetime.now(dt.UTC)
    if not ca_crt.exists() or not ca_key.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubevisor-ca")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(ca_key, _key_pem(key))
        _write_private(ca_crt, cert.public_bytes(serialization.Encoding.PEM))
        srv_crt.unlink(missing_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    loaded_key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    assert isinstance(loaded_key, ec.EllipticCurvePrivateKey)
    wanted = sorted(set(hosts) | {"localhost", "127.0.0.1"})
    if srv_crt.exists() and srv_key.exists():
        existing = x509.load_pem_x509_certificate(srv_crt.read_bytes())
        san = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        }
        if set(wanted) <= have:
            return ca_crt, srv_crt, srv_key
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for host in wanted:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubevisor-apiserver")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(loaded_key, hashes.SHA256())
    )
    _write_private(srv_key, _key_pem(key))
    _write_private(srv_crt, cert.public_bytes(serialization.Encoding.PEM))
    return ca_crt, srv_crt, srv_key


def ensure_tokens(path: Path) -> tuple[str, dict[str, str]]:
    """(admin token, token -> user). tokens.csv: `token,user` lines, like kube-apiserver's."""
    if not path.exists():
        _write_private(path, f"{secrets.token_hex(24)},admin\n".encode())
    tokens: dict[str, str] = {}
    first = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            token, _, user = line.partition(",")
            tokens[token] = user.split(",")[0] or "admin"
            first = first or token
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return first, tokens


def add_token(path: Path, user: str) -> str:
    """The token of `user` in tokens.csv, appending a new one if the user has none."""
    _, tokens = ensure_tokens(path)
    for token, name in tokens.items():
        if name == user:
            return token
    token = secrets.token_hex(24)
    with path.open("a") as fh:
        fh.write(f"{token},{user}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return token


def write_kubeconfig(path: Path, server: str, ca_crt: Path, token: str, user: str = "admin") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kubevisor",
        "preferences": {},
        "clusters": [
            {
                "name": "kubevisor",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_crt.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "kubevisor",
                "context": {"cluster": "kubevisor", "user": "admin", "namespace": "default"},
            }
        ],
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
