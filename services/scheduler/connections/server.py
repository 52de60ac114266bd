"""ConnectionService servicer: messages to drafts and back; secrets never leave."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from services.common.egress import EgressPolicy
from services.common.errors import NotFoundError
from services.common.gen.handoff.scheduler.v1 import connections_pb2, connections_pb2_grpc
from services.common.grpc_server import GrpcService
from services.common.ids import parse_id
from services.common.layouts.compiler import RenderContext
from services.common.referral_rows import ReferralRowReader
from services.common.secrets import SecretBox
from services.common.timestamps import timestamp_message
from services.delivery.transports.base import Diagnosis, PermanentError, ProbeReport
from services.delivery.transports.ftps import FtpsSettings, FtpsTransport
from services.delivery.transports.http.responses import Outcome
from services.delivery.transports.mailchimp.batch import MailchimpTransport
from services.delivery.transports.sailthru.transport import SailthruTransport
from services.delivery.transports.sftp import SftpSecrets, SftpSettings, SftpTransport
from services.scheduler.connections import rules
from services.scheduler.connections.api_messages import (
    api_config_of,
    api_message,
    exchange_message,
    test_call,
)
from services.scheduler.connections.mailchimp_messages import (
    mailchimp_config_of,
    mailchimp_message,
)
from services.scheduler.connections.model import (
    ApiConfig,
    ConnectionConfig,
    ConnectionDraft,
    ConnectionStore,
    EmailConfig,
    FtpsConfig,
    MailchimpConfig,
    SailthruConfig,
    SavedConnection,
    Secrets,
    SftpConfig,
)
from services.scheduler.connections.sailthru_messages import sailthru_config_of, sailthru_message

Context = grpc.aio.ServicerContext[object, object]
_MODES = {connections_pb2.RENAME: "rename", connections_pb2.DIRECT: "direct"}
_MODE_OUT = {"rename": connections_pb2.RENAME, "direct": connections_pb2.DIRECT}
_TLS = {connections_pb2.EXPLICIT: "explicit", connections_pb2.IMPLICIT: "implicit"}
_TLS_OUT = {"explicit": connections_pb2.EXPLICIT, "implicit": connections_pb2.IMPLICIT}


def _write_mode(value: int) -> Any:
    """The mode's name; an unknown number passes as such, for validation to name."""
    if value == connections_pb2.WRITE_MODE_UNSPECIFIED:
        return "rename"
    return _MODES.get(value, f"unknown ({value})")  # type: ignore[call-overload]


def draft_of(message: connections_pb2.Connection) -> ConnectionDraft:
    """The domain draft of a Connection message."""
    sftp = None
    secrets = Secrets()
    if message.HasField("sftp"):
        s = message.sftp
        sftp = SftpConfig(
            host=s.host, port=s.port, username=s.username, host_key=s.host_key,
            remote_dir=s.remote_dir, file_name_template=s.file_name_template,
            write_mode=_write_mode(s.write_mode), manifest=s.manifest,
            max_rows_per_file=s.max_rows_per_file, pgp_public_key=s.pgp_public_key.strip(),
        )  # fmt: skip
        secrets = Secrets(s.password, s.private_key, s.private_key_passphrase)
    ftps = None
    if message.HasField("ftps"):
        f = message.ftps
        tls: Any = (
            "explicit" if f.tls == connections_pb2.FTPS_TLS_UNSPECIFIED
            else _TLS.get(f.tls, f"unknown ({f.tls})")
        )  # fmt: skip
        ftps = FtpsConfig(
            host=f.host, port=f.port, username=f.username, tls=tls, ca_bundle=f.ca_bundle,
            certificate_sha256=f.certificate_sha256, remote_dir=f.remote_dir,
            file_name_template=f.file_name_template, write_mode=_write_mode(f.write_mode),
            manifest=f.manifest, max_rows_per_file=f.max_rows_per_file,
            pgp_public_key=f.pgp_public_key.strip(),
        )  # fmt: skip
        secrets = Secrets(password=f.password)
    api = None
    if message.HasField("api"):
        api, secrets = api_config_of(message.api)
    mailchimp = None
    if message.HasField("mailchimp"):
        mailchimp, secrets = mailchimp_config_of(message.mailchimp)
    sailthru = None
    if message.HasField("sailthru"):
        sailthru, secrets = sailthru_config_of(message.sailthru)
    email = None
    if message.HasField("email"):
        m = message.email
        email = EmailConfig(
            subject_template=m.subject_template, body_template=m.body_template,
            gzip_above_bytes=m.gzip_above_bytes, file_name_template=m.file_name_template,
        )  # fmt: skip
    audiences = tuple(
        parse_id(f"connection.audience_ids[{i}]", a) for i, a in enumerate(message.audience_ids)
    )
    return ConnectionDraft(
        message.name,
        sftp,
        secrets,
        message.url,
        ftps,
        email,
        api,
        mailchimp,
        audience_ids=audiences,
        sailthru=sailthru,
    )


def connection_message(saved: SavedConnection) -> connections_pb2.Connection:
    """The Connection message: settings, which secrets are set, never the secrets."""
    message = connections_pb2.Connection(
        id=str(saved.id),
        account_id=str(saved.account_id),
        name=saved.name,
        version=saved.version,
        created_at=timestamp_message(saved.created_at),
        updated_at=timestamp_message(saved.updated_at),
        audience_ids=[str(a) for a in saved.audience_ids],
    )
    if isinstance(saved.config, FtpsConfig):
        f = saved.config
        message.ftps.CopyFrom(
            connections_pb2.FtpsConnection(
                host=f.host, port=f.port, username=f.username, tls=_TLS_OUT[f.tls],
                ca_bundle=f.ca_bundle, certificate_sha256=f.certificate_sha256,
                remote_dir=f.remote_dir, file_name_template=f.file_name_template,
                write_mode=_MODE_OUT[f.write_mode], manifest=f.manifest,
                max_rows_per_file=f.max_rows_per_file,
                password_set="password" in saved.secrets_set,
                pgp_public_key=f.pgp_public_key, pgp_fingerprint=f.pgp_fingerprint,
            )
        )  # fmt: skip
        return message
    if isinstance(saved.config, ApiConfig):
        message.api.CopyFrom(api_message(saved.config, saved.secrets_set))
        return message
    if isinstance(saved.config, MailchimpConfig):
        message.mailchimp.CopyFrom(mailchimp_message(saved.config, saved.secrets_set))
        return message
    if isinstance(saved.config, SailthruConfig):
        message.sailthru.CopyFrom(sailthru_message(saved.config, saved.secrets_set))
        return message
    if isinstance(saved.config, EmailConfig):
        e = saved.config
        message.email.CopyFrom(
            connections_pb2.EmailConnection(
                subject_template=e.subject_template, body_template=e.body_template,
                gzip_above_bytes=e.gzip_above_bytes, file_name_template=e.file_name_template,
            )
        )  # fmt: skip
        return message
    s = saved.config
    message.sftp.CopyFrom(
        connections_pb2.SftpConnection(
            host=s.host, port=s.port, username=s.username, host_key=s.host_key,
            remote_dir=s.remote_dir, file_name_template=s.file_name_template,
            write_mode=_MODE_OUT[s.write_mode], manifest=s.manifest,
            max_rows_per_file=s.max_rows_per_file,
            password_set="password" in saved.secrets_set,
            private_key_set="private_key" in saved.secrets_set,
            pgp_public_key=s.pgp_public_key,
            pgp_fingerprint=s.pgp_fingerprint,
        )
    )  # fmt: skip
    return message


def transport_prober(egress: EgressPolicy) -> rules.Prober:
    """A connection test over the real transport of the connection's kind."""

    async def probe(config: ConnectionConfig, secrets: Secrets) -> ProbeReport:
        if isinstance(config, FtpsConfig):
            ftps = FtpsSettings(
                host=config.host, username=config.username, tls=config.tls, port=config.port,
                ca_bundle=config.ca_bundle, certificate_sha256=config.certificate_sha256,
                remote_dir=config.remote_dir, write_mode=config.write_mode,
            )  # fmt: skip
            async with FtpsTransport(ftps, secrets.password, egress) as transport:
                return await transport.probe()
        if isinstance(config, ApiConfig):
            raise PermanentError(Diagnosis.CONFIG, "API connections are tested by a test call")
        if isinstance(config, MailchimpConfig):
            async with MailchimpTransport(config.settings, secrets.api_key, egress) as mailchimp:
                return await mailchimp.probe()
        if isinstance(config, SailthruConfig):
            plain = {"api_key": secrets.api_key, "api_secret": secrets.api_secret}
            async with SailthruTransport(config.settings, plain, egress) as sailthru:
                return await sailthru.probe()
        if isinstance(config, EmailConfig):
            raise PermanentError(
                Diagnosis.CONFIG,
                "an email connection is tested by its recipients: each gets a confirmation "
                "message when added (RecipientService.AddRecipient)",
            )
        sftp: SftpConfig = config
        settings = SftpSettings(
            host=sftp.host, username=sftp.username, host_key=sftp.host_key,
            remote_dir=sftp.remote_dir, port=sftp.port, write_mode=sftp.write_mode,
        )  # fmt: skip
        credentials = SftpSecrets(secrets.password, secrets.private_key, secrets.passphrase)
        async with SftpTransport(settings, credentials, egress) as transport:
            return await transport.probe()

    return probe


class ConnectionServicer(connections_pb2_grpc.ConnectionServiceServicer):
    """Create, get, list, update, delete and test connections."""

    def __init__(
        self,
        store: ConnectionStore,
        box: SecretBox,
        egress: EgressPolicy,
        prober: rules.Prober | None = None,
        rows: ReferralRowReader | None = None,
    ) -> None:
        self._store = store
        self._rows = rows
        self._box = box
        self._egress = egress
        self._prober = prober or transport_prober(egress)

    async def CreateConnection(  # noqa: N802
        self, request: connections_pb2.CreateConnectionRequest, context: Context
    ) -> connections_pb2.Connection:
        saved = await rules.create_connection(
            self._store, self._box, self._egress, request.account_id,
            draft_of(request.connection), request.connection.id,
        )  # fmt: skip
        return connection_message(saved)

    async def GetConnection(  # noqa: N802
        self, request: connections_pb2.GetConnectionRequest, context: Context
    ) -> connections_pb2.Connection:
        saved = await rules.get_connection(self._store, request.account_id, request.id)
        return connection_message(saved)

    async def ListConnections(  # noqa: N802
        self, request: connections_pb2.ListConnectionsRequest, context: Context
    ) -> connections_pb2.ListConnectionsResponse:
        page = await rules.list_connections(
            self._store, request.account_id, request.page_size, request.page_token
        )
        return connections_pb2.ListConnectionsResponse(
            connections=[connection_message(c) for c in page.items], next_page_token=page.next_token
        )

    async def UpdateConnection(  # noqa: N802
        self, request: connections_pb2.UpdateConnectionRequest, context: Context
    ) -> connections_pb2.Connection:
        clear = {"password"} if request.clear_password else set()
        if request.clear_private_key:
            clear |= {"private_key", "passphrase"}
        saved = await rules.update_connection(
            self._store, self._box, self._egress, request.account_id, request.connection.id,
            draft_of(request.connection), frozenset(clear),
        )  # fmt: skip
        return connection_message(saved)

    async def DeleteConnection(  # noqa: N802
        self, request: connections_pb2.DeleteConnectionRequest, context: Context
    ) -> connections_pb2.DeleteConnectionResponse:
        await rules.delete_connection(self._store, request.account_id, request.id)
        return connections_pb2.DeleteConnectionResponse()

    async def TestConnection(  # noqa: N802
        self, request: connections_pb2.TestConnectionRequest, context: Context
    ) -> connections_pb2.TestConnectionResponse:
        connection_id = uuid.UUID(int=0)
        if request.HasField("draft"):
            account = parse_id("account_id", request.account_id)
            customs = frozenset(await self._store.custom_fields(account))
            _, config, secrets = await rules.validated(
                draft_of(request.draft), self._egress, prefix="draft.", custom_fields=customs
            )
        else:
            saved = await rules.get_connection(self._store, request.account_id, request.id)
            config, secrets = saved.config, rules.open_secrets(self._box, saved)
            account, connection_id = saved.account_id, saved.id
        if isinstance(config, ApiConfig):
            return await self._test_call(request, account, connection_id, config, secrets)
        report, failure = await rules.test_connection(config, secrets, self._prober)
        if failure is not None:
            return connections_pb2.TestConnectionResponse(
                ok=False, diagnosis=failure.diagnosis.value, message=failure.message
            )
        assert report is not None
        if isinstance(config, FtpsConfig):
            return connections_pb2.TestConnectionResponse(
                ok=True, steps=list(report.steps), certificate_sha256=report.peer_identity
            )
        return connections_pb2.TestConnectionResponse(
            ok=True, steps=list(report.steps), host_key_fingerprint=report.peer_identity
        )

    async def _test_call(
        self,
        request: connections_pb2.TestConnectionRequest,
        account: uuid.UUID,
        connection_id: uuid.UUID,
        config: ApiConfig,
        secrets: Secrets,
    ) -> connections_pb2.TestConnectionResponse:
        row: list[str] | None = None
        context = RenderContext()
        if self._rows is not None:
            context = await self._rows.render_context(account) or context
            if request.referral_seq:
                async for batch in self._rows.rows_in_range(
                    account, request.referral_seq - 1, request.referral_seq
                ):
                    row = [column[0] for column in batch] if batch[0] else row
                if row is None:
                    raise NotFoundError(
                        f"referral {request.referral_seq} does not exist in account {account}"
                    )
            elif request.recent:
                latest = await self._rows.latest_rows(account, 1)
                row = latest[0] if latest else None
        customs = await self._store.custom_fields(account)
        exchange = await test_call(
            config, secrets, self._egress, connection_id, row, customs, context
        )
        accepted = exchange.verdict.outcome is Outcome.ACCEPTED
        diagnosis = "" if accepted else (
            exchange.diagnosis.value if exchange.diagnosis else exchange.verdict.outcome.value
        )  # fmt: skip
        said = exchange.error or (
            f"answered {exchange.status}: {exchange.verdict.outcome.value} "
            f"({exchange.verdict.rule})"
        )
        return connections_pb2.TestConnectionResponse(
            ok=accepted, diagnosis=diagnosis, message="" if accepted else said,
            steps=["sent", f"answered {exchange.status}"] if exchange.status else [],
            exchange=exchange_message(exchange),
        )  # fmt: skip


def connection_service(
    store: ConnectionStore,
    box: SecretBox,
    egress: EgressPolicy,
    rows: ReferralRowReader | None = None,
) -> GrpcService:
    """ConnectionService for grpc_server() (`rows`: where API test calls find referrals)."""
    servicer = ConnectionServicer(store, box, egress, rows=rows)
    return GrpcService(
        connections_pb2.DESCRIPTOR.services_by_name["ConnectionService"].full_name,
        lambda server: connections_pb2_grpc.add_ConnectionServiceServicer_to_server(
            servicer, server
        ),
    )
