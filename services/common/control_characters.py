"""The control-character rule, defined once: what no stored or shown text may contain.

C0 and C1 controls and DEL. Text that may span lines (an ad text, an extra attribute)
keeps tab, newline and carriage return. The compiled scanner applies the same rule in C
(checked_length in services/ingest/_scan.c).
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def has_control_character(text: str, *, multiline: bool = False) -> bool:
    """Whether `text` holds a character the rule refuses."""
    return (CONTROL_MULTILINE if multiline else CONTROL).search(text) is not None
