"""What a delivery renders, decided once from its fixed layout snapshot, its task and
its range: the compiled layout, format, file names and the row columns to read. The
engine renders it for a transport; the export service renders it again for a signed
download of exactly that delivery's file (same snapshot, same range: the same bytes)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from services.common.file_names import DEFAULT_TEMPLATE, NameValues
from services.common.layouts.codec import custom_field_from_json, format_from_json, layout_from_json
from services.common.layouts.compiler import CompiledLayout, RenderContext, compile_layout
from services.common.layouts.formats import file_extension
from services.common.layouts.model import OutputFormat
from services.common.referral_rows import ReferralRowReader
from services.delivery.parts import of_campaigns
from services.delivery.store import Claimed, DeliveryContext


@dataclass(frozen=True)
class Rendering:
    """A delivery's rendering, decided."""

    layout: CompiledLayout
    fmt: OutputFormat
    names: NameValues
    template: str
    fields: list[str]
    one_campaign: UUID | None  # read only this campaign (PostgreSQL filters)
    campaigns: frozenset[str] | None  # or keep only these (several campaigns)


def rendering(claimed: Claimed, context: DeliveryContext, snapshot: dict[str, Any]) -> Rendering:
    """The rendering of a delivery from the layout snapshot its first attempt fixed."""
    spec = layout_from_json(snapshot["layout"])
    customs = {
        name: custom_field_from_json(name, str(v.get("description", "")), v["definition"])
        for name, v in snapshot["custom_fields"].items()
    }
    fmt = format_from_json(snapshot["format"]) if snapshot.get("format") else spec.format
    render_context = RenderContext(
        account_time_zone=context.account_time_zone,
        campaign_names=context.campaign_names,
        delivery_id=str(claimed.names_from),
        delivery_time=claimed.reserved_at,
    )
    layout = compile_layout(spec, customs, render_context)
    settings = context.settings
    names = NameValues(
        task=context.task_name,
        task_id=str(claimed.task_id),
        delivery_id=str(claimed.names_from),
        after_seq=claimed.after_seq,
        through_seq=claimed.through_seq,
        reserved_at=claimed.reserved_at,
        time_zone=context.time_zone,
        ext=file_extension(fmt).lstrip(".") + (".gpg" if settings.get("pgp_public_key") else ""),
    )
    campaigns = context.campaign_ids
    fields = list(layout.row_fields)
    one = campaigns[0] if campaigns is not None and len(campaigns) == 1 else None
    keep = None
    if campaigns is not None and one is None:
        fields.append("campaign_id")
        keep = frozenset(str(c) for c in campaigns)
    template = str(settings.get("file_name_template") or DEFAULT_TEMPLATE)
    return Rendering(layout, fmt, names, template, fields, one, keep)


def delivery_rows(
    reader: ReferralRowReader, claimed: Claimed, plan: Rendering
) -> tuple[AsyncGenerator[Any, None], AsyncIterator[Any]]:
    """(the source to close, the batches to render) of a delivery's range."""
    source = reader.rows_in_range(
        claimed.account_id, claimed.after_seq, claimed.through_seq, plan.one_campaign,
        plan.fields, claimed.frame,
    )  # fmt: skip
    if plan.campaigns is None:
        return source, source
    return source, of_campaigns(source, plan.campaigns)
