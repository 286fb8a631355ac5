"""Text to and from the store: a call's arguments as the store keeps them, and stored text made safe to print."""

from __future__ import annotations

import re
import reprlib
from typing import Any, Dict, Tuple

__all__ = ["call_repr", "printable"]

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


def _short() -> reprlib.Repr:
    """``reprlib``'s bounded repr (which never raises), with room for a useful string or object."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 120
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 12
    return short


_SHORT = _short()
#: The longest ``call_repr`` (characters): enough to tell calls apart, small beside a row.
CALL_REPR_MAX = 500


def call_repr(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
    """A call's arguments as the store keeps them: ``1, 'a', n=2``, each value shortened, the whole at most 500 chars.

    Written at submit, for readers that must never unpickle (the dashboard).

    >>> call_repr((1, "a" * 300), {"n": [0] * 50})[-30:]
    '0, 0, 0, 0, 0, 0, 0, 0, 0, ...]'
    >>> len(call_repr(("a" * 300,) * 9, {}))
    500
    """
    text = ", ".join([*map(_SHORT.repr, args), *(f"{k}={_SHORT.repr(v)}" for k, v in kwargs.items())])
    return text if len(text) <= CALL_REPR_MAX else text[: CALL_REPR_MAX - 3] + "..."
