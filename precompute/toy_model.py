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
    return sample_negated_inputs(r, inv_p, out).neg_()


def sample_negated_inputs(r, inv_p, out=None):
    """-x, in two passes: threshold_ keeps values of -r/p above -1 and zeroes the rest."""
    return F.threshold_(torch.mul(r, -inv_p, out=out), -1.0, 0.0)


def sample_inputs_given_any(r, u, inv_p, n):
    """x conditioned on at least one active feature, and P(any active) per instance, from
    uniforms r (.., n_max, B) and u (.., 1, B) shared by all instances; inv_p (I, n_max, 1) is the
    same 1/p for an instance's n (I,) features (1e30 on padding). The first active feature J has
    P(J <= j | any) = (1 - q^(j+1)) / (1 - q^n) with q = 1 - p, so J = floor(log(1 - u (1 - q^n)) /
    log q); it takes the value r_J, features before it are 0 and those after it follow the
    unconditional law. Sparse inputs are almost all zero, and a zero input's loss has a closed
    form, so evaluating on these inputs alone is the same expectation at a fraction of the noise."""
    q = 1.0 - 1.0 / inv_p[:, :1]  # (I, 1, 1)
    any_active = 1.0 - q ** n.view(-1, 1, 1)
    J = torch.where(q > 0, torch.floor(torch.log1p(-u * any_active) / torch.log(q)),
                    torch.zeros_like(q)).clamp(max=n.view(-1, 1, 1) - 1).long()  # (I, 1, B)
    if r.is_cpu and inv_p.shape[0] == 1 == r.shape[0]:  # one instance's (or a group's): one pass
        from precompute import kernels  # numba: imported only where an evaluation runs
        x = torch.empty(r.shape)
        kernels.inputs_given_first(r[0].numpy(), inv_p[0, :, 0].numpy(), J[0, 0].numpy(),
                                   x[0].numpy())
        return x, any_active.view(-1)
    x = sample_inputs(r, inv_p)  # the unconditional law, kept after J
    j = torch.arange(inv_p.shape[1], device=J.device).view(1, -1, 1)
    x.masked_fill_(j <= J, 0.0)
    x.scatter_(1, J, r.expand(x.shape[0], *r.shape[1:]).gather(1, J))  # x_J = r_J
    return x, any_active.view(-1)


class Workspace:
    """Preallocated buffers for a step on up to `instances` instances at once: fresh multi-MB
    tensors every step would be mmap'd and page-faulted anew by the allocator, which costs a third
    of the step time. h carries an extra row of ones so that one matrix product adds the bias in
    the forward pass and sums the bias gradient in the backward pass."""

    def __init__(self, instances, m, n, batch, device):
        new = lambda *shape: torch.empty(*shape, device=device)
        self.x, self.z, self.g = (new(instances, n, batch) for _ in range(3))
        self.h, self.dh = new(instances, m + 1, batch), new(instances, m, batch)
        self.h[:, m] = 1.0
        self.Wb, self.gWb = new(instances, n, m + 1), new(instances, m + 1, n)


def hidden(W, x, hidden_relu=False):
    """The hidden activations h (I, m, B) for x (I, n, B), or for x (1, n, B) shared by all
    instances (then one matrix product for all of them)."""
    if x.shape[0] == 1 < W.shape[0]:
        h = (W.flatten(0, 1) @ x[0]).view(W.shape[0], W.shape[1], x.shape[2])
    else:
        h = torch.bmm(W, x)
    return torch.relu(h) if hidden_relu else h


def reconstruct(W, b, x, relu=True, hidden_relu=False, h=None):
    """x' for x of shape (I, n, B), W (I, m, n), b (I, n, 1): the reference forward pass; h, the
    hidden activations, where already computed."""
    h = hidden(W, x, hidden_relu) if h is None else h
    z = torch.baddbmm(b, W.transpose(1, 2), h)
    return torch.relu(z) if relu else z


def loss(W, b, x, importance, n, relu=True, hidden_relu=False, h=None):
    """Per-instance loss (I,): importance-weighted squared error, mean over batch and features.
    `n` (I,) is each instance's own feature count, so zero-padded features do not dilute it.
    x may be (1, n, B), shared by all instances."""
    err = importance * (x - reconstruct(W, b, x, relu, hidden_relu, h)) ** 2
    return err.sum(dim=(1, 2)) / (x.shape[2] * n)


def loss_and_grad(W, b, xn, coef, ws, dW, db, relu=True, importance=None, n=None,
                  hidden_relu=False):
    """The same loss, differentiated by hand, for inputs given negated (xn = -x, which saves a
    pass in sampling), writing its gradients into dW (I, m, n) and db (I, n, 1). The arguments
    may be a slice of a family's instances (ws is then used in part).

    With e = x' - x, g = e [z > 0] and coef = 2 I / (B n) per feature:
      dL/db = coef * sum_batch g,   dL/dW = (h g^T) coef  +  (W coef) g x^T,
    where with a hidden ReLU the encoder term is masked where h = 0: (((W coef) g) [h > 0]) x^T.
    coef multiplies the small (m x n) factors, never the (n x batch) ones, and the whole step
    makes about 13 passes over (n x batch) entries, against about 40 for autograd.
    Returns the per-instance loss when importance and n are given (two extra passes).
    """
    I, m, _ = W.shape
    hn, z, g, Wb, gWb = ws.h[:I], ws.z[:I], ws.g[:I], ws.Wb[:I], ws.gWb[:I]
    c = coef.transpose(1, 2)  # (I, 1, n)
    torch.bmm(W, xn, out=hn[:, :m])  # -h
    if hidden_relu:  # -ReLU(W x) = min(-W x, 0)
        hn[:, :m].clamp_max_(0)
    Wb[:, :, :m], Wb[:, :, m:] = -W.transpose(1, 2), b
    torch.bmm(Wb, hn, out=z)  # W^T h + b
    if g.is_cpu:  # the same two operations, compiled into one pass
        from precompute import kernels  # numba: imported only where a step runs
        kernels.output_error(z.numpy(), xn.numpy(), relu, g.numpy())
    else:
        torch.add(z, xn, out=g)  # e where the ReLU is on
        if relu:  # no gradient where the ReLU is off (x' = 0)
            torch.ops.aten.threshold_backward.grad_input(g, z, 0.0, grad_input=g)
    value = None
    if importance is not None:  # from z, not g, so that a NaN in W shows in the loss
        e = (z.clamp_min(0) if relu else z) + xn
        value = (e * e * importance).sum(dim=(1, 2)) / (xn.shape[2] * n)
    torch.bmm(hn, g.transpose(1, 2), out=gWb)  # [-h g^T ; sum_batch g]
    torch.mul(gWb[:, m:].transpose(1, 2), coef, out=db)
    torch.bmm(W * c, g, out=ws.dh[:I])
    if hidden_relu:
        ws.dh[:I].mul_(hn[:, :m] < 0)
    # dW = -(-h g^T coef) - (W coef) g xn^T
    torch.baddbmm(torch.mul(gWb[:, :m], c), ws.dh[:I], xn.transpose(1, 2), beta=-1, alpha=-1,
                  out=dW)
    return value
