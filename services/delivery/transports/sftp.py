"""SFTP through asyncssh: a pinned host key, password and/or key, temp-name-then-rename.

The host key is checked before authentication, so a password never reaches an impostor:
asyncssh is given an empty trust list and asks `_PinnedHostKey` about each key, which
compares its SHA-256 fingerprint with the pinned one and remembers what it was shown (the
diagnosis names both). The destination is resolved and checked by the egress policy once;
the connection goes to the checked address.

In rename mode (the default) a file is written to `.<name>.handoff-part` and renamed over
the final name with posix-rename (atomic, replacing): a receiver never sees a partial
file under the final name, and a retry of the same delivery writes the same names, so it
replaces instead of duplicating. Direct mode writes the final name at once, for drop
folders that act on upload; a crash can then leave a partial file (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import asyncssh

from services.common.egress import EgressPolicy, EgressRefusedError, ResolutionError
from services.delivery.transports.base import (
    Diagnosis,
    FileReceipt,
    ItemResult,
    OutgoingFile,
    OutgoingRecord,
    PermanentError,
    ProbeReport,
    RetryableError,
    TransportError,
)

WriteMode = Literal["rename", "direct"]
PART_SUFFIX = ".handoff-part"
READ_CHUNK = 256 * 1024


@dataclass(frozen=True, order=True)
class RemoteFile:
    """A regular file of the connection's folder."""

    name: str
    size: int
    mtime: int


def pinned_fingerprint(host_key: str) -> str:
    """The SHA256 fingerprint a host key setting pins: a `SHA256:…` fingerprint as is, or
    the fingerprint of a known_hosts line (`[host] type base64 [comment]`) or public key.
    ValueError says why a value pins nothing."""
    text = host_key.strip()
    if text.startswith("SHA256:"):
        if len(text) != 50:
            raise ValueError("a SHA256 fingerprint has 43 base64 characters after 'SHA256:'")
        return text
    parts = text.split()
    for start in range(min(len(parts), 2)):  # with or without a leading host field
        candidate = " ".join(parts[start : start + 2])
        try:
            return str(asyncssh.import_public_key(candidate).get_fingerprint("sha256"))
        except (asyncssh.KeyImportError, ValueError, IndexError):
            continue
    raise ValueError(
        "not a host key: give a known_hosts line ('host ssh-ed25519 AAAA…') or a "
        "'SHA256:…' fingerprint (ssh-keyscan HOST | ssh-keygen -lf -)"
    )


def load_private_key(text: str, passphrase: str) -> asyncssh.SSHKey:
    """The private key, or ValueError saying whether it does not parse or needs a passphrase."""
    try:
        return asyncssh.import_private_key(text, passphrase or None)
    except asyncssh.KeyEncryptionError as exc:
        if not passphrase:
            raise ValueError("the private key is encrypted: give its passphrase") from exc
        raise ValueError("the passphrase does not open the private key") from exc
    except asyncssh.KeyImportError as exc:
        if "passphrase" in str(exc).lower() and not passphrase:
            raise ValueError("the private key is encrypted: give its passphrase") from exc
        raise ValueError(f"the private key does not parse: {exc}") from exc


@dataclass(frozen=True)
class SftpSettings:
    """Where and how to write (no secrets here)."""

    host: str
    username: str
    host_key: str  # a known_hosts line or a SHA256 fingerprint
    remote_dir: str = "."
    port: int = 22
    write_mode: WriteMode = "rename"
    connect_timeout_s: float = 15.0


@dataclass(frozen=True)
class SftpSecrets:
    """What authenticates: a password, a private key (with passphrase), or both."""

    password: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)
    passphrase: str = field(default="", repr=False)


def sftp_settings(stored: dict[str, Any]) -> SftpSettings:
    """The transport's settings from a connection's stored settings."""
    return SftpSettings(
        host=str(stored["host"]),
        username=str(stored["username"]),
        host_key=str(stored["host_key"]),
        remote_dir=str(stored.get("remote_dir") or "."),
        port=int(stored.get("port") or 22),
        write_mode="direct" if stored.get("write_mode") == "direct" else "rename",
    )


class _PinnedHostKey(asyncssh.SSHClient):
    """Accepts exactly the pinned host key and remembers what the server presented."""

    def __init__(self, expected: str) -> None:
        self.expected = expected
        self.presented = ""

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.presented = str(key.get_fingerprint("sha256"))
        return self.presented == self.expected


def _sftp_error(exc: Exception, what: str) -> TransportError:
    """A failed SFTP operation as a transport error: permanent where a person must act."""
    if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect):
        return PermanentError(Diagnosis.PERMISSION, f"{what}: permission denied ({exc.reason})")
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return PermanentError(Diagnosis.MISSING, f"{what}: no such file or directory")
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return RetryableError(Diagnosis.FULL, f"{what}: the server has no room ({exc.reason})")
    if isinstance(exc, asyncssh.SFTPFailure):
        # SFTP v3 (OpenSSH) reports a full disk as a bare failure: retry, saying both.
        return RetryableError(
            Diagnosis.FULL, f"{what}: the server failed the write ({exc.reason}); a full disk "
            "or quota looks like this"
        )  # fmt: skip
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.DisconnectError | OSError):
        return RetryableError(Diagnosis.CONNECTION_LOST, f"{what}: connection lost ({exc})")
    if isinstance(exc, asyncssh.SFTPError):
        return RetryableError(Diagnosis.PROTOCOL, f"{what}: {exc.reason}")
    return RetryableError(Diagnosis.PROTOCOL, f"{what}: {exc}")


def _check_expected(file: OutgoingFile, sha256: str) -> None:
    """Refuse to publish bytes other than those a resend must repeat."""
    if file.expected_sha256 and sha256 != file.expected_sha256:
        raise PermanentError(
            Diagnosis.MISMATCH,
            f"{file.name}: the bytes rendered now have SHA-256 {sha256}, not the original's "
            f"{file.expected_sha256} (a value renders differently now, e.g. after a phone "
            "number library upgrade); nothing was published",
        )


WRITES_AHEAD = 8


async def _overlapped(
    chunks: AsyncIterator[bytes], write: Callable[[bytes], Awaitable[object]]
) -> AsyncIterator[bytes]:
    """Yield each chunk while a writer task sends the ones before it, so rendering the
    next chunk overlaps the server's round trips (at most WRITES_AHEAD chunks in hand)."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(WRITES_AHEAD)

    async def writer() -> None:
        while (chunk := await queue.get()) is not None:
            await write(chunk)

    task = asyncio.create_task(writer())
    try:
        async for chunk in chunks:
            put = asyncio.ensure_future(queue.put(chunk))
            await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():  # the writer failed: stop at once, with its error
                put.cancel()
                task.result()
            yield chunk
        await queue.put(None)
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class SftpTransport:
    """One SFTP session; `async with SftpTransport(...) as sftp: await sftp.send_file(...)`."""

    def __init__(
        self, settings: SftpSettings, credentials: SftpSecrets, egress: EgressPolicy
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._egress = egress
        self._connection: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self.host_key_fingerprint = ""

    async def __aenter__(self) -> SftpTransport:
        try:
            await self._open()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._connection is not None:
            self._connection.close()
            await self._connection.wait_closed()
            self._connection = None

    def _client(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            raise RuntimeError("the transport is not open")
        return self._sftp

    async def _open(self) -> None:
        s = self._settings
        try:
            expected = pinned_fingerprint(s.host_key)
        except ValueError as exc:
            raise PermanentError(Diagnosis.CONFIG, f"host_key: {exc}") from exc
        try:
            addresses = await self._egress.resolve(s.host, s.port)
        except EgressRefusedError as exc:
            raise PermanentError(Diagnosis.EGRESS, exc.message) from exc
        except ResolutionError as exc:
            raise RetryableError(Diagnosis.DNS, str(exc)) from exc
        keys = None
        if self._credentials.private_key:
            try:
                keys = [
                    load_private_key(self._credentials.private_key, self._credentials.passphrase)
                ]
            except ValueError as exc:
                raise PermanentError(Diagnosis.CONFIG, f"private_key: {exc}") from exc
        failure: TransportError | None = None
        for address in addresses:
            try:
                self._connection = await self._connect(str(address), expected, keys)
                break
            except RetryableError as exc:  # try the next address of the name
                failure = exc
        if self._connection is None:
            assert failure is not None
            raise failure
        try:
            self._sftp = await self._connection.start_sftp_client()
            attrs = await self._sftp.stat(s.remote_dir)
        except (asyncssh.Error, OSError) as exc:
            raise _sftp_error(exc, f"remote directory {s.remote_dir!r}") from exc
        if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
            raise PermanentError(Diagnosis.MISSING, f"{s.remote_dir!r} is not a directory")

    async def _connect(
        self, address: str, expected: str, keys: list[asyncssh.SSHKey] | None
    ) -> asyncssh.SSHClientConnection:
        s = self._settings
        pinning = _PinnedHostKey(expected)
        options: dict[str, Any] = {
            "username": s.username,
            "password": self._credentials.password or None,
            "client_keys": keys,
            "known_hosts": ([], [], []),  # trust nothing up front: _PinnedHostKey decides
            "client_factory": lambda: pinning,
            "config": None,
            "agent_path": None,
            "connect_timeout": s.connect_timeout_s,
            "login_timeout": s.connect_timeout_s,
        }
        where = f"{s.host}:{s.port}"
        try:
            connection: asyncssh.SSHClientConnection = await asyncssh.connect(
                address, s.port, **options
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise PermanentError(
                Diagnosis.HOST_KEY,
                f"{where} presented host key {pinning.presented or 'none'}, not the pinned "
                f"{expected}: if the server's key really changed, pin the new one",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise PermanentError(
                Diagnosis.AUTH, f"{where} refused user {s.username!r}: {exc.reason}"
            ) from exc
        except ConnectionRefusedError as exc:
            raise RetryableError(Diagnosis.REFUSED, f"{where} refused the connection") from exc
        except TimeoutError as exc:
            raise RetryableError(Diagnosis.TIMEOUT, f"{where} did not answer in time") from exc
        except (asyncssh.Error, OSError) as exc:
            raise RetryableError(Diagnosis.CONNECTION_LOST, f"{where}: {exc}") from exc
        self.host_key_fingerprint = pinning.presented
        return connection

    def _path(self, name: str) -> str:
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise PermanentError(Diagnosis.CONFIG, f"{name!r} is not a plain file name")
        return posixpath.join(self._settings.remote_dir, name)

    async def send_file(self, file: OutgoingFile, chunks: AsyncIterator[bytes]) -> FileReceipt:
        """Write `chunks` as `file` (see the module doc for the two modes)."""
        sftp = self._client()
        final = self._path(file.name)
        direct = self._settings.write_mode == "direct"
        target = final if direct else self._path(f".{file.name}{PART_SUFFIX}")
        digest, size = hashlib.sha256(), 0
        try:
            async with sftp.open(target, "wb") as remote:
                async for chunk in _overlapped(chunks, remote.write):
                    digest.update(chunk)
                    size += len(chunk)
            if not direct:
                _check_expected(file, digest.hexdigest())
                await self._replace(target, final)
        except (asyncssh.Error, OSError) as exc:
            if not direct:
                await self._remove_quietly(target)
            raise _sftp_error(exc, f"writing {final!r}") from exc
        except BaseException:
            if not direct:
                await self._remove_quietly(target)
            raise
        return FileReceipt(final, size, digest.hexdigest())

    async def _replace(self, source: str, final: str) -> None:
        sftp = self._client()
        try:
            await sftp.posix_rename(source, final)
        except asyncssh.SFTPOpUnsupported:
            # No posix-rename extension: remove then rename (not atomic; say so in docs).
            if await sftp.exists(final):
                await sftp.remove(final)
            await sftp.rename(source, final)

    async def _remove_quietly(self, path: str) -> None:
        if self._sftp is None:
            return
        try:
            async with asyncio.timeout(5):
                await self._sftp.remove(path)
        except (asyncssh.Error, OSError, TimeoutError):
            pass  # the connection is gone or the file never came to be

    async def list_files(self) -> list[RemoteFile]:
        """The regular files of the folder (an audience source reads them), by name."""
        sftp = self._client()
        folder = self._settings.remote_dir
        try:
            names = await sftp.readdir(folder)
        except (asyncssh.Error, OSError) as exc:
            raise _sftp_error(exc, f"listing {folder!r}") from exc
        return sorted(
            RemoteFile(str(n.filename), n.attrs.size or 0, n.attrs.mtime or 0)
            for n in names
            if n.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR
        )

    async def read_file(self, name: str, chunk_bytes: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The file's bytes in chunks, as they arrive (never the whole file)."""
        path = self._path(name)
        try:
            async with self._client().open(path, "rb") as remote:
                # Binary mode: bytes, whatever asyncssh's annotation says.
                while chunk := cast(bytes, await remote.read(chunk_bytes)):
                    yield chunk
        except (asyncssh.Error, OSError) as exc:
            raise _sftp_error(exc, f"reading {path!r}") from exc

    async def send_record(self, record: OutgoingRecord) -> ItemResult:
        """SFTP delivers files, not single records."""
        raise PermanentError(Diagnosis.CONFIG, "an SFTP connection sends files, not records")

    async def probe(self) -> ProbeReport:
        """Write, read back the size of, and remove a small probe file."""
        name = f".handoff-probe-{secrets.token_hex(6)}"
        body = b"handoff connection test\n"

        async def content() -> AsyncIterator[bytes]:
            yield body

        receipt = await self.send_file(OutgoingFile(name), content())
        sftp = self._client()
        try:
            await sftp.remove(receipt.path)
        except (asyncssh.Error, OSError) as exc:
            raise _sftp_error(exc, f"removing the probe {receipt.path!r}") from exc
        return ProbeReport(
            steps=(
                f"connected to {self._settings.host}:{self._settings.port}",
                f"host key {self.host_key_fingerprint} matches the pinned key",
                f"logged in as {self._settings.username}",
                f"wrote and removed {receipt.path} ({receipt.size} bytes)",
            ),
            peer_identity=self.host_key_fingerprint,
        )
