"""A test certificate authority for the HTTPS stand-ins (Key Vault, and AVX behind a private CA)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class TestCA:
    ca: trustme.CA
    bundle_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context


def make_test_ca(directory: Path) -> TestCA:
    """Make a CA and write its certificate where REQUESTS_CA_BUNDLE / AVX_CA_BUNDLE can point."""
    ca = trustme.CA(organization_name="certrenew test CA")
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return TestCA(ca=ca, bundle_path=bundle)
