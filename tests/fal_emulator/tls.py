"""A throwaway CA (trustme) and a loopback server certificate signed by it."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

CA_CERT_NAME = "fal-emulator-ca.pem"
CA_KEY_NAME = "fal-emulator-ca.key"


@dataclass(frozen=True)
class TLSMaterial:
    ca_file: Path
    context: ssl.SSLContext


def _load_or_create_ca(ca_dir: Path) -> trustme.CA:
    """Reuse the CA in ``ca_dir`` if one is there, so a restarted emulator stays trusted."""
    cert_path, key_path = ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        try:
            return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        except ValueError:
            pass  # unreadable: make a new one
    ca = trustme.CA(organization_name="fal emulator")
    key_path.touch(mode=0o600)
    ca.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(ca.cert_pem.bytes())
    return ca


def make_tls(ca_dir: Path, hosts: list[str], public_roots: bool = False) -> TLSMaterial:
    """Server TLS context for ``hosts`` and the CA file that clients must trust.

    With ``public_roots`` the CA file also carries certifi's public roots, for processes that
    set ``SSL_CERT_FILE`` to it and still talk to real HTTPS hosts.
    """
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca = _load_or_create_ca(ca_dir)
    names = list(dict.fromkeys([*hosts, "127.0.0.1", "localhost", "::1"]))
    server_cert = ca.issue_cert(*names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca_file = ca_dir / CA_CERT_NAME
    if public_roots:
        import certifi

        ca_file = ca_dir / "fal-emulator-ca-bundle.pem"
        ca_file.write_bytes(ca.cert_pem.bytes() + b"\n" + Path(certifi.where()).read_bytes())
    return TLSMaterial(ca_file=ca_file, context=context)

