"""FTPS through ftplib, run on one worker thread per session: explicit (AUTH TLS) or
implicit TLS, PROT P, passive mode, TLS session reuse on the data channel, temp-name-then-
rename like SFTP.

Why a thread and not asyncio streams: the data channel must resume the control channel's
TLS session (vsftpd refuses it otherwise, `require_ssl_reuse=YES` by default), and asyncio's
TLS cannot be handed a session to resume; `ssl.SSLContext.wrap_socket(..., session=...)`
can. So the blocking protocol runs on a dedicated thread (ftplib is not thread-safe: every
call of a session goes to the same one) while the event loop renders: each chunk is handed
to the thread as it comes and the next one is rendered during the send (`_overlapped`), so
the file streams with a few chunks in hand, never whole.

Never plain text: a server refusing AUTH TLS or PROT P is a permanent error saying so. The
peer is checked right after the TLS handshake, before USER/PASS: against a CA bundle or the
system store (host name included), or a pinned certificate SHA-256 (a mismatch names both).
The destination is resolved and checked by the egress policy once; the control connection
goes to the checked address, and passive data connections go to that same address (the
address a server puts in its PASV answer is ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import posixpath
import re
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

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
from services.delivery.transports.sftp import PART_SUFFIX, _check_expected, _overlapped

TlsMode = Literal["explicit", "implicit"]
WriteMode = Literal["rename", "direct"]
_T = TypeVar("_T")
_PIN = re.compile(r"(?:sha256:)?([0-9a-fA-F]{2}(?::?[0-9a-fA-F]{2}){31})")


def pinned_certificate(value: str) -> str:
    """The normalised pin ("sha256:<64 lowercase hex>") of a certificate fingerprint given
    as hex, with or without colons or a "sha256:" prefix; ValueError says why not."""
    text = value.strip()
    found = _PIN.fullmatch(text if not text.lower().startswith("sha256:") else text[7:])
    if found is None:
        raise ValueError(
            "a certificate pin is 'sha256:' and 64 hex digits, the SHA-256 of the DER "
            "certificate (openssl x509 -noout -fingerprint -sha256)"
        )
    return "sha256:" + found.group(1).replace(":", "").lower()


def certificate_sha256(der: bytes) -> str:
    """A certificate's fingerprint as pinned."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class FtpsSettings:
    """Where and how to write (no secrets here)."""

    host: str
    username: str
    tls: TlsMode = "explicit"
    port: int = 0  # 0: 21 explicit, 990 implicit
    ca_bundle: str = ""  # PEM; empty with no pin: the system store
    certificate_sha256: str = ""  # a pin instead of a CA
    remote_dir: str = "."
    write_mode: WriteMode = "rename"
    timeout_s: float = 30.0

    @property
    def effective_port(self) -> int:
        """The port, defaulted by TLS mode."""
        return self.port or (990 if self.tls == "implicit" else 21)


def ftps_settings(stored: dict[str, Any]) -> FtpsSettings:
    """The transport's settings from a connection's stored settings."""
    return FtpsSettings(
        host=str(stored["host"]),
        username=str(stored["username"]),
        tls="implicit" if stored.get("tls") == "implicit" else "explicit",
        port=int(stored.get("port") or 0),
        ca_bundle=str(stored.get("ca_bundle") or ""),
        certificate_sha256=str(stored.get("certificate_sha256") or ""),
        remote_dir=str(stored.get("remote_dir") or "."),
        write_mode="direct" if stored.get("write_mode") == "direct" else "rename",
    )


def tls_context(settings: FtpsSettings) -> ssl.SSLContext:
    """The client TLS context of a connection's trust setting (ValueError: a bad one)."""
    if settings.certificate_sha256:
        pinned_certificate(settings.certificate_sha256)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin is checked after the handshake
    elif settings.ca_bundle:
        try:
            context = ssl.create_default_context(cadata=settings.ca_bundle)
        except ssl.SSLError as exc:
            raise ValueError(f"the CA bundle does not load: {exc}") from exc
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Ftps(ftplib.FTP_TLS):
    """ftplib's FTP_TLS, with implicit TLS, a fixed server name for TLS, the checked
    address for passive data connections, and the data channel resuming the control
    channel's TLS session."""

    reuse_tls_session = True  # a test turns it off to see vsftpd refuse

    def __init__(self, context: ssl.SSLContext, server_name: str, implicit: bool, timeout: float):
        super().__init__(context=context, timeout=timeout)
        self._server_name = server_name
        self._implicit = implicit
        self.data_protected = False

    def connect_checked(self, address: str, port: int) -> str:
        """Connect (TLS from the start when implicit); the welcome line."""
        self.host, self.port = address, port
        self.sock = socket.create_connection((address, port), self.timeout)
        self.af = self.sock.family
        if self._implicit:
            plain = self.sock
            self.sock = self.context.wrap_socket(plain, server_hostname=self._server_name)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def auth_tls(self) -> str:
        """AUTH TLS and the handshake (explicit mode)."""
        reply = self.voidcmd("AUTH TLS")
        plain = self.sock
        assert plain is not None
        self.sock = self.context.wrap_socket(plain, server_hostname=self._server_name)
        self.file = self.sock.makefile(mode="r", encoding=self.encoding)
        return reply

    def peer_certificate(self) -> bytes:
        """The DER certificate the control channel's peer presented."""
        assert isinstance(self.sock, ssl.SSLSocket)
        return self.sock.getpeercert(binary_form=True) or b""

    def makepasv(self) -> tuple[str, int]:
        # The address in a PASV answer is ignored (ftplib's default); EPSV has none.
        _, port = super().makepasv()
        return self.host, port

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        # The plain-socket half of FTP_TLS's own: TLS (PROT P) is added here, below.
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # noqa: S321
        if self.data_protected:
            control = self.sock
            assert isinstance(control, ssl.SSLSocket)
            session = control.session if self.reuse_tls_session else None
            try:
                conn = self.context.wrap_socket(
                    conn, server_hostname=self._server_name, session=session
                )
            except BaseException:
                conn.close()
                raise
        return conn, size


def _reply(exc: BaseException) -> str:
    return str(exc).strip()


def _tls_refusal(exc: BaseException) -> bool:
    """Whether a refused STOR is the server refusing the data channel's TLS (the file may
    exist by then: vsftpd creates it first)."""
    text = _reply(exc).lower()
    return text.startswith("522") or "ssl" in text or "tls" in text


def _ftp_error(exc: BaseException, what: str) -> TransportError:
    """A failed FTP operation as a transport error: permanent where a person must act."""
    if isinstance(exc, TransportError):
        return exc
    text = _reply(exc)
    if isinstance(exc, ftplib.error_perm):
        code = text[:3]
        if code == "530":
            return PermanentError(Diagnosis.AUTH, f"{what}: login refused ({text})")
        if code in ("552",):
            return RetryableError(Diagnosis.FULL, f"{what}: the server has no room ({text})")
        if code == "522" or "ssl" in text.lower() or "tls" in text.lower():
            return PermanentError(Diagnosis.TLS, f"{what}: the server refused TLS ({text})")
        if code == "553" or "denied" in text.lower() or "permission" in text.lower():
            return PermanentError(Diagnosis.PERMISSION, f"{what}: permission denied ({text})")
        if code == "550":
            return PermanentError(Diagnosis.MISSING, f"{what}: {text}")
        return PermanentError(Diagnosis.PROTOCOL, f"{what}: {text}")
    if isinstance(exc, ftplib.error_temp):
        if text[:3] == "452":
            return RetryableError(Diagnosis.FULL, f"{what}: the server has no room ({text})")
        return RetryableError(Diagnosis.PROTOCOL, f"{what}: the server is busy ({text})")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(
            Diagnosis.HOST_KEY, f"{what}: the server's certificate is not trusted "
            f"({exc.verify_message})",
        )  # fmt: skip
    if isinstance(exc, ssl.SSLError):
        return RetryableError(Diagnosis.TLS, f"{what}: TLS failed ({exc})")
    if isinstance(exc, ConnectionRefusedError):
        return RetryableError(Diagnosis.REFUSED, f"{what}: the connection was refused")
    if isinstance(exc, TimeoutError):
        return RetryableError(Diagnosis.TIMEOUT, f"{what}: the server did not answer in time")
    if isinstance(exc, OSError | EOFError | ftplib.Error):
        return RetryableError(Diagnosis.CONNECTION_LOST, f"{what}: connection lost ({exc})")
    return RetryableError(Diagnosis.PROTOCOL, f"{what}: {exc}")


class FtpsTransport:
    """One FTPS session; `async with FtpsTransport(...) as ftps: await ftps.send_file(...)`."""

    def __init__(self, settings: FtpsSettings, password: str, egress: EgressPolicy) -> None:
        self._settings = settings
        self._password = password
        self._egress = egress
        self._ftp: _Ftps | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ftps")
        self.certificate_sha256 = ""
        self.tls_version = ""

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def __aenter__(self) -> FtpsTransport:
        try:
            await self._open()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call(ftp.quit), 5)
            with contextlib.suppress(Exception):
                ftp.close()
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _client(self) -> _Ftps:
        if self._ftp is None:
            raise RuntimeError("the transport is not open")
        return self._ftp

    async def _open(self) -> None:
        s = self._settings
        try:
            context = tls_context(s)
        except ValueError as exc:
            raise PermanentError(Diagnosis.CONFIG, f"ca_bundle: {exc}") from exc
        try:
            addresses = await self._egress.resolve(s.host, s.effective_port)
        except EgressRefusedError as exc:
            raise PermanentError(Diagnosis.EGRESS, exc.message) from exc
        except ResolutionError as exc:
            raise RetryableError(Diagnosis.DNS, str(exc)) from exc
        failure: TransportError | None = None
        for address in addresses:
            ftp = _Ftps(context, s.host, s.tls == "implicit", s.timeout_s)
            try:
                await self._call(self._session, ftp, str(address))
                self._ftp = ftp
                return
            except RetryableError as exc:  # try the next address of the name
                ftp.close()
                failure = exc
            except BaseException:
                ftp.close()
                raise
        assert failure is not None
        raise failure

    def _session(self, ftp: _Ftps, address: str) -> None:
        """Connect, TLS, check the peer, log in, PROT P, enter the folder (worker thread)."""
        s = self._settings
        where = f"{s.host}:{s.effective_port}"
        try:
            ftp.connect_checked(address, s.effective_port)
        except Exception as exc:
            raise _ftp_error(exc, where) from exc
        if s.tls == "explicit":
            try:
                ftp.auth_tls()
            except ftplib.error_perm as exc:
                raise PermanentError(
                    Diagnosis.TLS,
                    f"{where} refused AUTH TLS ({_reply(exc)}): it does not offer FTPS, and "
                    "Handoff never falls back to plain FTP",
                ) from exc
            except Exception as exc:
                raise _ftp_error(exc, f"{where} AUTH TLS") from exc
        self._check_peer(ftp, where)
        try:
            ftp.login(s.username, self._password)
        except Exception as exc:
            raise _ftp_error(exc, f"{where} login as {s.username!r}") from exc
        try:
            ftp.voidcmd("PBSZ 0")
            ftp.voidcmd("PROT P")
        except ftplib.error_perm as exc:
            raise PermanentError(
                Diagnosis.TLS,
                f"{where} refused PROT P ({_reply(exc)}): the files would travel in clear, "
                "and Handoff never falls back to plain FTP",
            ) from exc
        except Exception as exc:
            raise _ftp_error(exc, f"{where} PROT P") from exc
        ftp.data_protected = True
        ftp.set_pasv(True)
        try:
            ftp.voidcmd("TYPE I")  # binary: ASCII mode would rewrite line ends
        except Exception as exc:
            raise _ftp_error(exc, f"{where} TYPE I") from exc
        try:
            ftp.cwd(s.remote_dir)
        except Exception as exc:
            raise _ftp_error(exc, f"remote directory {s.remote_dir!r}") from exc

    def _check_peer(self, ftp: _Ftps, where: str) -> None:
        presented = certificate_sha256(ftp.peer_certificate())
        self.certificate_sha256 = presented
        assert isinstance(ftp.sock, ssl.SSLSocket)
        self.tls_version = ftp.sock.version() or ""
        pin = self._settings.certificate_sha256
        if pin and pinned_certificate(pin) != presented:
            raise PermanentError(
                Diagnosis.HOST_KEY,
                f"{where} presented certificate {presented}, not the pinned "
                f"{pinned_certificate(pin)}: if the server's certificate really changed, pin "
                "the new one",
            )

    def _path(self, name: str) -> str:
        if not name or "/" in name or name in (".", "..") or "\0" in name or "\n" in name:
            raise PermanentError(Diagnosis.CONFIG, f"{name!r} is not a plain file name")
        return name

    async def send_file(self, file: OutgoingFile, chunks: AsyncIterator[bytes]) -> FileReceipt:
        """Write `chunks` as `file`: to a temporary name renamed over the final one, or
        directly (see the SFTP transport for the two modes)."""
        ftp = self._client()
        final = self._path(file.name)
        direct = self._settings.write_mode == "direct"
        target = final if direct else self._path(f".{file.name}{PART_SUFFIX}")
        shown = posixpath.join(self._settings.remote_dir, final)
        digest, size = hashlib.sha256(), 0
        try:
            try:
                data, _ = await self._call(ftp.ntransfercmd, f"STOR {target}")
            except ftplib.Error as exc:
                if not _tls_refusal(exc):  # STOR itself refused: nothing was created
                    raise _ftp_error(exc, f"writing {shown!r}") from exc
                raise await self._refused_transfer(exc, target, shown) from exc
            except Exception as exc:  # the data connection failed after STOR was accepted
                raise await self._refused_transfer(exc, target, shown) from exc
            pending = True  # the server owes the transfer's final reply
            try:
                blocks = _coalesced(chunks, SEND_BYTES)
                async for chunk in _overlapped(blocks, lambda c: self._call(data.sendall, c)):
                    digest.update(chunk)
                    size += len(chunk)
                await self._call(_close_data, data)
                data.close()
                pending = False
                await self._call(ftp.voidresp)
            except ftplib.Error as exc:
                if _tls_refusal(exc):  # vsftpd answers so after the data channel failed
                    raise await self._refused_transfer(exc, target, shown) from exc
                raise _ftp_error(exc, f"writing {shown!r}") from exc
            finally:
                data.close()
                if pending:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._call(_drain_reply, ftp), 10)
            if not direct:
                _check_expected(file, digest.hexdigest())
                await self._replace(target, final, shown)
        except TransportError:
            if not direct:
                await self._remove_quietly(target)
            raise
        except (OSError, ftplib.Error, EOFError) as exc:
            if not direct:
                await self._remove_quietly(target)
            raise _ftp_error(exc, f"writing {shown!r}") from exc
        except BaseException:
            if not direct:
                await self._remove_quietly(target)
            raise
        return FileReceipt(shown, size, digest.hexdigest())

    async def _replace(self, source: str, final: str, shown: str) -> None:
        ftp = self._client()
        try:
            await self._call(ftp.rename, source, final)
        except ftplib.error_perm:
            # A server that refuses to rename over a file: remove it, then rename (not
            # atomic; vsftpd and pyftpdlib replace atomically and never take this path).
            try:
                await self._call(ftp.delete, final)
                await self._call(ftp.rename, source, final)
            except Exception as exc:
                raise _ftp_error(exc, f"renaming into {shown!r}") from exc
        except Exception as exc:
            raise _ftp_error(exc, f"renaming into {shown!r}") from exc

    async def _refused_transfer(self, exc: BaseException, name: str, shown: str) -> TransportError:
        """The error of a data connection refused or failed after STOR, naming the
        server's reply; the empty file such a server leaves behind (vsftpd creates it,
        then refuses the TLS handshake and hangs up) is removed."""
        reply = _reply(exc) if isinstance(exc, ftplib.Error) else ""
        if not reply:
            with contextlib.suppress(Exception):
                reply = await asyncio.wait_for(self._call(_drain_reply, self._client()), 10)
        await self._remove_if_empty(name)
        if reply.startswith("5"):
            reuse = " (the server requires TLS session reuse)" if "reuse" in reply else ""
            return PermanentError(
                Diagnosis.TLS, f"writing {shown!r}: the server refused the protected data "
                f"connection: {reply}{reuse}",
            )  # fmt: skip
        error = _ftp_error(exc, f"writing {shown!r}: the data connection failed")
        if reply:
            error = type(error)(error.diagnosis, f"{error.message}; the server said {reply}")
        return error

    async def _remove_if_empty(self, name: str) -> None:
        """Remove `name` if it exists and is empty, over a new session when the server
        hung up this one."""
        for fresh in (False, True):
            try:
                async with asyncio.timeout(15):
                    if fresh:
                        await self._reopen()
                    ftp = self._client()
                    if await self._call(ftp.size, name) == 0:
                        await self._call(ftp.delete, name)
                return
            except ftplib.error_perm:
                return  # no such file
            except Exception:  # noqa: S112 - the session is gone: try once more on a new one
                continue

    async def _reopen(self) -> None:
        old, self._ftp = self._ftp, None
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()
        await self._open()

    async def _remove_quietly(self, name: str) -> None:
        ftp = self._ftp
        if ftp is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._call(ftp.delete, name)

    async def send_record(self, record: OutgoingRecord) -> ItemResult:
        """FTPS delivers files, not single records."""
        raise PermanentError(Diagnosis.CONFIG, "an FTPS connection sends files, not records")

    async def probe(self) -> ProbeReport:
        """Write and remove a small probe file."""
        name = f".handoff-probe-{secrets.token_hex(6)}"

        async def content() -> AsyncIterator[bytes]:
            yield b"handoff connection test\n"

        receipt = await self.send_file(OutgoingFile(name), content())
        try:
            await self._call(self._client().delete, name)
        except Exception as exc:
            raise _ftp_error(exc, f"removing the probe {receipt.path!r}") from exc
        s = self._settings
        trust = (
            "matches the pinned certificate"
            if s.certificate_sha256
            else "is trusted by the CA bundle"
            if s.ca_bundle
            else "is trusted by the system store"
        )
        return ProbeReport(
            steps=(
                f"connected to {s.host}:{s.effective_port} ({s.tls} TLS, {self.tls_version})",
                f"certificate {self.certificate_sha256} {trust}",
                f"logged in as {s.username}, data channel protected (PROT P)",
                f"wrote and removed {receipt.path} ({receipt.size} bytes)",
            ),
            peer_identity=self.certificate_sha256,
        )


SEND_BYTES = 1024 * 1024


async def _coalesced(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The same bytes in blocks of about `size`: each hand-over to the FTP thread waits for
    the GIL while the loop renders, so fewer, larger ones keep the two overlapping."""
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def _close_data(conn: socket.socket) -> None:
    """End the data channel: a TLS close_notify first, as servers expect (vsftpd checks)."""
    if isinstance(conn, ssl.SSLSocket):
        with contextlib.suppress(OSError, ssl.SSLError):
            conn.unwrap()


def _drain_reply(ftp: _Ftps) -> str:
    """The reply that ends a refused or cut transfer, if the server sends one soon (a
    pending reply would otherwise be read as the answer to the next command)."""
    sock = ftp.sock
    if sock is None:
        return ""
    before = sock.gettimeout()
    sock.settimeout(5)
    try:
        return ftp.getresp()
    except (ftplib.Error, EOFError) as exc:
        return _reply(exc)
    except OSError:
        return ""
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(before)
