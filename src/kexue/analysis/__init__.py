"""kexue.analysis: does BatchNorm smooth the loss landscape? (article 6)

First-order smoothness along the gradient (Santurkar et al.: loss range, gradient
predictiveness, effective beta-smoothness) and curvature (PyHessian's camp: top Hessian
eigenvalue, Hutchinson trace), measured on the same model, loss and minibatch::

    from kexue.analysis import step_probe, hessian_top_eigenvalue, hessian_trace

    probe = step_probe(model, loss_fn, batch, step_sizes=[0.05, 0.1, 0.2])
    probe.loss_range, probe.grad_changes, probe.beta
    hessian_top_eigenvalue(model, loss_fn, batch, iters=100, tol=1e-4).eigenvalue
    hessian_trace(model, loss_fn, batch, samples=100)          # value, stderr

Every probe uses the model in its current mode (train: BatchNorm with batch statistics) and
leaves it bit-identical: parameters, buffers (running statistics), ``.grad``, RNG state, modes.
The BN on/off training harness lives in :mod:`kexue.analysis.recipe`.
"""

from kexue.analysis._objective import preserved_model_state
from kexue.analysis.curvature import (
    HessianEigen,
    HessianTrace,
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_vector_product,
)
from kexue.analysis.landscape import StepProbe, step_probe

__all__ = [
    "HessianEigen",
    "HessianTrace",
    "StepProbe",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hessian_vector_product",
    "preserved_model_state",
    "step_probe",
]
