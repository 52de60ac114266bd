"""Real SFTP servers on loopback for the transport tests: an asyncssh server in-process,
and OpenSSH's sshd with a chrooted internal-sftp user (root only; see PITFALLS)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

SFTP_USER = "handoff"
SFTP_PASSWORD = "s3cret-pw"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_available() -> bool:
    """Whether this process can run OpenSSH's sshd with a chrooted user (root, installed)."""
    return os.geteuid() == 0 and Path(SSHD).exists() and shutil.which("useradd") is not None


def fingerprint(key: asyncssh.SSHKey) -> str:
    """A key's SHA256 fingerprint, as pinned."""
    return str(key.get_fingerprint("sha256"))


@dataclass
class AuthLog:
    """What the asyncssh server saw: the passwords tried (to prove none reached it)."""

    passwords: list[str] = field(default_factory=list)


class _Server(asyncssh.SSHServer):
    def __init__(self, log: AuthLog, client_key: asyncssh.SSHKey | None) -> None:
        self._log = log
        self._client_key = client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        self._log.passwords.append(password)
        return username == SFTP_USER and password == SFTP_PASSWORD

    def public_key_auth_supported(self) -> bool:
        return self._client_key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self._client_key is not None and key.public_data == self._client_key.public_data


class _CuttingSFTPServer(asyncssh.SFTPServer):
    """Drops the whole connection once more than `cut_after` bytes were written; with
    `write_delay_s`, each write waits that long (uploads that take a while)."""

    cut_after: int | None = None
    write_delay_s: float = 0.0

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], root: str) -> None:
        super().__init__(chan, chroot=root.encode())
        self._written = 0
        self._chan = chan

    def write(self, file_obj: object, offset: int, data: bytes) -> Any:
        self._written += len(data)
        if self.cut_after is not None and self._written > self.cut_after:
            self._chan.get_connection().abort()
            raise asyncssh.SFTPConnectionLost("cut by the test")
        if self.write_delay_s:
            return self._slow_write(file_obj, offset, data)
        return super().write(file_obj, offset, data)

    async def _slow_write(self, file_obj: object, offset: int, data: bytes) -> Any:
        await asyncio.sleep(self.write_delay_s)
        return super().write(file_obj, offset, data)


@dataclass
class AsyncsshSftp:
    """A running asyncssh SFTP server: where, its key, its folder, what it saw."""

    port: int
    host_key: asyncssh.SSHKey
    root: Path
    log: AuthLog
    server_class: type[_CuttingSFTPServer]


@asynccontextmanager
async def asyncssh_sftp(
    root: Path, client_key: asyncssh.SSHKey | None = None
) -> AsyncIterator[AsyncsshSftp]:
    """An asyncssh SFTP server on a free loopback port, chrooted at `root`."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    log = AuthLog()
    server_class = type("Cutting", (_CuttingSFTPServer,), {})
    server = await asyncssh.create_server(
        lambda: _Server(log, client_key),
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        sftp_factory=lambda chan: server_class(chan, str(root)),
        allow_scp=False,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield AsyncsshSftp(port, host_key, root, log, server_class)
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class OpenSshSftp:
    """A running sshd: its port, host key, the chroot, and the user's writable folder."""

    port: int
    host_key_line: str
    host_key_fingerprint: str
    chroot: Path
    upload: str  # as the SFTP user sees it
    readonly: str
    small: str | None  # a tiny tmpfs, where the test could mount one
    user: str
    password: str
    client_key: asyncssh.SSHKey
    client_key_passphrase: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def openssh_sftp() -> Iterator[OpenSshSftp]:
    """sshd on a free loopback port with user handoffsftp chrooted to a root-owned folder
    (every path component root-owned and not group/world-writable, so not under /tmp)."""
    user = "handoffsftp"
    base = Path("/var/lib/handoff-test-sshd") / uuid.uuid4().hex[:8]
    chroot, keys = base / "chroot", base / "keys"
    for folder in (base.parent, base, chroot, keys):
        folder.mkdir(mode=0o755, exist_ok=True)
        os.chmod(folder, 0o755)
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        _run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user)
    password = "pw-" + uuid.uuid4().hex[:12]
    subprocess.run(["chpasswd"], input=f"{user}:{password}".encode(), check=True)
    for name, owner, mode in (("upload", user, 0o755), ("readonly", "root", 0o755)):
        (chroot / name).mkdir()
        shutil.chown(chroot / name, owner, owner)
        os.chmod(chroot / name, mode)
    small: str | None = None
    (chroot / "small").mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(chroot / "small")],
        capture_output=True,
    )
    if mounted.returncode == 0:
        shutil.chown(chroot / "small", user, user)
        small = "/small"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_key"))
    passphrase = "open-" + uuid.uuid4().hex[:6]
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    (keys / user).write_text(client_key.export_public_key().decode())
    os.chmod(keys / user, 0o644)
    port = _free_port()
    config = base / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {base / "host_key"}
PidFile {base / "sshd.pid"}
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {keys}/%u
StrictModes yes
Subsystem sftp internal-sftp
Match User {user}
    ChrootDirectory {chroot}
    ForceCommand internal-sftp
    AllowTcpForwarding no
    X11Forwarding no
"""
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    log = base / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
        public = (base / "host_key.pub").read_text().split()
        line = f"[127.0.0.1]:{port} {public[0]} {public[1]}"
        key = asyncssh.import_public_key(f"{public[0]} {public[1]}")
        yield OpenSshSftp(
            port, line, fingerprint(key), chroot, "/upload", "/readonly", small, user,
            password, client_key, passphrase,
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if small:
            subprocess.run(["umount", str(chroot / "small")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
