"""kexue.optim: Lookahead and Lazy optimizer wrappers (article 4).

Su Jianlin, 《Keras实现两个优化器：Lookahead和LazyOptimizer》 (kexue.fm, 2019-07-30).

* :class:`Lookahead` -- slow/fast weights around any optimizer (Zhang et al., NeurIPS 2019);
* :class:`Lazy` -- embedding rows without gradient are not moved (TF LazyAdam / SparseAdam
  semantics with ``moments="freeze"``, Su's with ``moments="decay"``), with a row-wise fast
  path for Adam/AdamW (:mod:`kexue.optim.rowwise`).

Both subclass ``torch.optim.Optimizer`` and share ``param_groups`` with the inner optimizer, so
they compose (``Lookahead(Lazy(Adam(...)))``) and work with LR schedulers and ``GradScaler``.
"""

from kexue.optim.lazy import Lazy
from kexue.optim.lookahead import Lookahead
from kexue.optim.rowwise import adam_rows_, touched_rows
from kexue.optim.wrapper import OptimizerWrapper

__all__ = ["Lazy", "Lookahead", "OptimizerWrapper", "adam_rows_", "touched_rows"]
