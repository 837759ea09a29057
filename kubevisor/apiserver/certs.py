"""Certificates and tokens: the apiserver's CA, serving certificate, admin token and kubeconfig
(created on first start), and the node-access PKI behind the apiserver → node agent link.

The node-access link (console, VNC, port-forward, pause ...) is mutual TLS with its own CA, as
KubeVirt's virt-api → virt-handler link is: the node agent serves with a certificate for its
addresses and accepts only clients whose certificate that CA signed for the apiserver.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APISERVER_CLIENT_CN = "system:kubevisor-apiserver"


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


@dataclass(frozen=True)
class _CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _ensure_ca(crt: Path, key_path: Path, common_name: str) -> tuple[_CA, bool]:
    """The CA at (crt, key_path), created if either file is missing; True when it is new."""
    created = False
    if not crt.exists() or not key_path.exists():
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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
        _write_private(key_path, _key_pem(key))
        _write_private(crt, cert.public_bytes(serialization.Encoding.PEM))
        created = True
    loaded_key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(loaded_key, ec.EllipticCurvePrivateKey)
    return _CA(x509.load_pem_x509_certificate(crt.read_bytes()), loaded_key), created


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def _issue(
    ca: _CA, crt: Path, key_path: Path, common_name: str, hosts: list[str], usage: x509.ObjectIdentifier
) -> None:
    """Write a leaf certificate unless a valid one for the same CA, name and hosts is there."""
    if crt.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(crt.read_bytes())
        same_name = existing.subject.rfc4514_string() == f"CN={common_name}"
        if existing.issuer == ca.cert.subject and same_name and set(hosts) <= _sans(existing):
            return
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hosts:
        alt: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    _write_private(crt, cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(pki: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) under pki, generated if absent or missing a host."""
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_crt, srv_crt, srv_key = pki / "ca.crt", pki / "server.crt", pki / "server.key"
    ca, created = _ensure_ca(ca_crt, pki / "ca.key", "kubevisor-ca")
    if created:
        srv_crt.unlink(missing_ok=True)
    wanted = sorted(set(hosts) | {"localhost", "127.0.0.1"})
    _issue(ca, srv_crt, srv_key, "kubevisor-apiserver", wanted, ExtendedKeyUsageOID.SERVER_AUTH)
    return ca_crt, srv_crt, srv_key


@dataclass(frozen=True)
class NodeAccessPKI:
    """Files of the apiserver → node agent link, all under one directory."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def client_cert(self) -> Path:
        return self.directory / "apiserver-client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "apiserver-client.key"

    def node_cert(self, node: str) -> Path:
        return self.directory / f"node-{node}.crt"

    def node_key(self, node: str) -> Path:
        return self.directory / f"node-{node}.key"


def ensure_node_access_pki(directory: Path, nodes: dict[str, list[str]]) -> NodeAccessPKI:
    """The node-access CA, the apiserver's client certificate and a serving certificate for each
    node (name -> its addresses and host names). `node` names are checked by the caller."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = NodeAccessPKI(directory)
    ca, created = _ensure_ca(pki.ca, directory / "ca.key", "kubevisor-node-access-ca")
    if created:
        for stale in directory.glob("*.crt"):
            if stale != pki.ca:
                stale.unlink()
    _issue(ca, pki.client_cert, pki.client_key, APISERVER_CLIENT_CN, [], ExtendedKeyUsageOID.CLIENT_AUTH)
    for node, hosts in nodes.items():
        wanted = sorted(set(hosts) | {"localhost", "127.0.0.1"})
        _issue(ca, pki.node_cert(node), pki.node_key(node), f"system:node:{node}", wanted,
               ExtendedKeyUsageOID.SERVER_AUTH)
    return pki


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


def issue_node_access_client(pki: NodeAccessPKI, common_name: str, crt: Path, key: Path) -> None:
    """A client certificate of the node-access CA for another identity (node agents answer 403 to
    any but the apiserver's: this is how that is checked, and how an operator would test it)."""
    ca, _ = _ensure_ca(pki.ca, pki.directory / "ca.key", "kubevisor-node-access-ca")
    _issue(ca, crt, key, common_name, [], ExtendedKeyUsageOID.CLIENT_AUTH)
