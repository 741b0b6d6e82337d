"""kexue.vq: VQ-VAE (Su 2019; van den Oord et al. 2017) — quantiser, model, PixelCNN prior.

* :class:`VectorQuantizer`: chunked nearest-code search, straight-through gradients, codebook
  and commitment losses, optional EMA codebook (all-reduced under ``torch.distributed``),
  dead-code restart, perplexity/usage.
"""

from kexue.vq.quantizer import VectorQuantizer, code_statistics, nearest_code

__all__ = ["VectorQuantizer", "code_statistics", "nearest_code"]
