"""kexue.vq: VQ-VAE (Su 2019; van den Oord et al. 2017) — quantiser, model, PixelCNN prior.

* :class:`VectorQuantizer`: chunked nearest-code search, straight-through gradients, codebook
  and commitment losses, optional EMA codebook (all-reduced under ``torch.distributed``),
  dead-code restart, perplexity/usage.
* :class:`VQVAE`: conv encoder, quantiser, conv decoder with residual blocks.
* :class:`PixelCNNPrior`: gated PixelCNN (vertical + horizontal stacks, type A/B masks,
  optional class conditioning) with ``log_prob`` and batched ``sample``.
"""

from kexue.vq.pixelcnn import PixelCNNPrior
from kexue.vq.quantizer import VectorQuantizer, code_statistics, nearest_code
from kexue.vq.vqvae import VQVAE

__all__ = ["VQVAE", "PixelCNNPrior", "VectorQuantizer", "code_statistics", "nearest_code"]
