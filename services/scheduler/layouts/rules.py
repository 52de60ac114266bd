"""Rules for custom fields and layouts: validation at save, safe deletes, the default layout.

Every write runs in one transaction holding the account's definitions lock, so that two
concurrent saves can neither create a reference cycle nor delete a field a layout just
started to use.
"""

from __future__ import annotations

from uuid import UUID

from services.common.control_characters import has_control_character
from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.ids import parse_id
from services.common.layouts.defaults import DEFAULT_LAYOUT, DEFAULT_LAYOUT_NAME
from services.common.layouts.model import CustomFieldSpec, LayoutSpec
from services.common.layouts.validation import (
    custom_dependencies,
    custom_field_problems,
    layout_custom_fields,
    layout_problems,
    require_no_problems,
)
from services.common.paging import Page, decode_token, fetch_page, page_size
from services.scheduler.layouts.model import (
    AccountInfo,
    LayoutStore,
    SavedCustomField,
    SavedLayout,
)

MAX_LAYOUT_NAME = 200


async def list_custom_fields(
    store: LayoutStore, account_id: str, size: int, token: str
) -> Page[SavedCustomField]:
    """One page of the account's custom fields by name, after the token's name."""
    account = await account_for(store, account_id)
    after = decode_token(token)
    return await fetch_page(
        lambda limit: store.list_custom_fields(account.id, after, limit),
        page_size(size),
        lambda saved: saved.spec.name,
    )


async def list_layouts(
    store: LayoutStore, account_id: str, size: int, token: str
) -> Page[SavedLayout]:
    """One page of the account's layouts by name, after the token's name."""
    account = await account_for(store, account_id)
    after = decode_token(token)
    return await fetch_page(
        lambda limit: store.list_layouts(account.id, after, limit),
        page_size(size),
        lambda saved: saved.name,
    )


async def account_for(store: LayoutStore, account_id: str, *, writing: bool = False) -> AccountInfo:
    """The account, or NotFoundError; archived accounts cannot change definitions."""
    wanted = parse_id("account_id", account_id)
    account = await store.account(wanted)
    if account is None:
        raise NotFoundError(f"account {wanted} does not exist")
    if writing and not account.active:
        raise FailedPreconditionError(f"account {wanted} is archived")
    return account


def _check_version(kind: str, expected: int, stored: int) -> None:
    if expected and expected != stored:
        raise FailedPreconditionError(
            f"{kind} was changed meanwhile: version {stored}, request expected {expected}"
        )


async def create_custom_field(
    store: LayoutStore, account_id: str, field_id: str, spec: CustomFieldSpec
) -> SavedCustomField:
    """Validate and save a new custom field; repeating a create with the same id is a no-op."""
    account = await account_for(store, account_id, writing=True)
    wanted = parse_id("field.id", field_id, required=False)
    async with store.definitions(account.id) as tx:
        existing = await tx.custom_fields()
        same_id = next((f for f in existing if f.id == wanted), None)
        if same_id is not None:
            if same_id.spec != spec:
                raise AlreadyExistsError(f"custom field {wanted} exists with another definition")
            return same_id
        others = {f.spec.name: f.spec for f in existing}
        require_no_problems("custom field", custom_field_problems(spec, others))
        if spec.name in others:
            raise AlreadyExistsError(f"a custom field named {spec.name!r} exists already")
        saved = await tx.insert_custom_field(wanted, spec, custom_dependencies(spec))
    if saved is None:
        raise AlreadyExistsError(f"custom field {wanted} exists already")
    return saved


async def update_custom_field(
    store: LayoutStore, account_id: str, field_id: str, spec: CustomFieldSpec, version: int
) -> SavedCustomField:
    """Replace a custom field's definition (its name stays)."""
    account = await account_for(store, account_id, writing=True)
    wanted = parse_id("field.id", field_id)
    async with store.definitions(account.id) as tx:
        existing = await tx.custom_fields()
        current = next((f for f in existing if f.id == wanted), None)
        if current is None:
            raise NotFoundError(f"custom field {wanted} does not exist in account {account.id}")
        if spec.name != current.spec.name:
            problem = FieldProblem(
                "field.name", "IMMUTABLE", f"stays {current.spec.name!r}; create a new field"
            )
            raise InvalidArgumentError(f"field.name {problem.message}", [problem])
        _check_version("custom field", version, current.version)
        others = {f.spec.name: f.spec for f in existing if f.id != wanted}
        require_no_problems("custom field", custom_field_problems(spec, others))
        saved = await tx.update_custom_field(wanted, spec, custom_dependencies(spec))
    if saved is None:
        raise NotFoundError(f"custom field {wanted} does not exist in account {account.id}")
    return saved


async def delete_custom_field(store: LayoutStore, account_id: str, field_id: str) -> None:
    """Delete a custom field nobody uses; FailedPreconditionError names its users."""
    account = await account_for(store, account_id, writing=True)
    wanted = parse_id("id", field_id)
    async with store.definitions(account.id) as tx:
        current = next((f for f in await tx.custom_fields() if f.id == wanted), None)
        if current is None:
            raise NotFoundError(f"custom field {wanted} does not exist in account {account.id}")
        users = await tx.field_users(current.spec.name)
        if users.layouts or users.custom_fields:
            named = [f"layout {n!r}" for n in users.layouts]
            named += [f"custom field {n!r}" for n in users.custom_fields]
            raise FailedPreconditionError(
                f"custom field {current.spec.name!r} is in use by {', '.join(named)}"
            )
        await tx.delete_custom_field(wanted)


async def get_custom_field(store: LayoutStore, account_id: str, field_id: str) -> SavedCustomField:
    """The account's custom field, or NotFoundError."""
    account = await account_for(store, account_id)
    wanted = parse_id("id", field_id)
    found = await store.get_custom_field(account.id, wanted)
    if found is None:
        raise NotFoundError(f"custom field {wanted} does not exist in account {account.id}")
    return found


def _layout_name_problems(name: str) -> list[FieldProblem]:
    clean = name.strip()
    if not clean:
        return [FieldProblem("layout.name", "REQUIRED", "is required")]
    if len(clean) > MAX_LAYOUT_NAME:
        return [FieldProblem("layout.name", "TOO_LONG", f"at most {MAX_LAYOUT_NAME} characters")]
    if has_control_character(clean):
        return [FieldProblem("layout.name", "CONTROL_CHARACTER", "no control characters")]
    return []


async def create_layout(
    store: LayoutStore,
    account_id: str,
    layout_id: str,
    name: str,
    spec: LayoutSpec,
    is_default: bool,
) -> SavedLayout:
    """Validate and save a new layout; repeating a create with the same id is a no-op."""
    account = await account_for(store, account_id, writing=True)
    wanted = parse_id("layout.id", layout_id, required=False)
    name = name.strip()
    async with store.definitions(account.id) as tx:
        same_id = await tx.get_layout(wanted)
        if same_id is not None:
            if (same_id.name, same_id.spec, same_id.is_default) != (name, spec, is_default):
                raise AlreadyExistsError(f"layout {wanted} exists with another definition")
            return same_id
        names = {f.spec.name for f in await tx.custom_fields()}
        require_no_problems("layout", _layout_name_problems(name) + layout_problems(spec, names))
        if await tx.layout_name_taken(name, None):
            raise AlreadyExistsError(f"a layout named {name!r} exists already")
        saved = await tx.insert_layout(wanted, name, spec, is_default, layout_custom_fields(spec))
    if saved is None:
        raise AlreadyExistsError(f"layout {wanted} exists already")
    return saved


async def update_layout(
    store: LayoutStore,
    account_id: str,
    layout_id: str,
    name: str,
    spec: LayoutSpec,
    is_default: bool,
    version: int,
) -> SavedLayout:
    """Replace a layout (name included)."""
    account = await account_for(store, account_id, writing=True)
    wanted = parse_id("layout.id", layout_id)
    name = name.strip()
    async with store.definitions(account.id) as tx:
        current = await tx.get_layout(wanted)
        if current is None:
            raise NotFoundError(f"layout {wanted} does not exist in account {account.id}")
        _check_version("layout", version, current.version)
        names = {f.spec.name for f in await tx.custom_fields()}
        require_no_problems("layout", _layout_name_problems(name) + layout_problems(spec, names))
        if await tx.layout_name_taken(name, wanted):
            raise AlreadyExistsError(f"a layout named {name!r} exists already")
        saved = await tx.update_layout(wanted, name, spec, is_default, layout_custom_fields(spec))
    if saved is None:
        raise NotFoundError(f"layout {wanted} does not exist in account {account.id}")
    return saved


async def delete_layout(store: LayoutStore, account_id: str, layout_id: str) -> None:
    """Delete a layout no task delivers with; FailedPreconditionError names the tasks."""
    account = await account_for(store, account_id, writing=True)
    wanted = parse_id("id", layout_id)
    async with store.definitions(account.id) as tx:
        tasks = await tx.layout_tasks(wanted)
        if tasks:
            named = ", ".join(repr(t) for t in tasks)
            raise FailedPreconditionError(
                f"layout {wanted} is used by task {named}: change or delete the task first"
            )
        if not await tx.delete_layout(wanted):
            raise NotFoundError(f"layout {wanted} does not exist in account {account.id}")


async def get_layout(store: LayoutStore, account_id: str, layout_id: str) -> SavedLayout:
    """The account's layout, or NotFoundError."""
    account = await account_for(store, account_id)
    wanted = parse_id("id", layout_id)
    found = await store.get_layout(account.id, wanted)
    if found is None:
        raise NotFoundError(f"layout {wanted} does not exist in account {account.id}")
    return found


def builtin_default_layout(account_id: UUID) -> SavedLayout:
    """The computed layout used while an account has saved no default of its own."""
    return SavedLayout(
        id=None,
        account_id=account_id,
        name=DEFAULT_LAYOUT_NAME,
        spec=DEFAULT_LAYOUT,
        is_default=True,
        version=0,
        created_at=None,
        updated_at=None,
    )


async def default_layout(store: LayoutStore, account_id: str) -> SavedLayout:
    """The account's saved default layout, else the built-in one."""
    account = await account_for(store, account_id)
    return await store.default_layout(account.id) or builtin_default_layout(account.id)
