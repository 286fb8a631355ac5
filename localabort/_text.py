"""Text to and from the store: a call's arguments as the store keeps them, and stored text made safe to print."""

from __future__ import annotations

import itertools
import re
import reprlib
from typing import Any, Dict, List, Optional, Tuple

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


class _Short(reprlib.Repr):
    """``reprlib``'s bounded repr (which never raises), with room for a useful string or object.

    Bytes are cut before their repr is made: ``reprlib`` would make the
    whole repr of a 100 MB argument first, and then cut it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 120
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 12

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x) if len(x) <= self.maxstring else repr(x[: self.maxstring]) + f"... ({len(x):,} bytes)"

    def repr_bytearray(self, x: bytearray, level: int) -> str:
        return "bytearray(" + self.repr_bytes(bytes(x[: self.maxstring + 1]), level) + ")"


_SHORT = _Short()
#: Types whose every value ``_SHORT`` shows as plain ``repr`` does, when that is short enough (``_short``).
_PLAIN = {int, float, bool, str, type(None)}


def _short(x: Any) -> str:
    """``_SHORT.repr(x)``: the common arguments (a number, a short string, ``None``) without ``reprlib``'s detour.

    >>> _short(42), _short("a" * 200) == _SHORT.repr("a" * 200), _short(10**100) == _SHORT.repr(10**100)
    ('42', True, True)
    """
    if type(x) in _PLAIN and (type(x) is not int or -_LONGEST < x < _LONGEST) and (type(x) is not str or len(x) < 60):
        text = repr(x)
        if len(text) <= _SHORT.maxstring:  # a string's escapes may make its repr longer than it
            return text
    return _SHORT.repr(x)


#: Integers of more digits than ``reprlib`` shows whole (its ``maxlong``, 40) take its way.
_LONGEST = 10**39


def _some(parts: List[str], count: int) -> str:
    return ", ".join(parts) if count <= len(parts) else ", ".join(parts) + f", ... ({count} in all)"


#: The longest ``call_repr`` (characters): enough to tell calls apart, small beside a row.
CALL_REPR_MAX = 500


def call_repr(
    args: Tuple[Any, ...], kwargs: Dict[str, Any], argsrepr: Optional[str] = None, kwargsrepr: Optional[str] = None,
    *, most: int = 12,
) -> str:  # fmt: skip
    """A call's arguments as the store keeps them: ``1, 'a', n=2``, each value shortened, the whole at most 500 chars.

    Written at submit, for readers that must never unpickle (the dashboard).
    ``argsrepr`` and ``kwargsrepr`` (Celery's names) replace the text of the
    positional or the keyword arguments: a secret is kept out of the store.
    At most ``most`` arguments of each kind are shown (each repr costs
    microseconds, and a chunk of ``map`` is one call of a hundred).

    >>> call_repr((1, "a" * 300), {"n": [0] * 50})[-16:]
    '0, 0, 0, 0, ...]'
    >>> call_repr(("alice", "hunter2"), {"retries": 3}, argsrepr="'alice', '***'")
    "'alice', '***', retries=3"
    >>> len(call_repr(("a" * 300,) * 9, {})), call_repr((b"x" * 10**8,), {})[-23:]
    (500, '... (100,000,000 bytes)')
    >>> call_repr(tuple(range(100)), {})
    '0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (100 in all)'
    """
    positional = argsrepr if argsrepr is not None else _some([_short(a) for a in args[:most]], len(args))
    if kwargsrepr is None and not kwargs:  # the usual call: positional arguments alone
        text = positional
    else:
        keywords = (
            kwargsrepr
            if kwargsrepr is not None
            else _some([f"{k}={_short(v)}" for k, v in itertools.islice(kwargs.items(), most)], len(kwargs))
        )
        text = ", ".join(part for part in (positional, keywords) if part)
    return text if len(text) <= CALL_REPR_MAX else text[: CALL_REPR_MAX - 3] + "..."
