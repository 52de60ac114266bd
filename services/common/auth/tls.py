"""TLS for every server: certificate and key from files, picked up again when they change.

Both gRPC (dynamic server credentials) and aiohttp (an SNI callback swapping the
context) ask at each new handshake; a change of either file's size or mtime reloads
both, so a rotated certificate (cert-manager, a mounted Secret) is served without a
restart. A pair that fails to load (half-written during a rotation) is skipped and the
previous one kept.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """Where a server's certificate chain and private key are (PEM)."""

    cert_file: Path
    key_file: Path


def _stamp(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size


class _WatchedPair:
    """A cert and key pair and the stamps they had when last read."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamps: tuple[tuple[int, int], ...] = ()

    def read_if_changed(self) -> tuple[bytes, bytes] | None:
        """(cert, key) when they changed since the last read (or were never read)."""
        try:
            stamps = (_stamp(self.files.cert_file), _stamp(self.files.key_file))
            if stamps == self._stamps:
                return None
            pair = self.files.cert_file.read_bytes(), self.files.key_file.read_bytes()
        except OSError as exc:
            if not self._stamps:
                raise
            log.warning("TLS files unreadable, keeping the loaded pair: %s", exc)
            return None
        self._stamps = stamps
        return pair


def grpc_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that reload `files` when they change."""
    watched = _WatchedPair(files)
    first = watched.read_if_changed()
    assert first is not None
    cert, key = first

    def config(cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)])

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        changed = watched.read_if_changed()
        if changed is None:
            return None
        log.info("TLS certificate reloaded", extra={"cert_file": str(files.cert_file)})
        return config(*changed)

    # The stubs say the fetcher must return a configuration; grpc documents None as
    # "keep the current one".
    return grpc.dynamic_ssl_server_credentials(config(cert, key), fetch)  # type: ignore[arg-type]


def http_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A server SSLContext that swaps in a fresh context when `files` change."""
    watched = _WatchedPair(files)

    def load() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(files.cert_file, files.key_file)
        return context

    watched.read_if_changed()
    current = [load()]

    def on_handshake(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if watched.read_if_changed() is not None:
            try:
                fresh = load()
                fresh.sni_callback = on_handshake
                current[0] = fresh
                log.info("TLS certificate reloaded", extra={"cert_file": str(files.cert_file)})
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS files did not load, keeping the previous pair: %s", exc)
        sock.context = current[0]

    current[0].sni_callback = on_handshake
    outer = load()
    outer.sni_callback = on_handshake
    return outer
