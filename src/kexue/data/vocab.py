"""The project's one token <-> id vocabulary, :class:`kexue.core.vocab.Vocab`, re-exported.

It lives in :mod:`kexue.core` so that algorithm modules (e.g. :class:`kexue.tagging.Tagger`),
which may not import the data layer, use the same class as the data pipelines.
"""

from __future__ import annotations

from kexue.core.vocab import Vocab

__all__ = ["Vocab"]
