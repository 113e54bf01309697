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
import copy
import functools

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
    the forward pass and sums the bias gradient in the backward pass. z holds the output error g
    once it is known (GradStep), so that one instance's x and z stay in the core's cache."""

    def __init__(self, instances, m, n, batch, device):
        new = lambda *shape: torch.empty(*shape, device=device)
        self.x, self.z = new(instances, n, batch), new(instances, n, batch)
        self.h, self.dh = new(instances, m + 1, batch), new(instances, m, batch)
        self.h[:, m] = 1.0
        self.Wb, self.gh = new(instances, n, m + 1), new(instances, n, m + 1)
        self.Wc, self.dec, self.dWT = new(instances, m, n), new(instances, n, m), new(instances, n, m)

    def part(self, k):
        """The buffers of the first k instances (for a smaller last chunk)."""
        part = copy.copy(self)
        part.__dict__.update({name: t[:k] for name, t in self.__dict__.items()})
        return part


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


class GradStep:
    """The same loss, differentiated by hand, for fixed tensors: inputs given negated in xn (I, n,
    B) (xn = -x, which saves a pass in sampling), refilled before each call, and the gradients
    written into dW (I, m, n) and db (I, n, 1); importance (I, n, 1) and n (I,) score the loss;
    ws holds exactly I instances' buffers (Workspace.part). The tensors may be a slice of a
    family's instances. Every view a step uses is made once, here: making them each step was a
    quarter of a step of two n = 100 models, and the loss's views and sums in torch, 40 us a step
    of `dynamics` (which asks for the loss every step).

    With e = x' - x, g = e [z > 0] and coef = 2 I / (B n) per feature:
      dL/db = coef * sum_batch g,   dL/dW^T = coef (g h^T) + x dh^T  with  dh = (W coef) g,
    where with a hidden ReLU dh is masked where h = 0. coef multiplies the small (m x n) factors,
    never the (n x batch) ones. The weight gradients are worked out transposed, (n x m) from an
    (n x batch) times (batch x m) product, which MKL runs 1.25x faster than the (m x n) one, and
    copied into dW. The output error overwrites z in the pass that computes the loss: one
    instance's x and z (0.8 MB each at n = 200) then stay in the core's cache between passes.
    """

    def __init__(self, W, b, xn, coef, ws, dW, db, importance, n, relu=True, hidden_relu=False):
        m = W.shape[1]
        self.W, self.b, self.xn, self.coef, self.dW, self.db = W, b, xn, coef, dW, db
        self.importance, self.n = importance, n
        self.relu, self.hidden_relu, self.ws = relu, hidden_relu, ws
        self.c = coef.transpose(1, 2)  # (I, 1, n)
        self.hn, self.h_m, self.hnT = ws.h, ws.h[:, :m], ws.h.transpose(1, 2)  # -h, ones row
        self.WT, self.Wb_W, self.Wb_b = W.transpose(1, 2), ws.Wb[:, :, :m], ws.Wb[:, :, m:]
        self.gh_m, self.g_sum = ws.gh[:, :, :m], ws.gh[:, :, m:]
        self.dhT, self.dW_T = ws.dh.transpose(1, 2), ws.dWT.transpose(1, 2)
        self.compiled = None
        if ws.z.is_cpu:  # the output error and the loss, compiled into one pass
            from precompute import kernels  # numba: imported only where a step runs
            error = functools.partial(kernels.output_error, ws.z.numpy(), xn.numpy(), relu)
            self.value = torch.empty(W.shape[0], dtype=xn.dtype)  # the loss, the kernel's output
            scored = (importance[:, :, 0].numpy(), (xn.shape[2] * n.double()).numpy(),
                      self.value.numpy())
            self.compiled = (functools.partial(error, None, None, None),
                             functools.partial(error, *scored))  # without and with the loss

    def output_error(self, want_loss):
        """z becomes g = e where the output ReLU is on, else 0; returns the per-instance loss if
        want_loss (on the CPU in a buffer that the next call overwrites)."""
        ws, xn = self.ws, self.xn
        if self.compiled:
            self.compiled[want_loss]()
            return self.value if want_loss else None
        value = None
        if want_loss:  # from z before it is overwritten, so that a NaN in W shows in the loss
            e = (ws.z.clamp_min(0) if self.relu else ws.z) + xn
            value = (e * e * self.importance).sum(dim=(1, 2)) / (xn.shape[2] * self.n)
        off = ws.z <= 0 if self.relu else None
        ws.z.add_(xn)
        if off is not None:
            ws.z.masked_fill_(off, 0.0)
        return value

    def __call__(self, want_loss=False):
        """Writes dW and db; returns the per-instance loss if want_loss (output_error's)."""
        ws, xn = self.ws, self.xn
        torch.bmm(self.W, xn, out=self.h_m)  # -h
        if self.hidden_relu:  # -ReLU(W x) = min(-W x, 0)
            self.h_m.clamp_max_(0)
        torch.neg(self.WT, out=self.Wb_W)
        self.Wb_b.copy_(self.b)
        torch.bmm(ws.Wb, self.hn, out=ws.z)  # W^T h + b
        value = self.output_error(want_loss)
        g = ws.z
        torch.bmm(g, self.hnT, out=ws.gh)  # [-g h^T, sum_batch g]
        torch.mul(self.g_sum, self.coef, out=self.db)
        torch.bmm(torch.mul(self.W, self.c, out=ws.Wc), g, out=ws.dh)
        if self.hidden_relu:
            ws.dh.mul_(self.h_m < 0)
        # dW^T = -(-g h^T coef) - xn dh^T
        torch.baddbmm(torch.mul(self.gh_m, self.coef, out=ws.dec), xn, self.dhT, beta=-1,
                      alpha=-1, out=ws.dWT)
        self.dW.copy_(self.dW_T)
        return value
