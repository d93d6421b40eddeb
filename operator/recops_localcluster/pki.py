"""Throwaway PKI for the local control plane.

One CA signs the apiserver serving certificate and the client certificates
(admin in ``system:masters``); a separate RSA key pair signs service-account
tokens. Uses ``cryptography`` (already a dependency of kubernetes' auth stack)
instead of shelling out to openssl, so there is nothing else to install; the
certificate pieces are the operator's (``recops_operator.tls``), which makes its
local webhook certificate the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from recops_operator import tls

SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]
CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]


class Pair(NamedTuple):
    """A certificate and its private key, as files."""

    crt: Path
    key: Path

    @classmethod
    def named(cls, directory: Path, name: str) -> Pair:
        return cls(directory / f"{name}.crt", directory / f"{name}.key")

    def write(self, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        tls.write_key(self.key, key)
        tls.write_cert(self.crt, cert)

    def load(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        cert = x509.load_pem_x509_certificate(self.crt.read_bytes())
        return cert, serialization.load_pem_private_key(self.key.read_bytes(), password=None)


class Pki(NamedTuple):
    """Every file the components need: the CA, three certificates it signed, the SA key pair."""

    dir: Path
    ca: Pair
    apiserver: Pair
    admin: Pair  # system:masters
    front_proxy: Pair
    sa: Pair  # service-account token signing: ``crt`` is the public key (PEM), not a certificate

    @classmethod
    def at(cls, d: Path) -> Pki:
        names = ("ca", "apiserver", "admin", "front-proxy")
        return cls(d, *(Pair.named(d, n) for n in names), Pair(d / "sa.pub", d / "sa.key"))


def _sign(
    ca: tuple[x509.Certificate, rsa.RSAPrivateKey],
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    usages: list[ObjectIdentifier],
    hosts: list[str] | None = None,
) -> x509.Certificate:
    """A leaf certificate for ``key`` signed by the CA, for these extended key usages and hosts."""
    ca_cert, ca_key = ca
    builder = tls.certificate(subject, key, ca_cert.subject, ca=False).add_extension(
        x509.ExtendedKeyUsage(usages), critical=False
    )
    if hosts:
        builder = builder.add_extension(tls.alt_names(hosts), critical=False)
    return tls.sign(builder, ca_key)


def _ca(subject: x509.Name) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = tls.new_key()
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    return tls.sign(
        tls.certificate(subject, key, subject, ca=True).add_extension(usage, critical=True), key
    ), key


def generate(directory: Path) -> Pki:
    """Create a CA, apiserver/admin/front-proxy certificates and the SA signing key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki.at(directory)
    ca = _ca(tls.name("recops-local-ca"))
    pki.ca.write(*ca)
    apiserver_hosts = ["localhost", "kubernetes", "kubernetes.default.svc", "127.0.0.1", "10.96.0.1"]
    for pair, subject, usages, hosts in (
        (pki.apiserver, tls.name("kube-apiserver"), SERVER, apiserver_hosts),
        (pki.admin, tls.name("admin", "system:masters"), CLIENT, None),
        (pki.front_proxy, tls.name("front-proxy-client"), CLIENT, None),
    ):
        key = tls.new_key()
        pair.write(_sign(ca, subject, key, usages, hosts), key)
    sa = tls.new_key()
    tls.write_key(pki.sa.key, sa)
    public = sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pki.sa.crt.write_bytes(public)
    return pki


def issue_pair(pki: Pki, directory: Path, cn: str, dns: list[str]) -> Path:
    """A key pair signed by the cluster CA for serving AND client auth, written Kubernetes-Secret style
    (``ca.crt``, ``tls.crt``, ``tls.key``) into ``directory``: KEDA's operator and metrics adapter share
    one such directory (mutual TLS on their gRPC link; the adapter also serves the aggregated API)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = tls.new_key()
    cert = _sign(pki.ca.load(), tls.name(cn), key, SERVER + CLIENT, ["localhost", *dns, "127.0.0.1"])
    Pair.named(directory, "tls").write(cert, key)
    (directory / "ca.crt").write_bytes(pki.ca.crt.read_bytes())
    return directory
