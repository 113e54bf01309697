"""A toy-model trainer written the way the paper's notebook is, from the paper's description
(Elhage et al. 2022, "Toy Models of Superposition", and its notebook's recipe): the baseline that
benchmarks/bench_training.py measures the project's trainer against.

One plain model with an instance axis (no nn.Module, the same computation): W (I, m, n) xavier-
normal, b (I, n) zero; each step draws a fresh batch x (batch, I, n) with torch.rand and
torch.where, computes x' = ReLU(W^T W x + b) with einsum, the importance-weighted squared error
averaged over batch and features and summed over instances, and takes an autograd AdamW step
(lr 1e-3, PyTorch's default weight decay 0.01), batch 1024.
"""
import torch


class ReferenceModel:
    def __init__(self, importance, density, m, relu=True, hidden_relu=False, lr=1e-3, seed=0):
        """importance, density: (I, n) per-instance, per-feature tensors."""
        self.importance, self.density = importance, density
        self.relu, self.hidden_relu = relu, hidden_relu
        instances, n = importance.shape
        gen = torch.Generator().manual_seed(seed)
        self.W = torch.empty(instances, m, n)
        for W in self.W:
            torch.nn.init.xavier_normal_(W, generator=gen)
        self.W.requires_grad_()
        self.b = torch.zeros(instances, n, requires_grad=True)
        self.opt = torch.optim.AdamW([self.W, self.b], lr=lr)

    def batch(self, size):
        shape = (size, *self.importance.shape)
        return torch.where(torch.rand(shape) <= self.density, torch.rand(shape), 0.0)

    def forward(self, x):
        h = torch.einsum("bin,imn->bim", x, self.W)
        h = torch.relu(h) if self.hidden_relu else h  # the privileged-basis variant
        out = torch.einsum("bim,imn->bin", h, self.W) + self.b
        return torch.relu(out) if self.relu else out

    def step(self, batch_size=1024):
        x = self.batch(batch_size)
        loss = (self.importance * (x - self.forward(x)) ** 2).mean(dim=(0, 2)).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


def for_family(family, instances=None):
    """Reference models for a grid family's instances (all, or the given indices): one model per
    feature count n, since one instance axis holds models of one size."""
    chosen = [family.instances[k] for k in (instances if instances is not None
                                            else range(len(family.instances)))]
    out = []
    for n in sorted({i.n for i in chosen}):
        group = [i for i in chosen if i.n == n]
        importance = torch.tensor([i.importance for i in group])
        density = torch.tensor([[1.0 - i.sparsity] for i in group]).expand(-1, n)
        out.append(ReferenceModel(importance, density, family.m, family.activation == "relu",
                                  family.hidden_activation == "relu"))
    return out
