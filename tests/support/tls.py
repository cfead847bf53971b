"""A private certificate authority made at test time, for TLS servers on 127.0.0.1.

    ca = make_ca(tmp_path)                       # writes ca.pem; trust it with SSL_CERT_FILE=ca.path
    context = ca.server_context("127.0.0.1", "localhost", "secure.test")
    with RawServer(script, tls=context) as server: ...      # tests/support/raw_http.py

Certificates are EC P-256, valid for a day, with the extensions that OpenSSL's strict chain
checks (Python 3.13's default ``VERIFY_X509_STRICT``) ask for: a critical basicConstraints,
key usages, subject and authority key identifiers. Names that parse as IP addresses become IP
subjectAltNames, the rest DNS names. Made with the ``cryptography`` package (a test dependency).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=1))


@dataclass(frozen=True)
class Issued:
    cert: Path  # the leaf certificate followed by the CA's, PEM
    key: Path


@dataclass(frozen=True)
class CA:
    """A CA whose certificate is at ``path`` (PEM): point SSL_CERT_FILE (or libcurl's CAINFO) at it."""

    path: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    directory: Path

    def issue(self, *names: str) -> Issued:
        """A server certificate for ``names`` (DNS names or IP addresses), signed by this CA."""
        assert names, "a certificate needs at least one name"
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = _validity(x509.CertificateBuilder()
                            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                            .issuer_name(self.certificate.subject)
                            .public_key(key.public_key())
                            .serial_number(x509.random_serial_number()))
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (builder
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = self.directory / f"server-{cert.serial_number:x}"
        cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                              + self.certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return Issued(cert_path, key_path)

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server-side SSLContext presenting a certificate for ``names`` (HTTP/1.1 only: no ALPN h2)."""
        issued = self.issue(*names)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(issued.cert, issued.key)
        return context


def make_ca(directory: Path, name: str = "pixsrc test CA") -> CA:
    """A new CA, its certificate written to ``directory/<name>.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (_validity(x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                      .public_key(key.public_key()).serial_number(x509.random_serial_number()))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(path, cert, key, directory)
