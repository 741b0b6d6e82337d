"""nn.Embedding(sparse=True) trains through the Trainer (grad norm and clipping of sparse grads)."""

import torch
from torch import nn

from kexue.train import TrainConfig, Trainer
from kexue.train.trainer import _clip_mixed_


class Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8, sparse=True)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(x).mean(1))


def test_clip_mixed_matches_dense_norm_and_clips():
    torch.manual_seed(0)
    model = Bag()
    x = torch.tensor([[1, 1, 3], [4, 5, 1]])  # duplicate index 1: coalescing sums it
    model(x).sum().backward()
    dense = [model.emb.weight.grad.to_dense(), model.out.weight.grad, model.out.bias.grad]
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in dense]))
    params = list(model.parameters())
    total = _clip_mixed_(params, max_norm=None)
    torch.testing.assert_close(total, expected)
    _clip_mixed_(params, max_norm=0.1 * float(expected))
    after = [model.emb.weight.grad.to_dense(), model.out.weight.grad, model.out.bias.grad]
    clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in after]))
    torch.testing.assert_close(clipped, 0.1 * expected, rtol=1e-4, atol=1e-6)


def test_trainer_accepts_sparse_embedding_gradients(tmp_path):
    torch.manual_seed(0)
    x = torch.randint(0, 50, (64, 5))
    y = (x[:, 0] % 2).long()
    model = Bag()
    opt = torch.optim.SparseAdam([model.emb.weight], lr=1e-2)
    opt2 = torch.optim.Adam(model.out.parameters(), lr=1e-2)

    class Both(torch.optim.Optimizer):  # two optimizers behind one interface
        def __init__(self) -> None:
            self.param_groups = opt.param_groups + opt2.param_groups
            self.state = {}
            self.defaults = {}

        def zero_grad(self, set_to_none: bool = True) -> None:
            opt.zero_grad(set_to_none)
            opt2.zero_grad(set_to_none)

        def step(self, closure=None):
            opt.step()
            opt2.step()

        def state_dict(self):
            return {"a": opt.state_dict(), "b": opt2.state_dict()}

        def load_state_dict(self, sd):
            opt.load_state_dict(sd["a"])
            opt2.load_state_dict(sd["b"])

    before = model.emb.weight.detach().clone()
    cfg = TrainConfig(max_steps=6, batch_size=16, log_every=3, grad_clip=1.0, seed=0)
    hist = Trainer(
        model,
        Both(),
        train_data=torch.utils.data.TensorDataset(x, y),
        loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        config=cfg,
        out_dir=tmp_path,
        progress=False,
    ).fit()
    assert hist["steps"] == 6 and hist["train"]["grad_norm"] > 0
    assert not torch.equal(before, model.emb.weight)
