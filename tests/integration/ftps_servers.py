"""Real FTPS servers on loopback for the transport tests: pyftpdlib's TLS_FTPHandler on a
thread of the test process (and variants: without TLS, refusing PROT P, slow writes), and
Debian's vsftpd (root only) with its own configuration, a chrooted user, explicit TLS with
`require_ssl_reuse=YES` or implicit TLS."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

FTP_USER = "handoff"
FTP_PASSWORD = "ftp-s3cret"
VSFTPD = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)


def vsftpd_available() -> bool:
    """Whether this process can run vsftpd with a chrooted local user (root, installed)."""
    return os.geteuid() == 0 and Path(VSFTPD).exists() and shutil.which("useradd") is not None


@dataclass(frozen=True)
class Certificate:
    """A self-signed server certificate for 127.0.0.1 and localhost."""

    cert_pem: bytes
    key_pem: bytes
    sha256: str  # as pinned: "sha256:<hex>" of the DER form

    def write(self, folder: Path) -> tuple[Path, Path]:
        """server.crt and server.key in `folder`."""
        cert, key = folder / "server.crt", folder / "server.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        os.chmod(key, 0o600)
        return cert, key


def certificate(common_name: str = "localhost") -> Certificate:
    """A fresh RSA certificate (vsftpd loads RSA keys) valid for localhost and 127.0.0.1."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Certificate(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "sha256:" + hashlib.sha256(der).hexdigest(),
    )


_CERTIFICATE: Certificate | None = None


def shared_certificate() -> Certificate:
    """One certificate per test process (RSA key generation takes a moment)."""
    global _CERTIFICATE
    if _CERTIFICATE is None:
        _CERTIFICATE = certificate()
    return _CERTIFICATE


@dataclass
class PyFtpd:
    """A running pyftpdlib server: where, its certificate, its folder, its handler class
    (class attributes change its behaviour: `write_delay_s`)."""

    port: int
    root: Path
    certificate: Certificate
    handler: type[Any]
    passwords: list[str]  # every password a client sent (to prove none reached it)


class _SlowFile:
    """A file whose writes wait (an upload that takes a while)."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s

    def write(self, data: bytes) -> int:
        time.sleep(self._delay_s)  # pyftpdlib runs each session on its own thread here
        return int(self._inner.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _handler_class(base: type[Any], tls: bool, refuse_prot_p: bool) -> type[Any]:
    class Handler(base):  # type: ignore[misc]
        write_delay_s = 0.0

        def ftp_PROT(self, line: str) -> Any:
            if refuse_prot_p and line.strip().upper() == "P":
                self.respond("536 PROT P not supported by this server.")
                return None
            return super().ftp_PROT(line)

        def run_as_current_user(self, function: Any, *args: Any, **kwargs: Any) -> Any:
            opened = super().run_as_current_user(function, *args, **kwargs)
            if self.write_delay_s and getattr(function, "__name__", "") == "open":
                mode = args[1] if len(args) > 1 else kwargs.get("mode", "")
                if "w" in str(mode) or "a" in str(mode):
                    return _SlowFile(opened, self.write_delay_s)
            return opened

    if not tls:
        del Handler.ftp_PROT
    return Handler


@contextmanager
def pyftpd(root: Path, *, tls: bool = True, refuse_prot_p: bool = False) -> Iterator[PyFtpd]:
    """pyftpdlib on a free loopback port, user FTP_USER at `root`; with TLS required on
    both channels (or, `tls=False`, a plain FTP server)."""
    cert = shared_certificate()
    folder = root / ".tls"
    folder.mkdir(exist_ok=True)
    cert_file, key_file = cert.write(folder)
    passwords: list[str] = []

    class Recording(DummyAuthorizer):  # type: ignore[misc]
        def validate_authentication(self, username: str, password: str, handler: Any) -> None:
            passwords.append(password)
            super().validate_authentication(username, password, handler)

    authorizer = Recording()
    authorizer.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elradfmwMT")
    handler = _handler_class(TLS_FTPHandler if tls else FTPHandler, tls, refuse_prot_p)
    handler.authorizer = authorizer
    handler.banner = "handoff test ftpd"
    if tls:
        handler.certfile = str(cert_file)
        handler.keyfile = str(key_file)
        handler.tls_control_required = True
        handler.tls_data_required = not refuse_prot_p
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    try:
        yield PyFtpd(port, root, cert, handler, passwords)
    finally:
        server.close_all()
        thread.join(timeout=10)


@dataclass
class Vsftpd:
    """A running vsftpd: its port, certificate, the chroot and the user's writable folder."""

    port: int
    certificate: Certificate
    chroot: Path
    upload: str  # as the FTP user sees it (the folder is chroot / upload[1:])
    user: str
    password: str
    log: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PAM_SERVICE = "handoff-test-vsftpd"


@contextmanager
def vsftpd(*, implicit: bool = False, require_reuse: bool = True) -> Iterator[Vsftpd]:
    """vsftpd on a free loopback port, TLS required on both channels, with local user
    handoffftps chrooted to its root-owned home (vsftpd enters the home before the chroot,
    so it is one fixed folder); each server gets its own writable `upload-<id>` in it."""
    user = "handoffftps"
    instance = uuid.uuid4().hex[:8]
    top = Path("/var/lib/handoff-test-vsftpd")
    base, chroot = top / instance, top / "home"
    for folder in (top, base, chroot):
        folder.mkdir(mode=0o755, exist_ok=True)
        os.chmod(folder, 0o755)
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True,
            capture_output=True,
        )
    subprocess.run(["usermod", "-d", str(chroot), user], check=True, capture_output=True)
    password = "pw-" + uuid.uuid4().hex[:12]
    subprocess.run(["chpasswd"], input=f"{user}:{password}".encode(), check=True)
    upload = chroot / f"upload-{instance}"
    upload.mkdir()
    shutil.chown(upload, user, user)
    # PAM with pam_unix only: Debian's vsftpd service also demands a login shell.
    pam = Path("/etc/pam.d") / PAM_SERVICE
    pam.write_text("auth required pam_unix.so\naccount required pam_unix.so\n")
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    cert = shared_certificate()
    cert_file, key_file = cert.write(base)
    port = _free_port()
    log = base / "vsftpd.log"
    config = base / "vsftpd.conf"
    config.write_text(
        f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
chroot_local_user=YES
check_shell=NO
userlist_enable=NO
pam_service_name={PAM_SERVICE}
seccomp_sandbox=NO
secure_chroot_dir=/var/run/vsftpd/empty
pasv_enable=YES
ssl_enable=YES
allow_anon_ssl=NO
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse={"YES" if require_reuse else "NO"}
implicit_ssl={"YES" if implicit else "NO"}
rsa_cert_file={cert_file}
rsa_private_key_file={key_file}
ssl_ciphers=HIGH
vsftpd_log_file={log}
xferlog_enable=YES
dual_log_enable=YES
log_ftp_protocol=YES
"""
    )
    os.chmod(config, 0o600)
    proc = subprocess.Popen([VSFTPD, str(config)], stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                error = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"vsftpd exited: {error}")
            time.sleep(0.05)
        yield Vsftpd(port, cert, chroot, f"/{upload.name}", user, password, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(upload, ignore_errors=True)
