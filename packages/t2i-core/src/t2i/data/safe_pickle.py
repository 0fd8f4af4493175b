"""Read the Python 2 pickles of the text-to-image literature without ever running code from them.

StackGAN, AttnGAN and DF-GAN distribute their splits as ``train/filenames.pickle`` (a list of strings)
and Reed et al.'s char-CNN-RNN sentence embeddings as ``char-CNN-RNN-embeddings.pickle`` (a list of
numpy arrays). A pickle is a program: ``pickle.load`` calls whatever function the file names, so a
downloaded pickle can run anything. :func:`load_pickle` uses an unpickler whose ``find_class`` knows only:

- plain containers and scalars (these need no global at all): list, tuple, dict, str, bytes, int, float,
  bool, None; plus ``set``, ``frozenset``, ``bytearray`` and ``complex``;
- ``_codecs.encode`` restricted to latin-1 / UTF-8 of a ``str`` (how Python 3 writes ``bytes`` at
  protocol 2);
- numpy's array reconstruction: ``numpy.core.multiarray._reconstruct`` (also spelled
  ``numpy._core.multiarray``), ``numpy._core.numeric._frombuffer`` (protocol 5), ``numpy.ndarray`` and
  ``numpy.dtype``. The array's elements are decoded
  by this same unpickler, so an object array cannot smuggle a function in either.

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a class of some library) stops
the load with a :class:`~t2i.errors.UsageError` naming the file and the global. Python 2 byte strings
are decoded as latin-1 (``encoding="latin1"``, as numpy needs for array data), so file names arrive as
``str``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UsageError

__all__ = ["load_pickle", "loads_pickle", "UnsafePickleError"]

_RECONSTRUCT = np._core.multiarray._reconstruct  # the function numpy's ndarray.__reduce__ names


def _safe_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` for what pickle needs (str -> bytes in latin-1 or UTF-8), and nothing else."""
    codec = str(encoding).lower().replace("_", "-")
    if not isinstance(text, str) or codec not in ("latin1", "latin-1", "iso-8859-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
    return text.encode(codec, errors if errors in ("strict", "replace", "surrogatepass") else "strict")


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # protocol 5 arrays: bytes -> array
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _safe_encode,
}
for _module in ("builtins", "__builtin__"):  # Python 3 and Python 2 spellings
    for _name, _obj in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray), ("complex", complex)):
        _ALLOWED[(_module, _name)] = _obj


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed list (it would run code on load)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("a persistent id")


def loads_pickle(data: bytes, where: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the restricted unpickler (``encoding="latin1"``); see :func:`load_pickle`."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UsageError(
            f"{where}: refused to unpickle it: it asks for {exc}, which could run code "
            f"(only lists, dicts, strings, numbers and numpy arrays are accepted)"
        ) from None
    except Exception as exc:  # truncated, not a pickle, or a numpy state numpy rejects
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise UsageError(f"{where}: not a readable pickle ({detail})") from None


def load_pickle(path: str | Path) -> Any:
    """The plain data in pickle file ``path``, read without running code from it.

    Raises :class:`UsageError` (one line naming the file) when the file is missing, is not a pickle, or
    names anything beyond plain containers, strings, numbers and numpy arrays.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return loads_pickle(data, str(path))
