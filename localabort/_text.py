"""Text from the store, made safe to print on a terminal (the CLI's tables, the progress bars' labels)."""

from __future__ import annotations

import re

__all__ = ["printable"]

#: What a terminal would act on rather than show: control characters and bidirectional overrides.
_CONTROL = "\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ESCAPED = {False: re.compile(f"[\n{_CONTROL}]"), True: re.compile(f"[{_CONTROL}]")}  # by ``newlines``


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with what a terminal would act on escaped (``\\x1b``); ``newlines`` keeps line breaks.

    Ids, names, keys and errors come from the store, so from anyone who can write it.

    >>> printable("job\\x1b[2J"), printable("a\\nb"), printable("a\\nb", newlines=True)
    ('job\\\\x1b[2J', 'a\\\\nb', 'a\\nb')
    """
    return _ESCAPED[newlines].sub(lambda m: m.group().encode("unicode_escape").decode(), text)
