"""Saved custom fields and layouts, and what the layout rules need from the store."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.common.layouts.model import CustomFieldSpec, LayoutSpec


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What the layout rules need to know about an account."""

    id: UUID
    time_zone: str
    active: bool


@dataclass(frozen=True, slots=True)
class SavedCustomField:
    """A custom field as stored for an account."""

    id: UUID
    account_id: UUID
    spec: CustomFieldSpec
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SavedLayout:
    """A layout as stored for an account (id None: the built-in default)."""

    id: UUID | None
    account_id: UUID
    name: str
    spec: LayoutSpec
    is_default: bool
    version: int
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class FieldUsers:
    """Who reads a custom field: layouts (by name) and other custom fields (by name)."""

    layouts: tuple[str, ...]
    custom_fields: tuple[str, ...]


class DefinitionWrites(Protocol):
    """Reads and writes inside one transaction that holds the account's definitions lock."""

    async def custom_fields(self) -> list[SavedCustomField]: ...
    async def insert_custom_field(
        self, field_id: UUID, spec: CustomFieldSpec, depends_on: Sequence[str]
    ) -> SavedCustomField | None: ...
    async def update_custom_field(
        self, field_id: UUID, spec: CustomFieldSpec, depends_on: Sequence[str]
    ) -> SavedCustomField | None: ...
    async def delete_custom_field(self, field_id: UUID) -> bool: ...
    async def field_users(self, name: str) -> FieldUsers: ...
    async def layout_tasks(self, layout_id: UUID) -> tuple[str, ...]: ...
    async def get_layout(self, layout_id: UUID) -> SavedLayout | None: ...
    async def layout_name_taken(self, name: str, other_than: UUID | None) -> bool: ...
    async def insert_layout(
        self, layout_id: UUID, name: str, spec: LayoutSpec, is_default: bool, custom: Sequence[str]
    ) -> SavedLayout | None: ...
    async def update_layout(
        self, layout_id: UUID, name: str, spec: LayoutSpec, is_default: bool, custom: Sequence[str]
    ) -> SavedLayout | None: ...
    async def delete_layout(self, layout_id: UUID) -> bool: ...


class LayoutStore(Protocol):
    """Everything the layout rules read, plus a way to write definitions safely."""

    def definitions(self, account_id: UUID) -> AbstractAsyncContextManager[DefinitionWrites]: ...
    async def account(self, account_id: UUID) -> AccountInfo | None: ...
    async def custom_fields(self, account_id: UUID) -> list[SavedCustomField]: ...
    async def get_custom_field(
        self, account_id: UUID, field_id: UUID
    ) -> SavedCustomField | None: ...
    async def list_custom_fields(
        self, account_id: UUID, after_name: str, limit: int
    ) -> list[SavedCustomField]: ...
    async def get_layout(self, account_id: UUID, layout_id: UUID) -> SavedLayout | None: ...
    async def default_layout(self, account_id: UUID) -> SavedLayout | None: ...
    async def list_layouts(
        self, account_id: UUID, after_name: str, limit: int
    ) -> list[SavedLayout]: ...
