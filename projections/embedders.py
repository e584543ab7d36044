"""Embedders: text to vectors, for finding memories by meaning (``projections/memory.py``).

An embedder is one small interface (:class:`Embedder`): a ``name`` that says which model it is
(stored beside the vectors, so vectors of two models are never compared), its ``dimensions``
and ``embed(texts)``. The default, ``wordllama``, runs offline from its pip package: wordllama
0.4 ships a 256-dimension model and its tokenizer in the wheel, and is loaded from the
package's own folder with downloads turned off (its own lookup of the bundled tokenizer misses
that folder and would try the network).

The setting ``IPA_EMBEDDER`` picks one:

- ``wordllama`` (default), or ``wordllama:<dimensions>`` (64 or 128: the model's vectors cut
  short, which it is trained for);
- ``sentence-transformers:<model name or local folder>``, when that package and model are on
  the machine (nothing is downloaded: ``HF_HUB_OFFLINE`` is set while it loads);
- ``python:<module>:<factory>``: a callable returning an :class:`Embedder` of the user's.

Vectors come back L2-normalised (:func:`vectors`), so cosine similarity is their dot product.
An embedder that returns vectors of a size other than the one it declares fails with
:class:`EmbedderError`.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ipa.domain import clean_text

DEFAULT = "wordllama"


class EmbedderError(Exception):
    """An embedder cannot be loaded or gave vectors it should not have (message says which)."""


@runtime_checkable
class Embedder(Protocol):
    """Text to vectors of ``dimensions`` floats."""

    name: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Any:
        """One vector per text (a 2-D array-like, ``len(texts)`` x ``dimensions``)."""
        ...


class WordLlama:
    """wordllama's bundled model (see the module doc), at ``dimensions`` (≤ 256)."""

    def __init__(self, dimensions: int = 256) -> None:
        wordllama = _import_wordllama()
        if dimensions not in (64, 128, 256):
            raise EmbedderError(f"wordllama has 64, 128 or 256 dimensions, not {dimensions}")
        folder = Path(wordllama.__file__).parent
        try:
            self._model = wordllama.WordLlama.load(
                cache_dir=folder, disable_download=True, dim=256,
                trunc_dim=None if dimensions == 256 else dimensions)
        except Exception as e:  # a broken install raises anything from file to numpy errors
            raise EmbedderError(f"wordllama's bundled model did not load from {folder}: "
                                f"{type(e).__name__}: {e}") from e
        self.name = f"wordllama-l2-supercat:{dimensions}"
        self.dimensions = dimensions
        self._lock = threading.Lock()  # its tokenizer is not safe to share between threads

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._model.embed(list(texts), norm=False)  # normalised in vectors()


def _import_wordllama() -> Any:
    """The ``wordllama`` module, imported without the ``logging.basicConfig(level=INFO)`` it
    calls at import, which turned on every library's INFO lines on ipa's stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        import wordllama
    except ImportError as e:
        raise EmbedderError(f"the wordllama package is not installed: {e}") from e
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return wordllama


class SentenceTransformer:
    """A sentence-transformers model already on the machine (never downloaded)."""

    def __init__(self, model: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer as Model
        except ImportError as e:
            raise EmbedderError("IPA_EMBEDDER names sentence-transformers, which is not "
                                f"installed: {e}") from e
        try:
            self._model = Model(model)
        except Exception as e:
            raise EmbedderError(f"sentence-transformers model {model!r} did not load "
                                f"(offline): {type(e).__name__}: {e}") from e
        self.name = f"sentence-transformers:{model}"
        self.dimensions = int(self._model.get_sentence_embedding_dimension() or 0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.encode(list(texts), normalize_embeddings=True)


def load(setting: str | None = None) -> Embedder:
    """The embedder ``setting`` names (default: ``IPA_EMBEDDER``, else ``wordllama``)."""
    setting = (setting if setting is not None else os.environ.get("IPA_EMBEDDER", "")).strip()
    setting = setting or DEFAULT
    kind, _, rest = setting.partition(":")
    if kind == "wordllama":
        if rest and not rest.isdigit():
            raise EmbedderError(f"IPA_EMBEDDER {setting!r}: wordllama:<dimensions> takes a number")
        return WordLlama(int(rest) if rest else 256)
    if kind == "sentence-transformers" and rest:
        return SentenceTransformer(rest)
    if kind == "python" and rest.count(":") == 1:
        module, factory = rest.split(":")
        try:
            made = getattr(importlib.import_module(module), factory)()
        except Exception as e:
            raise EmbedderError(f"IPA_EMBEDDER {setting!r} did not load: "
                                f"{type(e).__name__}: {e}") from e
        if not isinstance(made, Embedder) or not isinstance(made.dimensions, int) \
                or made.dimensions <= 0:
            raise EmbedderError(f"IPA_EMBEDDER {setting!r} did not give an embedder (it needs "
                                "a name, dimensions > 0 and embed(texts))")
        return made
    raise EmbedderError(f"unknown IPA_EMBEDDER {setting!r}: expected wordllama, "
                        "sentence-transformers:<model> or python:<module>:<factory>")


def vectors(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """``embedder``'s vectors of ``texts`` as float32 rows of length 1, checked: a wrong shape
    or a value that is not a finite number is an :class:`EmbedderError`."""
    if not texts:
        return np.zeros((0, embedder.dimensions), dtype=np.float32)
    # A lone surrogate cannot be tokenised (nor encoded): it is read as U+FFFD.
    texts = [clean_text(t) for t in texts]
    try:
        out = np.asarray(embedder.embed(texts), dtype=np.float32)
    except EmbedderError:
        raise
    except Exception as e:
        raise EmbedderError(f"embedder {embedder.name} failed: {type(e).__name__}: {e}") from e
    if out.shape != (len(texts), embedder.dimensions):
        raise EmbedderError(f"embedder {embedder.name} gave vectors of shape {out.shape} for "
                            f"{len(texts)} texts; it declares {embedder.dimensions} dimensions")
    if not np.isfinite(out).all():
        raise EmbedderError(f"embedder {embedder.name} gave a vector that is not all numbers")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out = out / np.where(norms == 0, 1.0, norms)
    # A text with no known word embeds to zeros, whose cosine distance is not a number: it
    # gets the same unit vector as any other such text instead.
    out[norms[:, 0] == 0] = 1.0 / np.sqrt(embedder.dimensions)
    return out
