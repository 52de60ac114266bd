"""Connection rules: validate a draft (every problem named by field), seal its secrets,
and the create/get/list/update/delete/test calls over a store."""

from __future__ import annotations

import asyncio
import ipaddress
import re
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
from services.common.secrets import SecretBox, connection_secret_context
from services.delivery.openpgp import OpenPgpError, key_fingerprint
from services.delivery.transports.base import ProbeReport, TransportError
from services.delivery.transports.sftp import load_private_key, pinned_fingerprint
from services.ingest.accounts import check_name
from services.scheduler.connections.model import (
    ConnectionDraft,
    ConnectionStore,
    SavedConnection,
    Secrets,
    SftpConfig,
)

PLAIN_FTP = "plain FTP is refused (credentials and data would travel in clear): use SFTP or FTPS"
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")

Prober = Callable[[SftpConfig, Secrets], Awaitable[ProbeReport]]


def _problem(field: str, code: str, message: str) -> FieldProblem:
    return FieldProblem(field, code, message)


def _invalid(problems: list[FieldProblem]) -> InvalidArgumentError:
    """One error naming every problem (the details list them field by field)."""
    said = "; ".join(f"{p.field}: {p.message}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return InvalidArgumentError(f"connection is invalid: {said}{more}", problems)


def _from_url(
    url: str, sftp: SftpConfig | None, prefix: str
) -> tuple[SftpConfig | None, list[FieldProblem]]:
    """Fill host, port, user and folder from an sftp:// URL; refuse every other scheme."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("ftp", "ftpes"):
        return sftp, [_problem(f"{prefix}url", "INSECURE", PLAIN_FTP)]
    if scheme == "ftps":
        return sftp, [
            _problem(
                f"{prefix}url", "UNSUPPORTED", "FTPS connections are not available yet; use SFTP"
            )
        ]
    if scheme != "sftp":
        return sftp, [
            _problem(
                f"{prefix}url",
                "INVALID_FORMAT",
                "must be sftp://user@host[:port]/folder (SFTP or FTPS only)",
            )
        ]
    try:
        port = parts.port or 22
    except ValueError:
        return sftp, [_problem(f"{prefix}url", "INVALID_FORMAT", "the port is not a number")]
    base = sftp or SftpConfig(host="", username="", host_key="")
    filled = replace(
        base,
        host=parts.hostname or base.host,
        port=port,
        username=unquote(parts.username or "") or base.username,
        remote_dir=unquote(parts.path) or base.remote_dir,
    )
    return filled, []


def sftp_problems(
    sftp: SftpConfig, secrets: Secrets, stored: frozenset[str], prefix: str
) -> list[FieldProblem]:
    """Every problem of SFTP settings plus secrets (`stored` names those kept from before)."""
    p = f"{prefix}sftp."
    found: list[FieldProblem] = []
    if not sftp.host:
        found.append(_problem(f"{p}host", "REQUIRED", "is required"))
    elif not _is_host(sftp.host):
        found.append(
            _problem(
                f"{p}host", "INVALID_FORMAT", f"{sftp.host[:64]!r} is not a host name or address"
            )
        )
    if not 0 < sftp.port <= 65535:
        found.append(_problem(f"{p}port", "OUT_OF_RANGE", "must be 1-65535"))
    if not sftp.username:
        found.append(_problem(f"{p}username", "REQUIRED", "is required"))
    elif len(sftp.username) > 100 or any(ord(c) < 32 or c.isspace() for c in sftp.username):
        found.append(
            _problem(
                f"{p}username",
                "INVALID_FORMAT",
                "at most 100 characters, no spaces or control characters",
            )
        )
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
    if "\0" in sftp.remote_dir or len(sftp.remote_dir) > 1024:
        found.append(
            _problem(f"{p}remote_dir", "INVALID_FORMAT", "at most 1024 characters, no NUL")
        )
    try:
        check_template(sftp.file_name_template)
    except TemplateError as exc:
        found.append(_problem(f"{p}file_name_template", "INVALID_FORMAT", str(exc)))
    if sftp.write_mode not in ("rename", "direct"):
        found.append(_problem(f"{p}write_mode", "UNKNOWN_CODE", "RENAME or DIRECT"))
    if sftp.max_rows_per_file < 0:
        found.append(_problem(f"{p}max_rows_per_file", "OUT_OF_RANGE", "must not be negative"))
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


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return len(host) <= 253 and _HOST.fullmatch(host) is not None


async def _egress_problems(
    egress: EgressPolicy, sftp: SftpConfig, prefix: str
) -> list[FieldProblem]:
    """A destination in a refused range is refused when saved (DNS that fails now is not:
    the test call diagnoses it)."""
    try:
        await egress.resolve(sftp.host, sftp.port)
    except EgressRefusedError as exc:
        return [_problem(f"{prefix}sftp.host", "EGRESS_REFUSED", exc.message)]
    except ResolutionError:
        return []
    return []


async def validated(
    draft: ConnectionDraft,
    egress: EgressPolicy,
    stored: frozenset[str] = frozenset(),
    prefix: str = "connection.",
) -> tuple[str, SftpConfig, Secrets]:
    """The clean name, settings and secrets of a draft, or InvalidArgumentError listing
    every problem."""
    problems: list[FieldProblem] = []
    try:
        name = check_name(draft.name)
    except InvalidArgumentError as exc:
        name = ""
        problems += [replace(p, field=f"{prefix}name") for p in exc.problems]
    sftp = draft.sftp
    if draft.url:
        sftp, found = _from_url(draft.url, sftp, prefix)
        problems += found
    if sftp is None:
        if not problems:
            problems.append(
                _problem(
                    f"{prefix}sftp",
                    "REQUIRED",
                    "give SFTP settings (the only kind so far) or an sftp:// url",
                )
            )
        raise _invalid(problems)
    sftp = replace(
        sftp,
        port=sftp.port or 22,
        remote_dir=sftp.remote_dir or ".",
        host_key=sftp.host_key.strip(),
        host=sftp.host.strip(),
    )
    problems += sftp_problems(sftp, draft.secrets, stored, prefix)
    if sftp.pgp_public_key:
        try:  # gpg runs as a subprocess: off the event loop
            fingerprint = await asyncio.to_thread(key_fingerprint, sftp.pgp_public_key)
            sftp = replace(sftp, pgp_fingerprint=fingerprint)
        except OpenPgpError as exc:
            problems.append(_problem(f"{prefix}sftp.pgp_public_key", "INVALID_FORMAT", str(exc)))
    else:
        sftp = replace(sftp, pgp_fingerprint="")
    if not problems:
        problems += await _egress_problems(egress, sftp, prefix)
    if problems:
        raise _invalid(problems)
    return name, sftp, draft.secrets


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
    values = {
        n: box.open(s, connection_secret_context(connection.id, n))
        for n, s in connection.sealed.items()
    }
    return Secrets(**values)


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
    name, sftp, secrets = await validated(draft, egress)
    saved = await store.insert(wanted, account, name, sftp, seal(box, wanted, secrets, {}))
    if saved is None:
        raise AlreadyExistsError(
            f"a connection named {name!r} (or with id {wanted}) exists already"
        )
    return saved


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
    kept = {n: s for n, s in current.sealed.items() if n not in clear}
    name, sftp, secrets = await validated(draft, egress, frozenset(kept))
    saved = await store.update(
        current.account_id, current.id, name, sftp, seal(box, current.id, secrets, kept)
    )
    if saved is None:
        raise AlreadyExistsError(f"a connection named {name!r} exists already")
    return saved


async def delete_connection(store: ConnectionStore, account_id: str, connection_id: str) -> None:
    """Delete a connection no task uses."""
    current = await get_connection(store, account_id, connection_id)
    users = await store.tasks_using(current.id)
    if users:
        named = ", ".join(f"{name!r} ({task_id})" for task_id, name in users[:5])
        raise FailedPreconditionError(
            f"connection {current.id} is used by task {named}: change or delete the task first"
        )
    await store.delete(current.account_id, current.id)


async def test_connection(
    sftp: SftpConfig, secrets: Secrets, prober: Prober
) -> tuple[ProbeReport | None, TransportError | None]:
    """Connect for real; the report, or the transport's diagnosis."""
    try:
        return await prober(sftp, secrets), None
    except TransportError as exc:
        return None, exc
