"""How a call reaches a worker: pickled by reference, or by value for what no worker could import by name.

``pickle`` sends a function or a class as its module and name, and the
worker imports it: free, and right for anything defined at module level in
an importable module (or in a script's ``__main__``, which a worker has
under fork and imports again under spawn and forkserver). It cannot send a
lambda or a function defined in a function, and a class or function
defined in a notebook cell or at the interactive prompt has a name no
worker can import. Those go **by value**, with cloudpickle: their code,
and the globals and closure cells they use, as they are at the
``submit()``. It is the library loky, Dask, Ray and PySpark send code with;
its output is ordinary pickle data, which the worker reads with
``pickle.loads`` (cloudpickle must be importable there too: it is, in the
same environment).

The choice is made per call, cheaply: a plain ``pickle.dumps`` first; by
value only when it fails, or when the main module is interactive (it has
no file) and the pickle names ``__main__``. So an importable task pays
nothing, and a definition changed in a notebook is sent as it is now: each
submit pickles it anew (nothing is cached on either side, as a cached copy
would keep the globals it used at its first submit).

>>> import pickle
>>> square = dumps(lambda x: x * x)
>>> pickle.loads(square)(7)
49
"""

from __future__ import annotations

import pickle
import sys
from typing import Any, Optional, Set

__all__ = ["BY_VALUE_WARN", "Loaded", "by_value_needed", "dumps", "portable", "where"]

#: Bytes of a call pickled by value past which ``dumps`` says so, once per name: it is sent that big at each submit.
BY_VALUE_WARN = 1 << 20

_warned: Set[str] = set()


def dumps(obj: Any, name: str = "") -> bytes:
    """``obj`` pickled for a worker: by reference when a worker could import what it names, else by value.

    Raises what pickling raised, with a message that names what could not
    be sent (a lock, an open file, a connection in a closure or an
    argument): ``TypeError`` or ``pickle.PicklingError``.
    """
    try:
        blob = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a lambda, a local function, or something no pickle sends
        return _by_value(obj, name, exc)
    if b"__main__" in blob and by_value_needed():  # names the interactive __main__: no worker has it
        return _by_value(obj, name, None)
    return blob


def by_value_needed() -> bool:
    """Whether ``__main__`` is interactive (a notebook, the prompt, ``python -c``): no worker can import from it."""
    main = sys.modules.get("__main__")
    return main is not None and getattr(main, "__file__", None) is None


def _by_value(obj: Any, name: str, first: Optional[Exception]) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        if first is not None:
            raise first from None
        raise pickle.PicklingError(
            f"{name or 'the task'} is defined interactively (a notebook or the prompt): sending it to a worker needs "
            "cloudpickle (pip install cloudpickle), or define it in a module"
        ) from None
    try:
        blob: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise (first if first is not None and not _more_precise(exc) else exc) from None
    if len(blob) > BY_VALUE_WARN and name not in _warned:
        _warned.add(name)
        import warnings

        warnings.warn(
            f"{name or 'a task'} goes to its worker by value, {len(blob) / 2**20:.1f} MiB pickled at each submit "
            "(what it uses from its globals and closure travels with it); pass large data as an argument, or "
            "define the task in a module",
            UserWarning,
            stacklevel=4,
        )
    return blob


def _more_precise(exc: Exception) -> bool:
    """Whether cloudpickle's error says more than plain pickle's (which only says a lambda has no importable name)."""
    return not isinstance(exc, pickle.PicklingError) or "attribute lookup" not in str(exc)


def where(function: Any) -> Optional[str]:
    """``file:line`` a function was defined at, for a name that says nothing alone (``<lambda>``, ``<locals>``).

    >>> where(len) is None, where(lambda: 0).startswith("<doctest")
    (True, True)
    """
    code = getattr(function, "__code__", None)
    if code is None:
        return None
    filename = code.co_filename
    return f"{filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"


def portable(function: Any) -> Any:
    """``function`` itself if a worker can import it by name, else a ``Loaded`` that carries it by value.

    For what ``multiprocessing`` pickles plainly (an initializer, under
    spawn and forkserver). Raises as ``dumps`` does.

    >>> portable(len) is len, portable(lambda: 5)()
    (True, 5)
    """
    blob = dumps(function, "the initializer")
    return function if b"cloudpickle" not in blob else Loaded(blob, function)


class Loaded:
    """A callable sent as ``dumps`` pickled it, loaded where it is called; its name is the function's.

    >>> Loaded(dumps(lambda x: x + 1))(1)
    2
    """

    def __init__(self, blob: bytes, function: Any = None) -> None:
        self.blob = blob
        self.__module__ = getattr(function, "__module__", None) or type(self).__module__
        self.__qualname__ = getattr(function, "__qualname__", None) or type(self).__qualname__

    def __call__(self, *args: Any) -> Any:
        return pickle.loads(self.blob)(*args)
