"""Certificates and keys for a throw-away local control plane.

One CA signs the API server's serving certificate (valid for 127.0.0.1 and localhost) and an
admin client certificate in ``system:masters``; a separate RSA key pair signs service-account
tokens. Everything is generated fresh per control plane and lives only in its work directory.

:func:`generate_ca` and :func:`issue_serving` make the same kind of material for anything else
served over TLS locally (a sidecar on its pod IP, an operator replica), as tests and the demo
need it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=7)


@dataclass(frozen=True)
class Pki:
    """Paths of the generated material, all PEM."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path
    sa_private_key: Path


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate (the bundle clients trust) and its key, both PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ServingPair:
    """A serving certificate signed by an :class:`Authority`, and its key, both PEM files."""

    cert: Path
    key: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def generate(directory: Path) -> Pki:
    """Generate a CA, serving and admin certificates and service-account keys in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_public_key=directory / "sa.pub",
        sa_private_key=directory / "sa.key",
    )
    ca = generate_ca(directory, "cadenza-local-ca", "ca")
    ca_key, ca_name = _load(ca)
    issue_serving(
        ca, directory, "kube-apiserver", ["localhost", "kubernetes.default.svc", "127.0.0.1"],
        stem="apiserver",
    )  # fmt: skip

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        _name("cadenza-admin", "system:masters"),
        admin_key.public_key(),
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    _write_key(pki.admin_key, admin_key)
    _write_cert(pki.admin_cert, admin)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_private_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def generate_ca(directory: Path, common_name: str, stem: str) -> Authority:
    """A new self-signed CA in ``<stem>.crt`` and ``<stem>.key`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = Authority(directory / f"{stem}.crt", directory / f"{stem}.key")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    _write_key(authority.key, key)
    _write_cert(authority.cert, _issue(name, key.public_key(), name, key, is_ca=True))
    return authority


def issue_serving(
    ca: Authority, directory: Path, common_name: str, hosts: Sequence[str], *, stem: str
) -> ServingPair:
    """A serving certificate signed by ``ca`` for ``hosts`` (IP addresses become IP SANs,
    anything else DNS SANs), in ``<stem>.crt`` and ``<stem>.key`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = ServingPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    ca_key, ca_name = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        _name(common_name),
        key.public_key(),
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[_san(host) for host in hosts],
    )
    _write_key(pair.key, key)
    _write_cert(pair.cert, cert)
    return pair


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _load(ca: Authority) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate(ca.cert.read_bytes()).subject
