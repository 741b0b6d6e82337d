"""kexue: eight Scientific Spaces (kexue.fm) deep-learning articles as fast, tested PyTorch software.

Subpackages (one per article): :mod:`kexue.attention` (01), :mod:`kexue.mrc` (02),
:mod:`kexue.vq` (03), :mod:`kexue.optim` (04), :mod:`kexue.seq2seq` (05),
:mod:`kexue.analysis` (06), :mod:`kexue.init` (07), :mod:`kexue.tagging` (08).
Shared plumbing: :mod:`kexue.core`, :mod:`kexue.data`, :mod:`kexue.train`, :mod:`kexue.report`.
"""

__version__ = "0.1.0"
