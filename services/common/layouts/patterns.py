"""strftime / strptime patterns: which directives are allowed, checked before saving.

Only directives that behave the same on every platform we run on (glibc, C locale) are
accepted, so a pattern that saves is a pattern that renders.
"""

from __future__ import annotations

import re

# Directive letters both strftime and strptime understand.
_COMMON = frozenset("aAbBdHIjmMpSUWwyYzZfGuV%")
# Extra letters strftime (output) supports through glibc.
_OUTPUT_ONLY = frozenset("eFTDRhCgkl")
# Directives that carry a time of day; a pattern without them parses calendar dates.
TIME_DIRECTIVES = frozenset("HIMSfpzZTRkl")
# glibc flag that drops padding: %-d -> 5 instead of 05 (output only).
_NO_PAD = frozenset("dmHIMSjyeUWVkl")

_DIRECTIVE = re.compile(r"%(-?)(.?)", re.DOTALL)
MAX_PATTERN = 200


def pattern_problem(pattern: str, *, for_output: bool) -> str | None:
    """Why `pattern` is not usable (None when it is)."""
    if not pattern:
        return "is required"
    if len(pattern) > MAX_PATTERN:
        return f"at most {MAX_PATTERN} characters"
    allowed = _COMMON | _OUTPUT_ONLY if for_output else _COMMON
    has_directive = False
    for match in _DIRECTIVE.finditer(pattern):
        flag, letter = match.group(1), match.group(2)
        if not letter:
            return f"ends with a lone % at position {match.start()}"
        if letter not in allowed:
            return f"unknown directive %{flag}{letter} at position {match.start()}"
        if flag and (not for_output or letter not in _NO_PAD):
            return f"the - flag is not supported in %{flag}{letter} at position {match.start()}"
        has_directive = has_directive or letter != "%"
    if not has_directive:
        return "has no % directive"
    return None


def has_time_directive(pattern: str) -> bool:
    """True when the pattern mentions a time of day (or an offset)."""
    return any(m.group(2) in TIME_DIRECTIVES for m in _DIRECTIVE.finditer(pattern))
