"""What a delivery renders, decided once from its fixed layout snapshot, its task and
its range: the compiled layout, format, file names and the row columns to read. The
engine renders it for a transport; the export service renders it again for a signed
download of exactly that delivery's file (same snapshot, same range: the same bytes)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from services.common.audiences.targets import AudienceSplit
from services.common.file_names import DEFAULT_TEMPLATE, NameValues
from services.common.layouts.codec import custom_field_from_json, format_from_json, layout_from_json
from services.common.layouts.compiler import CompiledLayout, RenderContext, compile_layout
from services.common.layouts.formats import file_extension
from services.common.layouts.model import OutputFormat
from services.common.referral_rows import HeldBack, ReferralRowReader
from services.delivery.store import Claimed, DeliveryContext


@dataclass(frozen=True)
class Rendering:
    """A delivery's rendering, decided."""

    layout: CompiledLayout
    fmt: OutputFormat
    names: NameValues
    template: str
    fields: list[str]
    campaigns: tuple[UUID, ...] | None  # read only these campaigns (None: every one)
    # Leave out the referrals this delivery's audiences held back (delivery_held_back
    # of the delivery whose rows it renders: a resend's original), or None.
    suppressions: UUID | None = None
    # Before they are recorded (the first render): leave out those the audiences hold back.
    audiences: AudienceSplit | None = None


def rendering(
    claimed: Claimed,
    context: DeliveryContext,
    snapshot: dict[str, Any],
    only: Collection[str] | None = None,
    *,
    recorded: bool = True,
) -> Rendering:
    """The rendering of a delivery from the layout snapshot its first attempt fixed
    (`only`: just the columns with these headers, for a transport that reads no more;
    `recorded`: whether the delivery recorded what its audiences held back)."""
    spec = layout_from_json(snapshot["layout"])
    if only is not None:
        spec = replace(spec, columns=tuple(c for c in spec.columns if c.header in only))
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
    campaigns = None if context.campaign_ids is None else tuple(context.campaign_ids)
    template = str(settings.get("file_name_template") or DEFAULT_TEMPLATE)
    split = AudienceSplit.from_json(snapshot.get("audiences"))
    held_back = claimed.names_from if split and recorded else None
    audiences = split if split and not recorded else None
    return Rendering(
        layout, fmt, names, template, list(layout.row_fields), campaigns, held_back, audiences
    )


def delivery_rows(
    reader: ReferralRowReader,
    claimed: Claimed,
    plan: Rendering,
    held: HeldBack | None = None,
) -> AsyncGenerator[Any, None]:
    """The batches of a delivery's range (close them when stopping early); `held` is told,
    after a first render's last row, what its audiences held back."""
    return reader.rows_in_range(
        claimed.account_id, claimed.after_seq, claimed.through_seq, plan.campaigns,
        plan.fields, claimed.frame, plan.suppressions, plan.audiences, held,
    )  # fmt: skip
