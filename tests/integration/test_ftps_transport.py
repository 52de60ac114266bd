"""The FTPS transport against real servers: pyftpdlib's TLS_FTPHandler (and variants without
TLS or refusing PROT P), and Debian's vsftpd with a chrooted user, explicit TLS with
require_ssl_reuse=YES, and implicit TLS."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.common.egress import EgressPolicy
from services.delivery.transports import ftps as ftps_module
from services.delivery.transports.base import Diagnosis, OutgoingFile, PermanentError
from services.delivery.transports.ftps import (
    FtpsSettings,
    FtpsTransport,
    pinned_certificate,
)
from services.delivery.transports.sftp import PART_SUFFIX
from tests.integration.ftps_servers import (
    FTP_PASSWORD,
    FTP_USER,
    PyFtpd,
    Vsftpd,
    certificate,
    pyftpd,
    vsftpd,
    vsftpd_available,
)

LOOPBACK = EgressPolicy.from_env({"HANDOFF_EGRESS_ALLOW": "127.0.0.0/8"})


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PyFtpd]:
    (tmp_path / "drop").mkdir()
    with pyftpd(tmp_path) as running:
        yield running


def _settings(server: PyFtpd, **changes: object) -> FtpsSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": FTP_USER,
        "certificate_sha256": server.certificate.sha256,
        "remote_dir": "/drop",
    }
    values.update(changes)
    return FtpsSettings(**values)  # type: ignore[arg-type]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_certificate_pin_is_normalised_and_a_bad_one_refused() -> None:
    hex64 = "AB" * 32
    assert pinned_certificate(":".join(["AB"] * 32)) == "sha256:" + hex64.lower()
    assert pinned_certificate(f"SHA256:{hex64}") == "sha256:" + hex64.lower()
    with pytest.raises(ValueError, match="64 hex digits"):
        pinned_certificate("sha256:abc")


async def test_a_file_arrives_whole_under_its_final_name_and_a_retry_replaces_it(
    server: PyFtpd,
) -> None:
    block = os.urandom(200_000)
    async with FtpsTransport(_settings(server), FTP_PASSWORD, LOOPBACK) as ftps:
        first = await ftps.send_file(OutgoingFile("d-1.csv"), _chunks(b"a,b\r\n", b"1,2\r\n"))
        again = await ftps.send_file(OutgoingFile("d-1.csv"), _chunks(block, block))
    assert (first.path, first.size) == ("/drop/d-1.csv", 10)
    assert (server.root / "drop" / "d-1.csv").read_bytes() == block + block
    assert again.size == 400_000
    assert _names(server.root / "drop") == ["d-1.csv"]


async def test_direct_mode_writes_the_final_name_at_once(server: PyFtpd) -> None:
    settings = _settings(server, write_mode="direct")
    async with FtpsTransport(settings, FTP_PASSWORD, LOOPBACK) as ftps:
        receipt = await ftps.send_file(OutgoingFile("direct.csv"), _chunks(b"x\r\n"))
    assert receipt.size == 3
    assert _names(server.root / "drop") == ["direct.csv"]


async def test_a_ca_bundle_trusts_the_server_and_another_ca_is_refused_before_login(
    server: PyFtpd,
) -> None:
    trusted = _settings(
        server, certificate_sha256="", ca_bundle=server.certificate.cert_pem.decode()
    )
    async with FtpsTransport(trusted, FTP_PASSWORD, LOOPBACK) as ftps:
        report = await ftps.probe()
    assert "trusted by the CA bundle" in report.steps[1]
    assert report.peer_identity == server.certificate.sha256
    server.passwords.clear()
    other = _settings(server, certificate_sha256="", ca_bundle=certificate().cert_pem.decode())
    with pytest.raises(PermanentError) as refused:
        async with FtpsTransport(other, FTP_PASSWORD, LOOPBACK):
            pass  # pragma: no cover
    assert refused.value.diagnosis is Diagnosis.HOST_KEY
    assert "not trusted" in refused.value.message
    assert server.passwords == []


async def test_a_wrong_pinned_certificate_names_both_and_no_password_is_sent(
    server: PyFtpd,
) -> None:
    pin = "sha256:" + "0" * 64
    with pytest.raises(PermanentError) as refused:
        async with FtpsTransport(_settings(server, certificate_sha256=pin), FTP_PASSWORD, LOOPBACK):
            pass  # pragma: no cover
    assert refused.value.diagnosis is Diagnosis.HOST_KEY
    assert server.certificate.sha256 in refused.value.message
    assert pin in refused.value.message
    assert server.passwords == []


async def test_a_server_without_tls_is_refused_and_never_gets_the_password(
    tmp_path: Path,
) -> None:
    with pyftpd(tmp_path, tls=False) as plain:
        settings = FtpsSettings(
            "127.0.0.1", FTP_USER, port=plain.port, certificate_sha256=plain.certificate.sha256
        )
        with pytest.raises(PermanentError) as refused:
            async with FtpsTransport(settings, FTP_PASSWORD, LOOPBACK):
                pass  # pragma: no cover
    assert refused.value.diagnosis is Diagnosis.TLS
    assert "refused AUTH TLS" in refused.value.message
    assert "never falls back to plain FTP" in refused.value.message
    assert plain.passwords == []


async def test_a_server_refusing_prot_p_is_a_permanent_error_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with pyftpd(tmp_path, refuse_prot_p=True) as clear_data:
        settings = FtpsSettings(
            "127.0.0.1", FTP_USER, port=clear_data.port,
            certificate_sha256=clear_data.certificate.sha256,
        )  # fmt: skip
        with pytest.raises(PermanentError) as refused:
            async with FtpsTransport(settings, FTP_PASSWORD, LOOPBACK) as ftps:
                await ftps.send_file(OutgoingFile("x.csv"), _chunks(b"x"))  # pragma: no cover
    assert refused.value.diagnosis is Diagnosis.TLS
    assert "refused PROT P" in refused.value.message
    assert not (tmp_path / "x.csv").exists()


async def test_a_resend_whose_bytes_differ_is_not_published(server: PyFtpd) -> None:
    async with FtpsTransport(_settings(server), FTP_PASSWORD, LOOPBACK) as ftps:
        original = await ftps.send_file(OutgoingFile("r.csv"), _chunks(b"one\r\n"))
        with pytest.raises(PermanentError) as mismatch:
            await ftps.send_file(OutgoingFile("r.csv", original.sha256), _chunks(b"two\r\n"))
    assert mismatch.value.diagnosis is Diagnosis.MISMATCH
    assert (server.root / "drop" / "r.csv").read_bytes() == b"one\r\n"
    assert _names(server.root / "drop") == ["r.csv"]


async def test_a_missing_folder_and_a_wrong_password_are_permanent(server: PyFtpd) -> None:
    with pytest.raises(PermanentError) as missing:
        async with FtpsTransport(_settings(server, remote_dir="/nope"), FTP_PASSWORD, LOOPBACK):
            pass  # pragma: no cover
    assert missing.value.diagnosis is Diagnosis.MISSING
    with pytest.raises(PermanentError) as auth:
        async with FtpsTransport(_settings(server), "wrong", LOOPBACK):
            pass  # pragma: no cover
    assert auth.value.diagnosis is Diagnosis.AUTH


async def test_a_failing_render_leaves_no_temporary_file(server: PyFtpd) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        raise PermanentError(Diagnosis.CONFIG, "render failed")

    async with FtpsTransport(_settings(server), FTP_PASSWORD, LOOPBACK) as ftps:
        with pytest.raises(PermanentError, match="render failed"):
            await ftps.send_file(OutgoingFile("b.csv"), broken())
        await ftps.send_file(OutgoingFile("after.csv"), _chunks(b"ok"))  # the session lives on
    assert _names(server.root / "drop") == ["after.csv"]


# CI sets HANDOFF_REQUIRE_VSFTPD=1: there a missing vsftpd fails these tests instead of
# skipping them.
needs_vsftpd = pytest.mark.skipif(
    not vsftpd_available() and not os.environ.get("HANDOFF_REQUIRE_VSFTPD"),
    reason="needs root and vsftpd",
)


@pytest.fixture(scope="module")
def explicit_vsftpd() -> Iterator[Vsftpd]:
    assert vsftpd_available(), "HANDOFF_REQUIRE_VSFTPD is set, but vsftpd cannot run here"
    with vsftpd(require_reuse=True) as running:
        yield running


def _vs(server: Vsftpd, **changes: object) -> FtpsSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.user,
        "ca_bundle": server.certificate.cert_pem.decode(),
        "remote_dir": server.upload,
    }
    values.update(changes)
    return FtpsSettings(**values)  # type: ignore[arg-type]


@needs_vsftpd
async def test_vsftpd_requiring_session_reuse_receives_the_file_in_the_chroot(
    explicit_vsftpd: Vsftpd,
) -> None:
    folder = explicit_vsftpd.chroot / explicit_vsftpd.upload.lstrip("/")
    block = os.urandom(300_000)
    async with FtpsTransport(_vs(explicit_vsftpd), explicit_vsftpd.password, LOOPBACK) as ftps:
        receipt = await ftps.send_file(OutgoingFile("v.csv"), _chunks(block, b"end\r\n"))
        report = await ftps.probe()
    assert (folder / "v.csv").read_bytes() == block + b"end\r\n"
    assert receipt.path == f"{explicit_vsftpd.upload}/v.csv"
    assert "explicit TLS" in report.steps[0]
    assert _names(folder) == ["v.csv"]


@needs_vsftpd
async def test_vsftpd_refuses_a_data_channel_without_session_reuse_and_no_empty_file_stays(
    explicit_vsftpd: Vsftpd, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = explicit_vsftpd.chroot / explicit_vsftpd.upload.lstrip("/")
    monkeypatch.setattr(ftps_module._Ftps, "reuse_tls_session", False)
    settings = _vs(explicit_vsftpd, write_mode="direct")
    async with FtpsTransport(settings, explicit_vsftpd.password, LOOPBACK) as ftps:
        with pytest.raises(PermanentError) as refused:
            await ftps.send_file(OutgoingFile("no-reuse.csv"), _chunks(b"x\r\n"))
    assert refused.value.diagnosis is Diagnosis.TLS
    assert "session reuse" in refused.value.message
    assert not (folder / "no-reuse.csv").exists()


@needs_vsftpd
async def test_vsftpd_with_implicit_tls_receives_the_file() -> None:
    assert vsftpd_available()
    with vsftpd(implicit=True) as implicit:
        folder = implicit.chroot / implicit.upload.lstrip("/")
        settings = _vs(implicit, tls="implicit")
        async with FtpsTransport(settings, implicit.password, LOOPBACK) as ftps:
            await ftps.send_file(OutgoingFile("i.csv"), _chunks(b"implicit\r\n"))
            report = await ftps.probe()
        assert (folder / "i.csv").read_bytes() == b"implicit\r\n"
        assert "implicit TLS" in report.steps[0]
        assert not [p for p in folder.iterdir() if p.name.endswith(PART_SUFFIX)]
