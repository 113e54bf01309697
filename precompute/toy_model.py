"""The toy model of Elhage et al. 2022, batched over instances.

    h  = W x                      W: m x n, x in R^n
    x' = ReLU(W^T h + b)          (or without the ReLU: the linear variant)

The hidden layer is linear, so its basis is not privileged: O W for any orthogonal O is the same
model. The paper's "Superposition in a Privileged Basis" puts a ReLU there, h = ReLU(W x), which
makes the neurons meaningful; `hidden_relu` selects it.
    L  = mean over batch and features of  I_i (x_i - x'_i)^2

Every tensor carries a leading instance axis and is feature-major: x is (instances, n, batch),
so that per-feature quantities (importance, 1/p, b) broadcast along the contiguous batch axis,
which is several times faster on the CPU than the batch-major layout.

Inputs: x_i = 0 with probability S, else uniform on [0, 1]. One uniform r per entry suffices:
with p = 1 - S, x = r / p where r < p, else 0; r / p is then uniform on [0, 1).
"""
import torch
import torch.nn.functional as F

PAD_INV_P = 1e30  # 1/p for padding features: r / p >= 1 always, so they are never active


def sample_inputs(r, inv_p, out=None):
    """x from uniforms r and per-feature 1/p (broadcast against each other), zero where r >= p."""
    u = torch.mul(r, -inv_p, out=out)  # -r/p; threshold_ keeps values above -1, zeroes the rest
    return F.threshold_(u, -1.0, 0.0).neg_()


class Workspace:
    """Preallocated buffers for one family's step: fresh multi-MB tensors every step would be
    mmap'd and page-faulted anew by the allocator, which costs a third of the step time."""

    def __init__(self, instances, m, n, batch, device):
        new = lambda *shape: torch.empty(*shape, device=device)
        self.x, self.z, self.g = (new(instances, n, batch) for _ in range(3))
        self.h, self.dh = new(instances, m, batch), new(instances, m, batch)


def hidden(W, x, hidden_relu=False):
    """The hidden activations h (I, m, B)."""
    h = torch.bmm(W, x)
    return torch.relu(h) if hidden_relu else h


def reconstruct(W, b, x, relu=True, hidden_relu=False):
    """x' for x of shape (I, n, B), W (I, m, n), b (I, n, 1): the reference forward pass."""
    z = torch.baddbmm(b, W.transpose(1, 2), hidden(W, x, hidden_relu))
    return torch.relu(z) if relu else z


def loss(W, b, x, importance, n, relu=True, hidden_relu=False):
    """Per-instance loss (I,): importance-weighted squared error, mean over batch and features.
    `n` (I,) is each instance's own feature count, so zero-padded features do not dilute it."""
    err = importance * (x - reconstruct(W, b, x, relu, hidden_relu)) ** 2
    return err.sum(dim=(1, 2)) / (x.shape[2] * n)


def loss_and_grad(W, b, x, coef, ws, relu=True, want_loss=False, importance=None, n=None,
                  hidden_relu=False):
    """The same loss, differentiated by hand, writing W.grad and b.grad in place.

    With g = dL/dz = coef * (x' - x) * [z > 0] and coef = 2 I / (B n):
      dL/db = sum_batch g,   dL/dW = h g^T (decoder use)  +  (W g) x^T (encoder use),
    where with a hidden ReLU the encoder term is masked where h = 0: ((W g) * [h > 0]) x^T.
    Fusing this saves about half the time of autograd, whose broadcast multiplies dominate.
    Returns the per-instance loss when want_loss (it costs two extra passes).
    """
    torch.bmm(W, x, out=ws.h)
    if hidden_relu:
        ws.h.clamp_min_(0)
    z = torch.baddbmm(b, W.transpose(1, 2), ws.h, out=ws.z)
    if relu:
        z.clamp_min_(0)
    g = torch.sub(z, x, out=ws.g)  # x' - x
    value = (g * g * importance).sum(dim=(1, 2)) / (x.shape[2] * n) if want_loss else None
    if relu:  # no gradient where the ReLU is off (x' = 0)
        torch.ops.aten.threshold_backward.grad_input(g, z, 0.0, grad_input=g)
    g.mul_(coef)
    torch.sum(g, dim=2, keepdim=True, out=b.grad)
    torch.bmm(ws.h, g.transpose(1, 2), out=W.grad)
    dh = torch.bmm(W, g, out=ws.dh)
    if hidden_relu:
        torch.ops.aten.threshold_backward.grad_input(dh, ws.h, 0.0, grad_input=dh)
    W.grad.baddbmm_(dh, x.transpose(1, 2))
    return value
