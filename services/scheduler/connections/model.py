"""Connection values: settings as the API shows them, drafts as callers send them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol
from uuid import UUID

from services.common.audiences.targets import Targeting
from services.common.layouts.model import CustomFieldSpec
from services.delivery.transports.http.settings import API_SECRET_NAMES, ApiSettings
from services.delivery.transports.mailchimp.settings import MailchimpSettings
from services.delivery.transports.sailthru.settings import SailthruSettings

WriteMode = Literal["rename", "direct"]
FtpsTls = Literal["explicit", "implicit"]
SECRET_NAMES = ("password", "private_key", "passphrase", *API_SECRET_NAMES[1:], "api_secret")


@dataclass(frozen=True)
class SftpConfig:
    """An SFTP destination, secrets apart."""

    kind: ClassVar[str] = "sftp"
    host: str
    username: str
    host_key: str
    port: int = 22
    remote_dir: str = "."
    file_name_template: str = ""
    write_mode: WriteMode = "rename"
    manifest: bool = False
    max_rows_per_file: int = 0
    pgp_public_key: str = ""
    pgp_fingerprint: str = ""  # of pgp_public_key, computed when saved

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "host_key": self.host_key,
            "remote_dir": self.remote_dir,
            "file_name_template": self.file_name_template,
            "write_mode": self.write_mode,
            "manifest": self.manifest,
            "max_rows_per_file": self.max_rows_per_file,
            "pgp_public_key": self.pgp_public_key,
            "pgp_fingerprint": self.pgp_fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SftpConfig:
        """From the settings column."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class FtpsConfig:
    """An FTPS destination, secrets apart. Trust: a pinned certificate, else a CA bundle,
    else the system store."""

    kind: ClassVar[str] = "ftps"
    host: str
    username: str
    tls: FtpsTls = "explicit"
    port: int = 0  # 0: 21 explicit, 990 implicit
    ca_bundle: str = ""
    certificate_sha256: str = ""
    remote_dir: str = "."
    file_name_template: str = ""
    write_mode: WriteMode = "rename"
    manifest: bool = False
    max_rows_per_file: int = 0
    pgp_public_key: str = ""
    pgp_fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FtpsConfig:
        """From the settings column."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


DEFAULT_SUBJECT = "{task}: {rows} new referrals ({date})"
DEFAULT_BODY = (
    "Hello,\n\nattached is {file}: the {rows} referrals of {task} delivered on {date}.\n\n"
    "You receive this because this address was approved for these deliveries.\n"
)
DEFAULT_GZIP_ABOVE = 1024 * 1024


@dataclass(frozen=True)
class EmailConfig:
    """An email destination: templates and attachment options (the relay is the
    deployment's; the recipients are rows of their own)."""

    kind: ClassVar[str] = "email"
    subject_template: str = DEFAULT_SUBJECT
    body_template: str = DEFAULT_BODY
    gzip_above_bytes: int = DEFAULT_GZIP_ABOVE  # -1: never
    file_name_template: str = ""

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmailConfig:
        """From the settings column."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class ApiConfig:
    """The advertiser's own API (real-time delivery): the settings the live loop reads."""

    kind: ClassVar[str] = "api"
    settings: ApiSettings

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return self.settings.to_json()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiConfig:
        """From the settings column."""
        return cls(ApiSettings.from_json(data))


@dataclass(frozen=True)
class MailchimpConfig:
    """A Mailchimp audience (real time or scheduled batches)."""

    kind: ClassVar[str] = "mailchimp"
    settings: MailchimpSettings

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return self.settings.to_json()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MailchimpConfig:
        """From the settings column."""
        return cls(MailchimpSettings.from_json(data))


@dataclass(frozen=True)
class SailthruConfig:
    """A Sailthru list (real time or scheduled imports)."""

    kind: ClassVar[str] = "sailthru"
    settings: SailthruSettings

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return self.settings.to_json()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SailthruConfig:
        """From the settings column."""
        return cls(SailthruSettings.from_json(data))


FileConfig = SftpConfig | FtpsConfig
ConnectionConfig = (
    SftpConfig | FtpsConfig | EmailConfig | ApiConfig | MailchimpConfig | SailthruConfig
)
CONFIG_KINDS: dict[
    str,
    type[SftpConfig]
    | type[FtpsConfig]
    | type[EmailConfig]
    | type[ApiConfig]
    | type[MailchimpConfig]
    | type[SailthruConfig],
] = {
    "sftp": SftpConfig,
    "ftps": FtpsConfig,
    "email": EmailConfig,
    "api": ApiConfig,
    "mailchimp": MailchimpConfig,
    "sailthru": SailthruConfig,
}


def config_from_json(kind: str, data: dict[str, Any]) -> ConnectionConfig:
    """A stored connection's settings, by its kind."""
    return CONFIG_KINDS[kind].from_json(data)


@dataclass(frozen=True)
class Secrets:
    """Plain secrets, in memory only (sealed before they are stored)."""

    password: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)
    passphrase: str = field(default="", repr=False)
    # API connections (services/delivery/transports/http/settings.py names them).
    token: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    client_secret: str = field(default="", repr=False)
    signing_secret: str = field(default="", repr=False)
    previous_signing_secret: str = field(default="", repr=False)
    api_secret: str = field(default="", repr=False)  # Sailthru's shared secret

    def present(self) -> dict[str, str]:
        """The secrets that are set, by name."""
        return {n: getattr(self, n) for n in SECRET_NAMES if getattr(self, n)}


@dataclass(frozen=True)
class ConnectionDraft:
    """What a caller sends: a name and the settings of one kind, or a URL (or both
    agreeing)."""

    name: str
    sftp: SftpConfig | None
    secrets: Secrets
    url: str = ""
    ftps: FtpsConfig | None = None
    email: EmailConfig | None = None
    api: ApiConfig | None = None
    mailchimp: MailchimpConfig | None = None
    audience_ids: tuple[UUID, ...] = ()  # real-time delivery's custom audiences (keyword)
    sailthru: SailthruConfig | None = None


@dataclass(frozen=True)
class SavedConnection:
    """A stored connection (its secrets stay sealed)."""

    id: UUID
    account_id: UUID
    name: str
    config: ConnectionConfig
    sealed: dict[str, str] = field(repr=False)
    version: int
    created_at: datetime
    updated_at: datetime
    audience_ids: tuple[UUID, ...] = ()  # custom audiences that target its real-time delivery

    @property
    def kind(self) -> str:
        """sftp, ftps or email."""
        return self.config.kind

    @property
    def secrets_set(self) -> frozenset[str]:
        """Which secrets are stored."""
        return frozenset(self.sealed)


class ConnectionStore(Protocol):
    """What the connection rules need from the store."""

    async def account_exists(self, account_id: UUID) -> bool | None: ...
    async def custom_fields(self, account_id: UUID) -> dict[str, CustomFieldSpec]: ...
    async def insert(
        self,
        connection_id: UUID,
        account_id: UUID,
        name: str,
        config: ConnectionConfig,
        sealed: dict[str, str],
        audience_ids: Sequence[UUID] = (),
    ) -> SavedConnection | None: ...
    async def get(self, account_id: UUID, connection_id: UUID) -> SavedConnection | None: ...
    async def page(self, account_id: UUID, after: str, limit: int) -> list[SavedConnection]: ...
    async def update(
        self,
        account_id: UUID,
        connection_id: UUID,
        name: str,
        config: ConnectionConfig,
        sealed: dict[str, str],
        audience_ids: Sequence[UUID] = (),
    ) -> SavedConnection | None: ...
    async def delete(self, account_id: UUID, connection_id: UUID) -> bool: ...
    async def tasks_using(self, connection_id: UUID) -> list[tuple[UUID, str]]: ...
    async def audience_targeting(self, account_id: UUID, ids: list[UUID]) -> Targeting: ...
    async def owning_subscription(self, connection_id: UUID) -> UUID | None: ...
