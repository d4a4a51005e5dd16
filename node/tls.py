"""DICOM TLS for the Storage SCP (PS3.15 B.1): the server context.

The context offers TLS 1.2 or later with the node's certificate; given a CA file it
verifies the certificates clients present, and may require one. The handshake itself
happens in each connection's own thread, bounded by the ACSE timeout
(:mod:`node.acceptor.server`), so one silent connection stalls nobody else.
"""

from __future__ import annotations

import ssl
from pathlib import Path

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(
    cert_file: Path,
    key_file: Path,
    ca_file: Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """The server's TLS context; a presented client certificate is verified against
    ``ca_file``, and one is required when ``require_client_cert``."""
    if require_client_cert and ca_file is None:
        raise ValueError("requiring client certificates needs a CA file to verify them")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context
