"""The layout every account gets until it saves its own default.

It is computed, not stored: accounts pick up improvements to it automatically, and there
is nothing to migrate. An account that saves a layout marked as default uses that instead.
"""

from __future__ import annotations

from services.common.layouts.model import Column, LayoutSpec

DEFAULT_LAYOUT_NAME = "Standard fields"
# The built-in default's version: raise it whenever its columns change, so a delivery's
# record of what it rendered ("built-in, version N") stays true.
DEFAULT_LAYOUT_VERSION = 1

_DEFAULT_FIELDS = (
    "email", "title", "first_name", "last_name", "gender", "date_of_birth", "mobile",
    "phone", "address_line1", "address_line2", "city", "state", "postcode", "country",
    "language", "campaign_name", "partner_name", "opted_in_at", "ip_address",
    "partner_referral_id", "received_at", "seq",
)  # fmt: skip

DEFAULT_LAYOUT = LayoutSpec(columns=tuple(Column(name, name) for name in _DEFAULT_FIELDS))
