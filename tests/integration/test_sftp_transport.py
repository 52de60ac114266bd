"""The SFTP transport against real servers: asyncssh's, and OpenSSH's sshd (chrooted)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from services.common.egress import EgressPolicy
from services.delivery.transports.base import (
    Diagnosis,
    OutgoingFile,
    PermanentError,
    RetryableError,
)
from services.delivery.transports.sftp import (
    PART_SUFFIX,
    SftpSecrets,
    SftpSettings,
    SftpTransport,
    load_private_key,
    pinned_fingerprint,
)
from tests.integration.sftp_servers import (
    SFTP_PASSWORD,
    SFTP_USER,
    AsyncsshSftp,
    OpenSshSftp,
    asyncssh_sftp,
    fingerprint,
    openssh_sftp,
    sshd_available,
)

LOOPBACK = EgressPolicy.from_env({"HANDOFF_EGRESS_ALLOW": "127.0.0.0/8"})


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AsyncsshSftp]:
    (tmp_path / "drop").mkdir()
    async with asyncssh_sftp(tmp_path) as running:
        yield running


def _settings(server: AsyncsshSftp, **changes: object) -> SftpSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": SFTP_USER,
        "host_key": fingerprint(server.host_key),
        "remote_dir": "/drop",
    }
    values.update(changes)
    return SftpSettings(**values)  # type: ignore[arg-type]


PASSWORD = SftpSecrets(password=SFTP_PASSWORD)


async def test_a_file_arrives_whole_under_its_final_name_and_a_retry_replaces_it(
    server: AsyncsshSftp,
) -> None:
    async with SftpTransport(_settings(server), PASSWORD, LOOPBACK) as sftp:
        first = await sftp.send_file(OutgoingFile("d-1.csv"), _chunks(b"a,b\r\n", b"1,2\r\n"))
        again = await sftp.send_file(OutgoingFile("d-1.csv"), _chunks(b"a,b\r\n", b"3,4\r\n"))
    assert (first.path, first.size) == ("/drop/d-1.csv", 10)
    assert (server.root / "drop" / "d-1.csv").read_bytes() == b"a,b\r\n3,4\r\n"
    assert again.sha256 != first.sha256
    assert sorted(p.name for p in (server.root / "drop").iterdir()) == ["d-1.csv"]


async def test_direct_mode_writes_the_final_name_at_once(server: AsyncsshSftp) -> None:
    settings = _settings(server, write_mode="direct")
    async with SftpTransport(settings, PASSWORD, LOOPBACK) as sftp:
        await sftp.send_file(OutgoingFile("now.csv"), _chunks(b"x"))
    assert (server.root / "drop" / "now.csv").read_bytes() == b"x"


async def test_a_wrong_host_key_is_refused_naming_both_and_no_password_is_sent(
    server: AsyncsshSftp,
) -> None:
    other = fingerprint(asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(PermanentError) as caught:
        async with SftpTransport(_settings(server, host_key=other), PASSWORD, LOOPBACK):
            pass  # pragma: no cover
    assert caught.value.diagnosis is Diagnosis.HOST_KEY
    assert other in caught.value.message
    assert fingerprint(server.host_key) in caught.value.message
    assert server.log.passwords == []


async def test_a_wrong_password_is_an_authentication_error(server: AsyncsshSftp) -> None:
    with pytest.raises(PermanentError) as caught:
        async with SftpTransport(_settings(server), SftpSecrets(password="nope"), LOOPBACK):
            pass  # pragma: no cover
    assert caught.value.diagnosis is Diagnosis.AUTH


async def test_a_missing_folder_and_a_refused_port_are_told_apart(
    server: AsyncsshSftp,
) -> None:
    with pytest.raises(PermanentError) as missing:
        async with SftpTransport(_settings(server, remote_dir="/nope"), PASSWORD, LOOPBACK):
            pass  # pragma: no cover
    assert missing.value.diagnosis is Diagnosis.MISSING
    with pytest.raises(RetryableError) as refused:
        async with SftpTransport(_settings(server, port=1), PASSWORD, LOOPBACK):
            pass  # pragma: no cover
    assert refused.value.diagnosis is Diagnosis.REFUSED


async def test_an_internal_destination_is_refused_by_the_egress_policy(
    server: AsyncsshSftp,
) -> None:
    with pytest.raises(PermanentError) as caught:
        async with SftpTransport(_settings(server), PASSWORD, EgressPolicy()):
            pass  # pragma: no cover
    assert caught.value.diagnosis is Diagnosis.EGRESS
    assert server.log.passwords == []


async def test_a_server_gone_mid_upload_leaves_no_file_under_the_final_name(
    server: AsyncsshSftp,
) -> None:
    server.server_class.cut_after = 100_000
    block = b"r" * 65_536
    with pytest.raises(RetryableError) as caught:
        async with SftpTransport(_settings(server), PASSWORD, LOOPBACK) as sftp:
            await sftp.send_file(OutgoingFile("big.csv"), _chunks(*[block] * 10))
    assert caught.value.diagnosis is Diagnosis.CONNECTION_LOST
    assert not (server.root / "drop" / "big.csv").exists()


async def test_key_authentication_with_a_passphrase(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    encrypted = key.export_private_key(passphrase="open sesame").decode()
    (tmp_path / "drop").mkdir()
    async with asyncssh_sftp(tmp_path, client_key=key) as running:
        secrets = SftpSecrets(private_key=encrypted, passphrase="open sesame")
        async with SftpTransport(_settings(running), secrets, LOOPBACK) as sftp:
            await sftp.send_file(OutgoingFile("k.csv"), _chunks(b"k"))
        assert running.log.passwords == []
        with pytest.raises(PermanentError, match="give its passphrase"):
            async with SftpTransport(
                _settings(running), SftpSecrets(private_key=encrypted), LOOPBACK
            ):
                pass  # pragma: no cover
    assert (tmp_path / "drop" / "k.csv").read_bytes() == b"k"


def test_host_key_settings_pin_a_fingerprint_or_say_why_not() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode().strip()
    expected = fingerprint(key)
    assert pinned_fingerprint(public) == expected
    assert pinned_fingerprint(f"sftp.example.com {public}") == expected
    assert pinned_fingerprint(expected) == expected
    for bad in ("", "hello", "SHA256:short", "ssh-ed25519 AAAAnotbase64!!"):
        with pytest.raises(ValueError, match=r"host key|fingerprint"):
            pinned_fingerprint(bad)
    with pytest.raises(ValueError, match="does not parse"):
        load_private_key("-----BEGIN NONSENSE-----", "")
    encrypted = key.export_private_key(passphrase="right").decode()
    with pytest.raises(ValueError, match="give its passphrase"):
        load_private_key(encrypted, "")
    with pytest.raises(ValueError, match="does not open"):
        load_private_key(encrypted, "wrong")
    assert load_private_key(encrypted, "right").public_data == key.public_data


# --- OpenSSH's sshd ------------------------------------------------------------------------

# CI sets HANDOFF_REQUIRE_SSHD=1: there a missing sshd fails these tests instead of
# skipping them.
needs_sshd = pytest.mark.skipif(
    not sshd_available() and not os.environ.get("HANDOFF_REQUIRE_SSHD"),
    reason="needs root and openssh-server",
)


@pytest.fixture(scope="module")
def sshd() -> Iterator[OpenSshSftp]:
    assert sshd_available(), "HANDOFF_REQUIRE_SSHD is set, but sshd cannot run here"
    with openssh_sftp() as running:
        yield running


def _openssh(sshd: OpenSshSftp, **changes: object) -> SftpSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": sshd.user,
        "host_key": sshd.host_key_line,
        "remote_dir": sshd.upload,
    }
    values.update(changes)
    return SftpSettings(**values)  # type: ignore[arg-type]


@needs_sshd
async def test_openssh_receives_the_file_by_rename_and_the_probe_leaves_nothing(
    sshd: OpenSshSftp,
) -> None:
    secrets = SftpSecrets(password=sshd.password)
    async with SftpTransport(_openssh(sshd), secrets, LOOPBACK) as sftp:
        receipt = await sftp.send_file(OutgoingFile("o.csv"), _chunks(b"h\r\n", b"v\r\n"))
        report = await sftp.probe()
    folder = sshd.chroot / "upload"
    assert (folder / "o.csv").read_bytes() == b"h\r\nv\r\n"
    assert receipt.path == "/upload/o.csv"
    assert sshd.host_key_fingerprint in report.steps[1]
    assert sorted(p.name for p in folder.iterdir()) == ["o.csv"]
    assert not [p for p in folder.iterdir() if p.name.endswith(PART_SUFFIX)]


@needs_sshd
async def test_openssh_key_login_wrong_password_and_read_only_folder(sshd: OpenSshSftp) -> None:
    key_text = sshd.client_key.export_private_key().decode()
    async with SftpTransport(_openssh(sshd), SftpSecrets(private_key=key_text), LOOPBACK) as sftp:
        await sftp.send_file(OutgoingFile("key.csv"), _chunks(b"k"))
    with pytest.raises(PermanentError) as auth:
        async with SftpTransport(_openssh(sshd), SftpSecrets(password="wrong"), LOOPBACK):
            pass  # pragma: no cover
    assert auth.value.diagnosis is Diagnosis.AUTH
    secrets = SftpSecrets(password=sshd.password)
    async with SftpTransport(_openssh(sshd, remote_dir=sshd.readonly), secrets, LOOPBACK) as sftp:
        with pytest.raises(PermanentError) as denied:
            await sftp.send_file(OutgoingFile("x.csv"), _chunks(b"x"))
    assert denied.value.diagnosis is Diagnosis.PERMISSION
    assert list((sshd.chroot / "readonly").iterdir()) == []


@needs_sshd
async def test_openssh_full_disk_is_retryable_and_leaves_no_partial_file(
    sshd: OpenSshSftp,
) -> None:
    if sshd.small is None:
        pytest.skip("this machine does not let the test mount a tmpfs")
    secrets = SftpSecrets(password=sshd.password)
    block = b"f" * 32_768
    async with SftpTransport(_openssh(sshd, remote_dir=sshd.small), secrets, LOOPBACK) as sftp:
        with pytest.raises(RetryableError) as full:
            await sftp.send_file(OutgoingFile("full.csv"), _chunks(*[block] * 8))
    assert full.value.diagnosis is Diagnosis.FULL
    assert list((sshd.chroot / "small").iterdir()) == []
