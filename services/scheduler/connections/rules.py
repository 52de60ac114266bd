"""Connection rules: validate a draft (every problem named by field), seal its secrets,
and the create/get/list/update/delete/test calls over a store."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import replace
from urllib.parse import unquote, urlsplit
from uuid import UUID

from services.common.egress import EgressPolicy, EgressRefusedError, ResolutionError
from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.file_names import TemplateError, check_template
from services.common.ids import parse_id
from services.common.paging import Page, decode_token, fetch_page, page_size
from services.common.secrets import SecretBox, connection_secret_context, open_connection_secrets
from services.delivery.openpgp import OpenPgpError, key_fingerprint
from services.delivery.transports.base import ProbeReport, TransportError
from services.delivery.transports.email_message import message_template_problem
from services.delivery.transports.ftps import pinned_certificate
from services.delivery.transports.http.settings import API_SECRET_NAMES, settings_problems
from services.delivery.transports.mailchimp.settings import SECRET_NAMES as MAILCHIMP_SECRET_NAMES
from services.delivery.transports.mailchimp.settings import data_centre
from services.delivery.transports.mailchimp.settings import (
    settings_problems as mailchimp_problems,
)
from services.delivery.transports.sailthru.settings import SAILTHRU_SECRET_NAMES, sailthru_problems
from services.delivery.transports.sftp import load_private_key, pinned_fingerprint
from services.ingest.accounts import check_name
from services.scheduler.connections.model import (
    DEFAULT_BODY,
    DEFAULT_GZIP_ABOVE,
    DEFAULT_SUBJECT,
    ApiConfig,
    ConnectionConfig,
    ConnectionDraft,
    ConnectionStore,
    EmailConfig,
    FileConfig,
    FtpsConfig,
    FtpsTls,
    MailchimpConfig,
    SailthruConfig,
    SavedConnection,
    Secrets,
    SftpConfig,
)

PLAIN_FTP = "plain FTP is refused (credentials and data would travel in clear): use SFTP or FTPS"
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")

Prober = Callable[[ConnectionConfig, Secrets], Awaitable[ProbeReport]]


def _problem(field: str, code: str, message: str) -> FieldProblem:
    return FieldProblem(field, code, message)


def _invalid(problems: list[FieldProblem]) -> InvalidArgumentError:
    """One error naming every problem (the details list them field by field)."""
    said = "; ".join(f"{p.field}: {p.message}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return InvalidArgumentError(f"connection is invalid: {said}{more}", problems)


def _from_url(
    url: str, config: FileConfig | None, prefix: str
) -> tuple[FileConfig | None, list[FieldProblem]]:
    """Fill host, port, user and folder from an sftp://, ftps:// (implicit TLS) or
    ftpes:// (explicit TLS) URL; refuse ftp:// and every other scheme."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "ftp":
        return config, [_problem(f"{prefix}url", "INSECURE", PLAIN_FTP)]
    if scheme not in ("sftp", "ftps", "ftpes"):
        return config, [
            _problem(
                f"{prefix}url",
                "INVALID_FORMAT",
                "must be sftp://, ftps:// (implicit TLS) or ftpes:// (explicit TLS) "
                "user@host[:port]/folder: SFTP or FTPS only",
            )
        ]
    try:
        port = parts.port
    except ValueError:
        return config, [_problem(f"{prefix}url", "INVALID_FORMAT", "the port is not a number")]
    host, user, folder = parts.hostname or "", unquote(parts.username or ""), unquote(parts.path)
    if scheme == "sftp":
        if isinstance(config, FtpsConfig):
            return config, [
                _problem(f"{prefix}url", "CONFLICT", "an sftp:// url with FTPS settings")
            ]
        base = config or SftpConfig(host="", username="", host_key="")
        return replace(
            base, host=host or base.host, port=port or 22, username=user or base.username,
            remote_dir=folder or base.remote_dir,
        ), []  # fmt: skip
    if isinstance(config, SftpConfig):
        return config, [
            _problem(f"{prefix}url", "CONFLICT", f"an {scheme}:// url with SFTP settings")
        ]
    tls: FtpsTls = "implicit" if scheme == "ftps" else "explicit"
    ftps = config or FtpsConfig(host="", username="")
    return replace(
        ftps, host=host or ftps.host, port=port or ftps.port, username=user or ftps.username,
        remote_dir=folder or ftps.remote_dir, tls=tls,
    ), []  # fmt: skip


def sftp_problems(
    sftp: SftpConfig, secrets: Secrets, stored: frozenset[str], prefix: str
) -> list[FieldProblem]:
    """Every problem of SFTP settings plus secrets (`stored` names those kept from before)."""
    p = f"{prefix}sftp."
    found = _common_problems(sftp, p, sftp.port)
    if not sftp.host_key:
        found.append(
            _problem(
                f"{p}host_key",
                "REQUIRED",
                "pin the server's host key (a known_hosts line or a SHA256 fingerprint)",
            )
        )
    else:
        try:
            pinned_fingerprint(sftp.host_key)
        except ValueError as exc:
            found.append(_problem(f"{p}host_key", "INVALID_FORMAT", str(exc)))
    if secrets.private_key:
        try:
            load_private_key(secrets.private_key, secrets.passphrase)
        except ValueError as exc:
            field = "private_key_passphrase" if "passphrase" in str(exc) else "private_key"
            found.append(_problem(f"{p}{field}", "INVALID_FORMAT", str(exc)))
    has_password = bool(secrets.password) or "password" in stored
    has_key = bool(secrets.private_key) or "private_key" in stored
    if not (has_password or has_key):
        found.append(_problem(f"{p}password", "REQUIRED", "give a password or a private key"))
    return found


def _common_problems(config: FileConfig, p: str, port: int) -> list[FieldProblem]:
    """The problems every file connection can have: host, port, user, folder, names."""
    found: list[FieldProblem] = []
    if not config.host:
        found.append(_problem(f"{p}host", "REQUIRED", "is required"))
    elif not _is_host(config.host):
        found.append(
            _problem(
                f"{p}host", "INVALID_FORMAT", f"{config.host[:64]!r} is not a host name or address"
            )
        )
    if not 0 < port <= 65535:
        found.append(_problem(f"{p}port", "OUT_OF_RANGE", "must be 1-65535"))
    if not config.username:
        found.append(_problem(f"{p}username", "REQUIRED", "is required"))
    elif len(config.username) > 100 or any(ord(c) < 32 or c.isspace() for c in config.username):
        found.append(
            _problem(
                f"{p}username",
                "INVALID_FORMAT",
                "at most 100 characters, no spaces or control characters",
            )
        )
    if "\0" in config.remote_dir or "\n" in config.remote_dir or len(config.remote_dir) > 1024:
        found.append(
            _problem(f"{p}remote_dir", "INVALID_FORMAT", "at most 1024 characters, no NUL")
        )
    try:
        check_template(config.file_name_template)
    except TemplateError as exc:
        found.append(_problem(f"{p}file_name_template", "INVALID_FORMAT", str(exc)))
    if config.write_mode not in ("rename", "direct"):
        found.append(_problem(f"{p}write_mode", "UNKNOWN_CODE", "RENAME or DIRECT"))
    if config.max_rows_per_file < 0:
        found.append(_problem(f"{p}max_rows_per_file", "OUT_OF_RANGE", "must not be negative"))
    return found


def ftps_problems(
    ftps: FtpsConfig, secrets: Secrets, stored: frozenset[str], prefix: str
) -> list[FieldProblem]:
    """Every problem of FTPS settings plus secrets (`stored` names those kept from before)."""
    p = f"{prefix}ftps."
    found = _common_problems(ftps, p, ftps.port or 21)
    if ftps.tls not in ("explicit", "implicit"):
        found.append(_problem(f"{p}tls", "UNKNOWN_CODE", "EXPLICIT or IMPLICIT"))
    if ftps.certificate_sha256 and ftps.ca_bundle:
        found.append(
            _problem(
                f"{p}certificate_sha256",
                "CONFLICT",
                "give a CA bundle or a pinned certificate, not both",
            )
        )
    if ftps.certificate_sha256:
        try:
            pinned_certificate(ftps.certificate_sha256)
        except ValueError as exc:
            found.append(_problem(f"{p}certificate_sha256", "INVALID_FORMAT", str(exc)))
    if ftps.ca_bundle:
        try:
            ssl.create_default_context(cadata=ftps.ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            found.append(
                _problem(f"{p}ca_bundle", "INVALID_FORMAT", f"not PEM certificates: {exc}")
            )
    if secrets.private_key or secrets.passphrase:
        found.append(
            _problem(f"{p}private_key", "UNSUPPORTED", "FTPS logs in with a password only")
        )
    if not (secrets.password or "password" in stored):
        found.append(_problem(f"{p}password", "REQUIRED", "is required"))
    return found


def email_problems(email: EmailConfig, secrets: Secrets, prefix: str) -> list[FieldProblem]:
    """Every problem of email settings (the relay is the deployment's: no secrets here)."""
    p = f"{prefix}email."
    found: list[FieldProblem] = []
    for field, text, limit in (
        ("subject_template", email.subject_template, 200),
        ("body_template", email.body_template, 4000),
    ):
        problem = message_template_problem(text, limit)
        if problem:
            found.append(_problem(f"{p}{field}", "INVALID_FORMAT", problem))
    if any(c in email.subject_template for c in "\r\n"):
        found.append(_problem(f"{p}subject_template", "INVALID_FORMAT", "one line"))
    if email.gzip_above_bytes < -1:
        found.append(_problem(f"{p}gzip_above_bytes", "OUT_OF_RANGE", "-1 (never) or more"))
    try:
        check_template(email.file_name_template)
    except TemplateError as exc:
        found.append(_problem(f"{p}file_name_template", "INVALID_FORMAT", str(exc)))
    if secrets.present():
        found.append(
            _problem(
                f"{p}password",
                "UNSUPPORTED",
                "email goes through the deployment's relay: no secrets",
            )
        )
    return found


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return len(host) <= 253 and _HOST.fullmatch(host) is not None


async def _egress_problems(
    egress: EgressPolicy, config: FileConfig, prefix: str
) -> list[FieldProblem]:
    """A destination in a refused range is refused when saved (DNS that fails now is not:
    the test call diagnoses it)."""
    try:
        await egress.resolve(config.host, config.port or 21)
    except EgressRefusedError as exc:
        return [_problem(f"{prefix}{config.kind}.host", "EGRESS_REFUSED", exc.message)]
    except ResolutionError:
        return []
    return []


async def _api_validated(
    api: ApiConfig,
    secrets: Secrets,
    egress: EgressPolicy,
    stored: frozenset[str],
    prefix: str,
    custom_fields: frozenset[str],
) -> tuple[list[FieldProblem], ApiConfig]:
    """Problems of API settings (the body template against the account's fields), and
    the endpoints' hosts against the egress policy."""
    settings = api.settings
    plain = {n: v for n, v in secrets.present().items() if n in API_SECRET_NAMES}
    found = settings_problems(settings, plain, stored, prefix, custom_fields)
    if not found:
        for place, url in (("url", settings.url), ("test_url", settings.test_url),
                           ("token_url", settings.token_url)):  # fmt: skip
            if not url:
                continue
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                await egress.resolve(parts.hostname or "", port)
            except EgressRefusedError as exc:
                found.append(_problem(f"{prefix}api.{place}", "EGRESS_REFUSED", exc.message))
            except ResolutionError:
                pass  # DNS may come back: the test call diagnoses it
    return found, api


async def _mailchimp_validated(
    config: MailchimpConfig,
    secrets: Secrets,
    egress: EgressPolicy,
    stored: frozenset[str],
    prefix: str,
    custom_fields: frozenset[str],
) -> list[FieldProblem]:
    """Problems of Mailchimp settings and key, and the API's host against the egress
    policy (with the key's data centre, or a placeholder when the key is kept)."""
    plain = {n: v for n, v in secrets.present().items() if n in MAILCHIMP_SECRET_NAMES}
    settings = config.settings
    found = mailchimp_problems(settings, plain, stored, prefix, custom_fields)
    if found:
        return found
    dc = data_centre(plain["api_key"]) if plain.get("api_key") else "us1"
    parts = urlsplit(settings.api_base(dc))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        await egress.resolve(parts.hostname or "", port)
    except EgressRefusedError as exc:
        found.append(_problem(f"{prefix}mailchimp.base_url", "EGRESS_REFUSED", exc.message))
    except ResolutionError:
        pass  # DNS may come back: the test call diagnoses it
    return found


async def _sailthru_validated(
    sailthru: SailthruConfig,
    secrets: Secrets,
    egress: EgressPolicy,
    stored: frozenset[str],
    prefix: str,
    custom_fields: frozenset[str],
) -> tuple[list[FieldProblem], SailthruConfig]:
    """Problems of Sailthru settings, and the base URL's host against the egress policy."""
    settings = sailthru.settings
    plain = {n: v for n, v in secrets.present().items() if n in SAILTHRU_SECRET_NAMES}
    found = sailthru_problems(settings, plain, stored, prefix, custom_fields)
    if not found:
        parts = urlsplit(settings.base_url)
        try:
            await egress.resolve(parts.hostname or "", parts.port or 443)
        except EgressRefusedError as exc:
            found.append(_problem(f"{prefix}sailthru.base_url", "EGRESS_REFUSED", exc.message))
        except ResolutionError:
            pass  # DNS may come back: the test call diagnoses it
    return found, sailthru


async def validated(
    draft: ConnectionDraft,
    egress: EgressPolicy,
    stored: frozenset[str] = frozenset(),
    prefix: str = "connection.",
    custom_fields: frozenset[str] = frozenset(),
) -> tuple[str, ConnectionConfig, Secrets]:
    """The clean name, settings and secrets of a draft, or InvalidArgumentError listing
    every problem (`custom_fields`: the account's, which API body templates may name)."""
    problems: list[FieldProblem] = []
    try:
        name = check_name(draft.name)
    except InvalidArgumentError as exc:
        name = ""
        problems += [replace(p, field=f"{prefix}name") for p in exc.problems]
    if draft.mailchimp is not None and not (
        draft.url or draft.sftp or draft.ftps or draft.email or draft.api
    ):
        problems += await _mailchimp_validated(
            draft.mailchimp, draft.secrets, egress, stored, prefix, custom_fields
        )
        if problems:
            raise _invalid(problems)
        return name, draft.mailchimp, Secrets(api_key=draft.secrets.api_key)
    if draft.sailthru is not None and not (
        draft.url or draft.sftp or draft.ftps or draft.email or draft.api or draft.mailchimp
    ):
        found, sailthru = await _sailthru_validated(
            draft.sailthru, draft.secrets, egress, stored, prefix, custom_fields
        )
        problems += found
        if problems:
            raise _invalid(problems)
        kept = {n: v for n, v in draft.secrets.present().items() if n in SAILTHRU_SECRET_NAMES}
        return name, sailthru, Secrets(**kept)
    if draft.api is not None and not (draft.url or draft.sftp or draft.ftps or draft.email):
        found, api = await _api_validated(
            draft.api, draft.secrets, egress, stored, prefix, custom_fields
        )
        problems += found
        if problems:
            raise _invalid(problems)
        return name, api, draft.secrets
    if draft.email is not None and not (draft.url or draft.sftp or draft.ftps):
        email = replace(
            draft.email,
            subject_template=draft.email.subject_template or DEFAULT_SUBJECT,
            body_template=draft.email.body_template or DEFAULT_BODY,
            gzip_above_bytes=draft.email.gzip_above_bytes or DEFAULT_GZIP_ABOVE,
        )
        problems += email_problems(email, draft.secrets, prefix)
        if problems:
            raise _invalid(problems)
        return name, email, Secrets()
    config: FileConfig | None = draft.sftp or draft.ftps
    if draft.url:
        config, found = _from_url(draft.url, config, prefix)
        problems += found
    if config is None:
        if not problems:
            problems.append(
                _problem(
                    f"{prefix}sftp",
                    "REQUIRED",
                    "give SFTP or FTPS settings, or an sftp://, ftps:// or ftpes:// url",
                )
            )
        raise _invalid(problems)
    if isinstance(config, SftpConfig):
        config = replace(
            config, port=config.port or 22, remote_dir=config.remote_dir or ".",
            host_key=config.host_key.strip(), host=config.host.strip(),
        )  # fmt: skip
        problems += sftp_problems(config, draft.secrets, stored, prefix)
    else:
        config = replace(
            config, port=config.port or (990 if config.tls == "implicit" else 21),
            remote_dir=config.remote_dir or ".", host=config.host.strip(),
            certificate_sha256=config.certificate_sha256.strip(),
        )  # fmt: skip
        problems += ftps_problems(config, draft.secrets, stored, prefix)
        if config.certificate_sha256 and not problems:
            config = replace(
                config, certificate_sha256=pinned_certificate(config.certificate_sha256)
            )
    if config.pgp_public_key:
        try:  # gpg runs as a subprocess: off the event loop
            fingerprint = await asyncio.to_thread(key_fingerprint, config.pgp_public_key)
            config = replace(config, pgp_fingerprint=fingerprint)
        except OpenPgpError as exc:
            problems.append(
                _problem(f"{prefix}{config.kind}.pgp_public_key", "INVALID_FORMAT", str(exc))
            )
    else:
        config = replace(config, pgp_fingerprint="")
    if not problems:
        problems += await _egress_problems(egress, config, prefix)
    if problems:
        raise _invalid(problems)
    return name, config, draft.secrets


def seal(
    box: SecretBox, connection_id: UUID, secrets: Secrets, kept: dict[str, str]
) -> dict[str, str]:
    """Sealed secrets for the row: new ones sealed, missing ones kept from `kept`."""
    sealed = dict(kept)
    for name, value in secrets.present().items():
        sealed[name] = box.seal(value, connection_secret_context(connection_id, name))
    return sealed


def open_secrets(box: SecretBox, connection: SavedConnection) -> Secrets:
    """The plain secrets of a stored connection (for a transport, never for an answer)."""
    return Secrets(**open_connection_secrets(box, connection.id, connection.sealed))


async def create_connection(
    store: ConnectionStore,
    box: SecretBox,
    egress: EgressPolicy,
    account_id: str,
    draft: ConnectionDraft,
    connection_id: str = "",
) -> SavedConnection:
    """Validate, seal and store a new connection."""
    account = parse_id("account_id", account_id)
    wanted = parse_id("connection.id", connection_id, required=False)
    await _require_account(store, account, writing=True)
    customs = frozenset(await store.custom_fields(account))
    name, config, secrets = await validated(draft, egress, custom_fields=customs)
    audiences = await _audiences(store, account, draft, config)
    saved = await store.insert(
        wanted, account, name, config, seal(box, wanted, secrets, {}), audiences
    )
    if saved is None:
        raise AlreadyExistsError(
            f"a connection named {name!r} (or with id {wanted}) exists already"
        )
    return saved


def delivers_live(config: ConnectionConfig) -> bool:
    """Whether the connection delivers in real time (its own audiences apply); a file or
    email connection is targeted by its tasks' audiences instead. The same test as the
    live cursor's trigger (migration 0011): an API connection, or a vendor's in real time."""
    return config.kind == "api" or config.to_json().get("mode") == "realtime"


async def _audiences(
    store: ConnectionStore, account: UUID, draft: ConnectionDraft, config: ConnectionConfig
) -> tuple[UUID, ...]:
    """The draft's audiences, checked: they exist in the account, the connection delivers
    in real time, an include audience is not below the minimum (FAILED_PRECONDITION)."""
    ids = list(dict.fromkeys(draft.audience_ids))
    if not ids:
        return ()
    if not delivers_live(config):
        problem = _problem(
            "connection.audience_ids", "NOT_APPLICABLE",
            "a scheduled delivery's audiences are set on its task, not on the connection",
        )  # fmt: skip
        raise _invalid([problem])
    found = await store.audience_targeting(account, ids)
    if found.problems:
        raise _invalid(list(found.problems))
    if found.refusals:
        raise FailedPreconditionError("; ".join(found.refusals))
    return tuple(ids)


async def _require_account(store: ConnectionStore, account: UUID, *, writing: bool) -> None:
    archived = await store.account_exists(account)
    if archived is None:
        raise NotFoundError(f"account {account} does not exist")
    if writing and archived:
        raise FailedPreconditionError(f"account {account} is archived")


async def get_connection(
    store: ConnectionStore, account_id: str, connection_id: str
) -> SavedConnection:
    """The account's connection, or NotFoundError."""
    account, wanted = parse_id("account_id", account_id), parse_id("id", connection_id)
    found = await store.get(account, wanted)
    if found is None:
        raise NotFoundError(f"connection {wanted} does not exist in account {account}")
    return found


async def list_connections(
    store: ConnectionStore, account_id: str, size: int, page_token: str
) -> Page[SavedConnection]:
    """A page of the account's connections by name, after the token's position."""
    account = parse_id("account_id", account_id)
    after = decode_token(page_token)
    return await fetch_page(
        lambda limit: store.page(account, after, limit), page_size(size), lambda c: c.name
    )


async def update_connection(
    store: ConnectionStore,
    box: SecretBox,
    egress: EgressPolicy,
    account_id: str,
    connection_id: str,
    draft: ConnectionDraft,
    clear: frozenset[str] = frozenset(),
) -> SavedConnection:
    """Replace a connection's settings; empty secrets keep the stored ones unless cleared."""
    current = await get_connection(store, account_id, connection_id)
    await _require_account(store, current.account_id, writing=True)
    await _not_owned(store, current.id)
    kept = {n: s for n, s in current.sealed.items() if n not in clear}
    if draft.ftps is not None or (draft.url and not draft.url.lower().startswith("sftp")):
        kept.pop("private_key", None)  # FTPS has no key: one kept from SFTP would be refused
        kept.pop("passphrase", None)
    if draft.api is not None:  # secrets of another kind do not carry over
        kept = {n: s for n, s in kept.items() if n in API_SECRET_NAMES}
    if draft.mailchimp is not None:
        kept = {n: s for n, s in kept.items() if n in MAILCHIMP_SECRET_NAMES}
    if draft.sailthru is not None:
        kept = {n: s for n, s in kept.items() if n in SAILTHRU_SECRET_NAMES}
    customs = frozenset(await store.custom_fields(current.account_id))
    name, config, secrets = await validated(draft, egress, frozenset(kept), custom_fields=customs)
    audiences = await _audiences(store, current.account_id, draft, config)
    saved = await store.update(
        current.account_id,
        current.id,
        name,
        config,
        seal(box, current.id, secrets, kept),
        audiences,
    )
    if saved is None:
        raise AlreadyExistsError(f"a connection named {name!r} exists already")
    return saved


async def _not_owned(store: ConnectionStore, connection_id: UUID) -> None:
    """Refuse changing a connection a Zapier subscription owns: it would stop the Zap's
    hooks without the subscription knowing (it is removed by unsubscribing)."""
    owner = await store.owning_subscription(connection_id)
    if owner is not None:
        raise FailedPreconditionError(
            f"connection {connection_id} delivers Zapier subscription {owner}: turn the Zap "
            f"off, or DELETE /v1/zapier/subscriptions/{owner}"
        )


async def delete_connection(store: ConnectionStore, account_id: str, connection_id: str) -> None:
    """Delete a connection no task uses and no Zapier subscription owns."""
    current = await get_connection(store, account_id, connection_id)
    await _not_owned(store, current.id)
    users = await store.tasks_using(current.id)
    if users:
        named = ", ".join(f"{name!r} ({task_id})" for task_id, name in users[:5])
        raise FailedPreconditionError(
            f"connection {current.id} is used by task {named}: change or delete the task first"
        )
    await store.delete(current.account_id, current.id)


async def test_connection(
    config: ConnectionConfig, secrets: Secrets, prober: Prober
) -> tuple[ProbeReport | None, TransportError | None]:
    """Connect for real; the report, or the transport's diagnosis."""
    try:
        return await prober(config, secrets), None
    except TransportError as exc:
        return None, exc
