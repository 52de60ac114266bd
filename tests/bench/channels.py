"""FTPS and email delivery benchmarks.

- FTPS: 1,000,000 referrals with the default layout to a local vsftpd (explicit TLS,
  require_ssl_reuse=YES), by the delivery service in its own process, beside the
  hand-rolled way measured in the same run: `COPY … TO STDOUT CSV` streamed through
  ftplib (a data channel resuming the control channel's TLS session); and the delivery
  process's peak RSS.
- Email: a 50,000-referral delivery as a gzip attachment to a local SMTP relay (aiosmtpd,
  STARTTLS and AUTH): seconds end to end and the delivery process's peak RSS.
Needs root (vsftpd with a chrooted user); `python -m tests.bench channels`.
"""

from __future__ import annotations

import asyncio
import ftplib
import json
import queue
import socket
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from services.common.layouts.compiler import compile_layout
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.referral_rows import QUERIES, range_arguments
from services.common.secrets import SecretBox, connection_secret_context
from tests.bench import delivery, render
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow
from tests.integration.ftps_servers import Vsftpd, vsftpd, vsftpd_available
from tests.integration.smtp_relays import smtp_relay

TOTAL_ROWS = render.TOTAL_ROWS
EMAIL_ROWS = 50_000


class _ReusingFtp(ftplib.FTP_TLS):
    """Stock FTP_TLS whose data channel resumes the control channel's TLS session."""

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            control = self.sock
            assert isinstance(control, ssl.SSLSocket)
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=control.session
            )
        return conn, size


class _QueueReader:
    """A file object over a queue of chunks (None ends it), for storbinary."""

    def __init__(self, chunks: queue.Queue[bytes | None]) -> None:
        self._chunks = chunks

    def read(self, size: int = -1) -> bytes:
        chunk = self._chunks.get()
        return chunk or b""


async def _hand_rolled(dsn: str, account: str, server: Vsftpd, fields: list[str]) -> float:
    """COPY of the same columns streamed through ftplib: seconds, from the FTP connect."""
    conn = await asyncpg.connect(dsn)
    chunks: queue.Queue[bytes | None] = queue.Queue(64)
    context = ssl.create_default_context(cadata=server.certificate.cert_pem.decode())

    def upload() -> None:
        ftp = _ReusingFtp(context=context, timeout=60)
        ftp.connect("127.0.0.1", server.port)
        ftp.login(server.user, server.password)  # AUTH TLS first (FTP_TLS.login)
        ftp.prot_p()
        ftp.cwd(server.upload)
        ftp.storbinary("STOR raw.csv", _QueueReader(chunks), blocksize=256 * 1024)
        ftp.quit()

    started = time.perf_counter()
    thread = threading.Thread(target=upload)
    thread.start()

    pending: list[bytes] = []
    held = 0

    async def write(data: bytes) -> None:
        # COPY hands over a row or so at a time: pass the thread 1 MiB blocks instead.
        nonlocal held
        pending.append(bytes(data))
        held += len(data)
        if held >= 1024 * 1024:
            block = b"".join(pending)
            pending.clear()
            held = 0
            await asyncio.to_thread(chunks.put, block)

    async with conn.transaction(readonly=True):
        await conn.execute(QUERIES["render_session"])
        await conn.copy_from_query(
            QUERIES["referral_rows_in_range"],
            *range_arguments(uuid.UUID(account), 0, TOTAL_ROWS, None, fields, None),
            output=write, format="csv",
        )  # fmt: skip
    if pending:
        await asyncio.to_thread(chunks.put, b"".join(pending))
    await asyncio.to_thread(chunks.put, None)
    await asyncio.to_thread(thread.join)
    seconds = time.perf_counter() - started
    await conn.close()
    return seconds


async def _connection(
    dsn: str, account: str, kind: str, settings: dict[str, Any], password: str = ""
) -> uuid.UUID:
    box = SecretBox.from_env({"HANDOFF_SECRET_KEYS": delivery.KEYS})
    connection = uuid.uuid4()
    sealed = (
        {"password": box.seal(password, connection_secret_context(connection, "password"))}
        if password
        else {}
    )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO connections (id, account_id, name, kind, settings, secrets)
               VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)""",
            connection, uuid.UUID(account), f"bench {kind}", kind, json.dumps(settings),
            json.dumps(sealed),
        )  # fmt: skip
    finally:
        await conn.close()
    return connection


async def _approved(dsn: str, account: str, connection: uuid.UUID, address: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO recipients (id, connection_id, account_id, address, state)
               VALUES ($1, $2, $3, $4, 'approved')""",
            uuid.uuid4(), connection, uuid.UUID(account), address,
        )  # fmt: skip
    finally:
        await conn.close()


async def run(dsn: str) -> list[BenchRow]:
    """Seed a scratch database, measure, drop it; the table rows."""
    if not vsftpd_available():
        return [BenchRow("FTPS/email bench skipped: needs root and vsftpd", 0, "-")]
    async with scratch_database(dsn, "channels") as scratch:
        account = await render._seed(scratch, TOTAL_ROWS)
        token = await delivery._setup_token(scratch)
        fields = list(compile_layout(DEFAULT_LAYOUT, {}).row_fields)
        with vsftpd() as server:
            settings = {
                "host": "127.0.0.1", "port": server.port, "username": server.user,
                "tls": "explicit", "ca_bundle": server.certificate.cert_pem.decode(),
                "certificate_sha256": "", "remote_dir": server.upload,
                "file_name_template": "", "write_mode": "rename", "manifest": False,
                "max_rows_per_file": 0,
            }  # fmt: skip
            ftps = await _connection(scratch, account, "ftps", settings, server.password)
            raw = [await _hand_rolled(scratch, account, server, fields)]
            full, full_rss, full_rows = await delivery._deliver(
                scratch, account, ftps, None, TOTAL_ROWS, token
            )
            raw.append(await _hand_rolled(scratch, account, server, fields))
        with tempfile.TemporaryDirectory() as folder, smtp_relay(Path(folder)) as relay:
            mail = await _connection(
                scratch, account, "email",
                {"subject_template": "{task}: {rows}", "body_template": "{file}",
                 "gzip_above_bytes": 1024 * 1024, "file_name_template": ""},
            )  # fmt: skip
            await _approved(scratch, account, mail, "bench@example.com")
            r = relay.relay
            env = {
                "HANDOFF_SMTP_HOST": r.host, "HANDOFF_SMTP_PORT": str(r.port),
                "HANDOFF_SMTP_TLS": "starttls", "HANDOFF_SMTP_USERNAME": r.username,
                "HANDOFF_SMTP_PASSWORD": r.password, "HANDOFF_SMTP_FROM": r.sender,
                "HANDOFF_SMTP_CA_FILE": r.ca_file, "HANDOFF_EMAIL_SPOOL_DIR": folder,
            }  # fmt: skip
            email_s, email_rss, email_rows = await delivery._deliver(
                scratch, account, mail, None, EMAIL_ROWS, token, env
            )
            (received,) = relay.received
            ((attachment, data),) = received.attachments()
    assert attachment.endswith(".gz"), attachment
    return [
        BenchRow(
            "FTPS delivery 1M rows to vsftpd, default layout",
            full_rows / full,
            "rows/s",
            "COPY CSV -> ftplib, session reuse",
            TOTAL_ROWS / min(raw),
            ">= 0.5x",
        ),
        BenchRow("delivery process peak RSS, FTPS 1M rows", full_rss, "MiB", "", None, "< 200"),
        BenchRow(
            f"email delivery {email_rows:,} rows, gzip attachment ({len(data) / 2**20:.1f} MiB)",
            email_s,
            "s",
            "",
            None,
            "reported",
        ),
        BenchRow(
            "delivery process peak RSS, email 50k rows", email_rss, "MiB", "", None, "reported"
        ),
    ]
