r"""kexue.init: initialisation from a geometric point of view (article 7).

Su Jianlin, 《从几何视角来理解模型参数的初始化策略》 (2020-01-16) and 《n维空间下两个随机向量的夹角分布》
(2019-11-13). Random vectors in $\mathbb R^n$ are nearly orthogonal ($\mathrm{Var}\,\theta\approx
1/(n-2)$), so i.i.d. zero-mean weights of variance $1/m$ (``mode="fan_out"``) preserve
$\mathbb E\lVert Wx\rVert^2=\lVert x\rVert^2$.

* :mod:`kexue.init.schemes`: ``fans``, ``geometric_init_``, ``lecun_``, ``xavier_``, ``he_``,
  ``orthogonal_``, ``init_module_``.
* :mod:`kexue.init.geometry`: ``angle_pdf``, ``cos_angle_pdf``, ``angle_cdf``, ``angle_variance``,
  ``sample_angles``, ``orthogonality_stats``, ``singular_values``, ``norm_propagation``.
"""

from kexue.init.geometry import (
    angle_cdf,
    angle_pdf,
    angle_variance,
    cos_angle_pdf,
    norm_propagation,
    orthogonality_stats,
    sample_angles,
    singular_values,
)
from kexue.init.schemes import (
    fans,
    geometric_init_,
    he_,
    init_module_,
    lecun_,
    orthogonal_,
    xavier_,
)

__all__ = [
    "angle_cdf",
    "angle_pdf",
    "angle_variance",
    "cos_angle_pdf",
    "fans",
    "geometric_init_",
    "he_",
    "init_module_",
    "lecun_",
    "norm_propagation",
    "orthogonal_",
    "orthogonality_stats",
    "sample_angles",
    "singular_values",
    "xavier_",
]
