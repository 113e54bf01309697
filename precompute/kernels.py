"""Compiled loops (numba) for the training steps of small models: the toy model's loss and
gradient (toy_model.GradStep) and the absolute-value model's (abs_model.loss_and_grad), one
loop per instance over blocks of batch columns; the batched-product step's elementwise chains;
the uniforms of a draw and the AdamW update.

A small model (m x n of a few hundred weights) is too small for a batched matrix product to pay:
torch's bmm spends most of its time on per-matrix overhead, and each of the step's dozen passes
goes out to memory. Here every quantity of a block of columns (x, h, z, the error, dL/dh) stays
in the first-level cache, and the whole step is one call. Measured per step on one thread
against the bmm step (benchmarks/bench_training.py --paths): phase (2560 models of 2 features)
7.5x, packing2d 5.0x, correlated 4.7x, local_bases 3.1x, anticorrelated 2.7x, privileged 2.6x,
superposition 1.7x, linear 1.6x; at m x n = 1000 (dynamics: n = 100, m = 10) the bmm step is
1.6x faster, so it stays there (train.FUSED_MAX).

The inputs come as the uniforms of one draw per seed, its batch columns sorted (sort_columns) so
that an instance of density p needs only the prefix of columns where some feature may be active;
the all-zero columns have h = 0 and an output of ReLU(b), and are added in closed form. The float
sums run in another order than the bmm path's (fastmath reassociation, but no assumption that
values are finite, so that a diverged model still shows NaN in its loss).
"""
import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

# Columns per block: 256 keeps a block's x, h, z and dL/dh in the first-level cache for the
# models this runs (n x 256 floats: 20 KB at n = 20) and amortises the dot products' horizontal
# sums (measured 1.3-1.5x over 64-column blocks, same as whole-batch blocks on the larger models).
BLOCK = 256

FASTMATH = {"reassoc", "contract"}
# float32 constants: a float literal is float64 in numba, which would widen a loop to float64 and
# halve its vector width
ZERO, ONE, TWO = np.float32(0.0), np.float32(1.0), np.float32(2.0)
INDEPENDENT, CORRELATED, ANTICORRELATED = 0, 1, 2  # toy_loss_and_grad's input laws


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def sort_columns(draws, a, b, levels, out, kept):
    """out[s] = draws[s] (seeds, rows, B) with its columns reordered so that, for every density
    level d (levels: the unit's distinct 1/p, ascending), the columns where some feature may be
    active at that density come first: kept[s, d] of them. A column may be active at 1/p when the
    least of its rows a..b-1 (the uniforms that decide activity) times 1/p is below 1 (the same
    float32 test as the inputs' own); a counting sort by how many levels that holds for, most
    first, each bucket in column order."""
    S, rows, B = draws.shape
    D = len(levels)
    key = np.empty(B, np.float32)
    level, perm = np.empty(B, np.int64), np.empty(B, np.int64)
    start = np.empty(D + 2, np.int64)
    for s in range(S):
        key[:] = draws[s, a]
        for j in range(a + 1, b):
            for t in range(B):
                key[t] = min(key[t], draws[s, j, t])
        start[:] = 0
        for t in range(B):
            d = 0
            while d < D and key[t] * levels[d] < 1.0:
                d += 1
            level[t] = d
            start[D - d + 1] += 1
        for d in range(1, D + 2):  # bucket q = D - level starts at start[q]
            start[d] += start[d - 1]
        for d in range(D):  # the columns whose level exceeds d, and at least one: an
            # all-zero column computed gives its closed form's values, and a NaN in W then
            # still reaches the loss
            kept[s, d] = max(start[D - d], 1)
        for t in range(B):
            q = D - level[t]
            perm[start[q]] = t
            start[q] += 1
        for j in range(rows):
            for t in range(B):
                out[s, j, t] = draws[s, j, perm[t]]


# The block loops both models' steps share. Each runs four terms of its inner sum per pass over
# a block row, so that a row is loaded and stored once per four multiply-adds instead of once per
# one (the first-level cache's bandwidth, not the multipliers, bounded the one-term loops).

@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def block_product(A, src, rows, inner, T, base, out):
    """out[k, :T] = base[k] + sum over j < inner of A[k, j] src[j, :T], for k < rows."""
    for k in range(rows):
        bk = base[k]
        for t in range(T):
            out[k, t] = bk
        j = 0
        while j + 4 <= inner:
            w0, w1, w2, w3 = A[k, j], A[k, j + 1], A[k, j + 2], A[k, j + 3]
            for t in range(T):
                out[k, t] += (w0 * src[j, t] + w1 * src[j + 1, t]) + \
                    (w2 * src[j + 2, t] + w3 * src[j + 3, t])
            j += 4
        while j < inner:
            w = A[k, j]
            for t in range(T):
                out[k, t] += w * src[j, t]
            j += 1


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def outer_accumulate(a, b, ra, rb, T, out):
    """out[k, j] += sum over t < T of a[k, t] b[j, t], for k < ra and j < rb."""
    for k in range(ra):
        j = 0
        while j + 4 <= rb:
            c0, c1, c2, c3 = ZERO, ZERO, ZERO, ZERO
            for t in range(T):
                v = a[k, t]
                c0 += v * b[j, t]
                c1 += v * b[j + 1, t]
                c2 += v * b[j + 2, t]
                c3 += v * b[j + 3, t]
            out[k, j] += c0
            out[k, j + 1] += c1
            out[k, j + 2] += c2
            out[k, j + 3] += c3
            j += 4
        while j < rb:
            c0 = ZERO
            for t in range(T):
                c0 += a[k, t] * b[j, t]
            out[k, j] += c0
            j += 1


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def relu_rows(h, rows, T):
    for k in range(rows):
        for t in range(T):
            h[k, t] = max(h[k, t], ZERO)


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def mask_rows(d, h, rows, T):
    """d = 0 where h <= 0: the hidden ReLU's gradient."""
    for k in range(rows):
        for t in range(T):
            if h[k, t] <= 0.0:
                d[k, t] = 0.0


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def toy_loss_and_grad(W, b, src, kept, seed_of, level_of, inv_p, coef, importance, n_of, relu,
                      hidden_relu, law, set_size, dW, db, loss):
    """For each instance i: dW[i] (m, n_max), db[i] (n_max,) and loss[i] of the toy model
    (toy_model.GradStep's; padding features get 0).

    W (I, m, n_max), b (I, n_max); inv_p, coef = 2 I_j / (B n), importance: (I, n_max); n_of,
    seed_of, level_of: (I,) int64. src and kept are sort_columns' output for each seed: the
    instance reads src[seed_of[i]] (rows, B) and its first kept[seed_of[i], level_of[i]] columns;
    the others have every feature zero. The rows are the input law's uniforms (config.INPUT_LAWS), as
    train.Batch and train.SetDraws draw them:
      law INDEPENDENT: r (n_max rows); x_j = r_j / p where that is below 1, else 0;
      law CORRELATED: one uniform a per set of set_size features, then the values v (n_max
        rows); x_j = v_j where a of j's set is below p, else 0;
      law ANTICORRELATED: the uniforms a, then one more uniform u per set, then the values: of
        an active set only feature floor(u set_size) is on."""
    I, m, n_max = W.shape
    B = src.shape[2]
    xb = np.empty((n_max, BLOCK), np.float32)
    hb = np.empty((m, BLOCK), np.float32)
    gb = np.empty((n_max, BLOCK), np.float32)  # z, then the error e [z > 0]
    dhb = np.empty((m, BLOCK), np.float32)
    dec = np.empty((m, n_max), np.float32)  # sum over columns of h g^T
    wc = np.empty((m, n_max), np.float32)  # W coef
    zeros = np.zeros(m, np.float32)
    gsum = np.empty(n_max, np.float32)
    lsum = np.empty(n_max, np.float32)
    for i in range(I):
        n, Wi, bi, ip = n_of[i], W[i], b[i], inv_p[i]
        rows = src[seed_of[i]]
        sets, values = n_max // set_size, src.shape[1] - n_max  # the first pick and value rows
        dW[i] = 0.0
        db[i] = 0.0
        for k in range(m):
            for j in range(n):
                wc[k, j] = Wi[k, j] * coef[i, j]
                dec[k, j] = 0.0
        gsum[:n] = 0.0
        lsum[:n] = 0.0
        columns = kept[seed_of[i], level_of[i]]
        for t0 in range(0, columns, BLOCK):
            T = min(BLOCK, columns - t0)
            for j in range(n):
                p = ip[j]
                if law == INDEPENDENT:
                    for t in range(T):
                        v = rows[j, t0 + t] * p
                        xb[j, t] = v if v < 1.0 else ZERO
                elif law == CORRELATED:
                    a, v = j // set_size, values + j
                    for t in range(T):
                        on = rows[a, t0 + t] * p < 1.0
                        xb[j, t] = rows[v, t0 + t] if on else ZERO
                else:
                    a, u, pos = j // set_size, sets + j // set_size, j % set_size
                    v = values + j
                    size = np.float32(set_size)  # a float32 product, as SetDraws.inputs's
                    for t in range(T):
                        on = rows[a, t0 + t] * p < 1.0 and \
                            min(int(rows[u, t0 + t] * size), set_size - 1) == pos
                        xb[j, t] = rows[v, t0 + t] if on else ZERO
            block_product(Wi, xb, m, n, T, zeros, hb)  # h = W x
            if hidden_relu:  # the privileged-basis variant
                relu_rows(hb, m, T)
            block_product(Wi.T, hb, n, m, T, bi, gb)  # z = W^T h + b
            for j in range(n):  # e = x' - x; g = e where the output ReLU is on
                s, ls = ZERO, ZERO
                for t in range(T):
                    z = gb[j, t]
                    # z * 0 rather than 0, so that a NaN z stays NaN in the loss
                    e = (z if (z > 0.0 or not relu) else z * ZERO) - xb[j, t]
                    ls += e * e
                    g = e if (z > 0.0 or not relu) else ZERO
                    gb[j, t] = g
                    s += g
                gsum[j] += s
                lsum[j] += ls
            outer_accumulate(hb, gb, m, n, T, dec)  # the decoder's h g^T
            block_product(wc, gb, m, n, T, zeros, dhb)  # dL/dh = (W coef) g
            if hidden_relu:
                mask_rows(dhb, hb, m, T)
            outer_accumulate(dhb, xb, m, n, T, dW[i])  # the encoder's dL/dh x^T
        zeros_out = B - columns  # all-zero columns: x = 0, h = 0, x' - x = ReLU(b)
        total = ZERO
        for j in range(n):
            out = max(bi[j], 0.0) if relu else bi[j]
            gsum[j] += zeros_out * out
            lsum[j] += zeros_out * out * out
            db[i, j] = coef[i, j] * gsum[j]
            total += importance[i, j] * lsum[j]
            for k in range(m):
                dW[i, k, j] += dec[k, j] * coef[i, j]
        loss[i] = total / (B * n)


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def abs_loss_and_grad(W1, W2, b, src, kept, seed_of, level_of, inv_p, coef, importance, n_of,
                      dW1, dW2, db, loss):
    """abs_model.loss_and_grad per instance i: dW1[i] (m, n_max), dW2[i] (n_max, m), db[i]
    (n_max,) and loss[i] of y' = ReLU(W2 ReLU(W1 x) + b) against |x|, where x_j = 2 r_j / p - 1
    where r_j / p is below 1, else 0 (r: each seed's uniforms, src and kept as toy_loss_and_grad
    reads them; an all-zero column outputs ReLU(b))."""
    I, m, n_max = W1.shape
    B = src.shape[2]
    xb = np.empty((n_max, BLOCK), np.float32)
    ab = np.empty((m, BLOCK), np.float32)  # ReLU(W1 x)
    gb = np.empty((n_max, BLOCK), np.float32)  # z, then coef e [z > 0]
    dhb = np.empty((m, BLOCK), np.float32)
    zeros = np.zeros(m, np.float32)
    gsum = np.empty(n_max, np.float32)
    lsum = np.empty(n_max, np.float32)
    for i in range(I):
        n, W1i, W2i, bi, ip = n_of[i], W1[i], W2[i], b[i], inv_p[i]
        rows = src[seed_of[i]]
        dW1[i] = 0.0
        dW2[i] = 0.0
        db[i] = 0.0
        gsum[:n] = 0.0
        lsum[:n] = 0.0
        columns = kept[seed_of[i], level_of[i]]
        for t0 in range(0, columns, BLOCK):
            T = min(BLOCK, columns - t0)
            for j in range(n):
                p = ip[j]
                for t in range(T):
                    v = rows[j, t0 + t] * p
                    xb[j, t] = TWO * v - ONE if v < 1.0 else ZERO
            block_product(W1i, xb, m, n, T, zeros, ab)
            relu_rows(ab, m, T)  # > 0 exactly where W1 x is: the hidden ReLU's mask
            block_product(W2i, ab, n, m, T, bi, gb)  # z = W2 h + b
            for j in range(n):
                cj = coef[i, j]
                s, ls = ZERO, ZERO
                for t in range(T):
                    z = gb[j, t]
                    # z * 0 rather than 0, so that a NaN z stays NaN in the loss
                    e = (z if z > 0.0 else z * ZERO) - abs(xb[j, t])
                    ls += e * e
                    g = cj * e if z > 0.0 else ZERO
                    gb[j, t] = g
                    s += g
                gsum[j] += s
                lsum[j] += ls
            outer_accumulate(gb, ab, n, m, T, dW2[i])  # dW2 = g h^T
            block_product(W2i.T, gb, m, n, T, zeros, dhb)  # dL/dh = W2^T g where W1 x > 0
            mask_rows(dhb, ab, m, T)
            outer_accumulate(dhb, xb, m, n, T, dW1[i])  # dW1 = dL/dh x^T
        zeros_out = B - columns  # all-zero columns: h = 0, y' - |x| = ReLU(b)
        total = ZERO
        for j in range(n):
            out = max(bi[j], 0.0)
            db[i, j] = gsum[j] + zeros_out * coef[i, j] * out
            total += importance[i, j] * (lsum[j] + zeros_out * out * out)
        loss[i] = total / (B * n)


# The batched-product step's (toy_model.GradStep's) two elementwise chains, each one pass
# instead of several.

@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def negated_inputs(r, inv_p, out):
    """toy_model.sample_negated_inputs: out (s, P, n, B) = -x from each seed's uniforms r (s, n, B)
    and 1/p (s, P, n)."""
    S, P, n, B = out.shape
    for s in range(S):
        for q in range(P):
            for j in range(n):
                ip = inv_p[s, q, j]
                for t in range(B):
                    v = r[s, j, t] * ip
                    out[s, q, j, t] = -v if v < 1.0 else ZERO
    return out


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def output_error(z, xn, relu, importance, denominators, loss):
    """z (I, n, B) becomes g = z + xn (x' - x where the output is z) where the output ReLU is on,
    else 0, in place. Unless importance (I, n) is None, loss[i] = the sum over features j and
    columns of importance[i, j] (x' - x)^2, in float64 across rows, divided by denominators[i]
    (float64, B n_i) and rounded to loss's type; read from z before it is overwritten (x' = 0
    where z <= 0 under the ReLU, else z: a NaN in W shows in the loss, as in the torch path's
    clamp_min)."""
    I, n, B = z.shape
    for i in range(I):
        sum_i = 0.0
        for j in range(n):
            row = ZERO
            for t in range(B):
                y = z[i, j, t]
                on = y > 0.0 or not relu
                e = y + xn[i, j, t]
                z[i, j, t] = e if on else ZERO
                if importance is not None:
                    d = (ZERO if relu and y <= 0.0 else y) + xn[i, j, t]
                    row += d * d
            if importance is not None:
                sum_i += importance[i, j] * np.float64(row)
        if loss is not None:
            loss[i] = sum_i / denominators[i]


# numpy's PCG64 (PCG XSL RR 128/64): the state s advances as s <- a s + inc (mod 2^128), and each
# advance gives one 64-bit output from the new state; two float32 uniforms per output.
PCG64_MULT = 0x2360ED051FC65DA44385DF649FCCF645
# Copies of the generator, each a step ahead of the last, advanced 8 at a time in the 64-bit
# lanes of a vector: measured 0.87 ns per output at 32 (0.99 at 16, 2.0 at 8, whose one chain of
# multiplications waits on itself; 0.90 at 64), against 2.0 for 8 copies in scalar registers.
# Compiled for AVX2 alone (NUMBA_CPU_FEATURES without avx512f) it ran 2.1 ns, as scalar copies.
PCG64_LANES = 32
U64 = np.uint64
_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V8 = ir.VectorType(_I64, 8)


@intrinsic
def _umulhi(typingctx, a, b):
    """The high 64 bits of the 128-bit product of two uint64 (one x86 mulx)."""
    def codegen(context, builder, signature, args):
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))
    return types.uint64(types.uint64, types.uint64), codegen


def _splat(vector_type, value):
    """A constant vector with every element `value`."""
    return ir.Constant(vector_type, [ir.Constant(vector_type.element, value)] * vector_type.count)


@intrinsic
def _pcg64_lanes_step(typingctx, lanes, a_hi, a_lo, c_hi, c_lo, out, k):
    """For the PCG64_LANES generators in lanes (uint64 (2, L): states' high halves, low halves):
    their outputs' floats into out[k:k + 2 L], in order, then each state advanced by (a, c), in
    vectors of 8 lanes. LLVM vectorises none of this from scalar code, so it is written here as
    vector instructions: the 128-bit product's 64 x 64 -> 128 part from 32-bit halves (AVX-512 has
    no wider unsigned multiply), the output's rotation as a variable rotate. Both arrays must be
    C-contiguous and of exactly these types: the vectors are loaded and stored whole."""
    if not (isinstance(lanes, types.Array) and lanes.dtype == types.uint64 and lanes.ndim == 2
            and isinstance(out, types.Array) and out.dtype == types.float32 and out.ndim == 1
            and lanes.layout == out.layout == "C" and isinstance(k, types.Integer)):
        return None  # a typing error: the vectors assume exactly these arrays
    v16i, v16f = ir.VectorType(_I32, 16), ir.VectorType(ir.FloatType(), 16)

    def codegen(context, builder, signature, args):
        b = builder
        state = context.make_array(signature.args[0])(context, b, args[0])
        floats = context.make_array(signature.args[5])(context, b, args[5])
        undef, zeros = ir.Constant(_V8, ir.Undefined), _splat(ir.VectorType(_I32, 8), 0)
        A_hi, A_lo, C_hi, C_lo = (b.shuffle_vector(b.insert_element(undef, v, zeros.constant[0]),
                                                   undef, zeros) for v in args[1:5])
        low32, s32 = _splat(_V8, 0xFFFFFFFF), _splat(_V8, 32)
        a0, a1 = b.and_(A_lo, low32), b.lshr(A_lo, s32)
        width = b.extract_value(state.shape, 1)
        for g in range(0, PCG64_LANES, 8):
            at_hi = b.bitcast(b.gep(state.data, [ir.Constant(_I64, g)]), _V8.as_pointer())
            at_lo = b.bitcast(b.gep(state.data, [b.add(width, ir.Constant(_I64, g))]),
                              _V8.as_pointer())
            hi, lo = b.load(at_hi, align=8), b.load(at_lo, align=8)
            # the output: hi ^ lo rotated right by hi's top 6 bits; its 32-bit halves, low first,
            # each numpy's next_float (top 24 bits / 2^24)
            x, rot = b.xor(hi, lo), b.lshr(hi, _splat(_V8, 58))
            left = b.and_(b.sub(_splat(_V8, 64), rot), _splat(_V8, 63))
            v = b.or_(b.lshr(x, rot), b.shl(x, left))
            halves = b.lshr(b.bitcast(v, v16i), _splat(v16i, 8))
            f = b.fmul(b.uitofp(halves, v16f), _splat(v16f, 1.0 / 16777216.0))
            to = b.gep(floats.data, [b.add(args[6], ir.Constant(_I64, 2 * g))])
            b.store(f, b.bitcast(to, v16f.as_pointer()), align=4)
            # the advance: lo a_lo in full from four 32 x 32 -> 64 products, the rest mod 2^64
            l0, l1 = b.and_(lo, low32), b.lshr(lo, s32)
            p00, p01, p10, p11 = b.mul(l0, a0), b.mul(l0, a1), b.mul(l1, a0), b.mul(l1, a1)
            mid = b.add(b.add(b.lshr(p00, s32), b.and_(p01, low32)), b.and_(p10, low32))
            prod_lo = b.or_(b.and_(p00, low32), b.shl(mid, s32))
            prod_hi = b.add(b.add(p11, b.lshr(p01, s32)),
                            b.add(b.lshr(p10, s32), b.lshr(mid, s32)))
            new_lo = b.add(prod_lo, C_lo)
            carry = b.zext(b.icmp_unsigned("<", new_lo, prod_lo), _V8)
            new_hi = b.add(b.add(prod_hi, b.mul(lo, A_hi)),
                           b.add(b.mul(hi, A_lo), b.add(C_hi, carry)))
            b.store(new_hi, at_hi, align=8)
            b.store(new_lo, at_lo, align=8)
        return context.get_dummy_value()
    return types.none(lanes, a_hi, a_lo, c_hi, c_lo, out, k), codegen


@nb.njit(inline="always")
def _pcg64_advance(hi, lo, a_hi, a_lo, c_hi, c_lo):
    """(a s + c) mod 2^128 for s, a and c given as (high, low) 64-bit halves."""
    prod_lo = lo * a_lo
    prod_hi = _umulhi(lo, a_lo) + lo * a_hi + hi * a_lo
    new_lo = prod_lo + c_lo
    return prod_hi + c_hi + (U64(1) if new_lo < prod_lo else U64(0)), new_lo


@nb.njit(inline="always")
def _pcg64_output(hi, lo):
    """The output of state (hi, lo): hi ^ lo rotated right by the state's top 6 bits."""
    x = hi ^ lo
    rot = hi >> U64(58)
    return (x >> rot) | (x << ((U64(64) - rot) & U64(63)))


@nb.njit(inline="always")
def _half_to_float(half):
    """numpy's next_float from a 32-bit half (held in a uint64): its top 24 bits / 2^24."""
    return np.float32(half >> U64(8)) * np.float32(1.0 / 16777216.0)


@nb.njit(inline="always")
def _two_floats(out, k, v):
    """numpy's next_float twice from one output: the low 32-bit half first."""
    out[k] = _half_to_float(v & U64(0xFFFFFFFF))
    out[k + 1] = _half_to_float(v >> U64(32))


@nb.njit(cache=True, nogil=True)
def pcg64_uniforms(words, consts, out):
    """out (1-D float32) = the next uniforms of numpy's Generator(PCG64).random(dtype=float32),
    the same numbers, for the generator in words (uint64: state high and low, inc high and low,
    whether a spare 32-bit half is held, the spare), which it advances. consts (uint64): the
    multiplier a and, for PCG64_LANES steps at once, a^L and inc (a^(L-1) + ... + 1), each high
    and low. L copies of the generator, a step apart, each advancing L steps at a time, have no
    dependency between them, so they advance together in vectors (_pcg64_lanes_step): numpy's
    one chain waits on each multiplication."""
    a_hi, a_lo, aL_hi, aL_lo, cL_hi, cL_lo = consts[0], consts[1], consts[2], consts[3], \
        consts[4], consts[5]
    hi, lo, c_hi, c_lo = words[0], words[1], words[2], words[3]
    N, k = out.shape[0], 0
    if words[4] != U64(0) and N > 0:  # the spare half of an earlier odd-sized draw comes first
        out[0] = _half_to_float(words[5])
        words[4], k = U64(0), 1
    L = PCG64_LANES
    pairs = (N - k) // 2
    blocks = pairs // L
    if blocks:
        lanes = np.empty((2, L), np.uint64)
        for i in range(L):  # copy i holds the state of output i
            hi, lo = _pcg64_advance(hi, lo, a_hi, a_lo, c_hi, c_lo)
            lanes[0, i], lanes[1, i] = hi, lo
        for j in range(blocks):
            hi, lo = lanes[0, L - 1], lanes[1, L - 1]  # the state of the block's last output
            _pcg64_lanes_step(lanes, aL_hi, aL_lo, cL_hi, cL_lo, out, k + 2 * L * j)
    k += 2 * L * blocks
    for _ in range(pairs - L * blocks):
        hi, lo = _pcg64_advance(hi, lo, a_hi, a_lo, c_hi, c_lo)
        _two_floats(out, k, _pcg64_output(hi, lo))
        k += 2
    if k < N:  # an odd count: one more output, its high half kept for the next draw
        hi, lo = _pcg64_advance(hi, lo, a_hi, a_lo, c_hi, c_lo)
        v = _pcg64_output(hi, lo)
        out[k] = _half_to_float(v & U64(0xFFFFFFFF))
        words[4], words[5] = U64(1), v >> U64(32)
    words[0], words[1] = hi, lo


@nb.njit(cache=True, nogil=True)
def adamw(p, g, m, v, lr, weight_decay, beta1, beta2, eps, step):
    """One step of torch.optim.AdamW on flat float32 arrays, in place: parameters p, gradient g,
    moments m and v, at 1-based step number `step`. The scalars are worked out in float64, then
    applied in float32 in torch's order of operations (no fastmath: each product is rounded as
    torch rounds it)."""
    step_size = np.float32(-lr / (1.0 - beta1 ** step))
    root = np.float32(np.sqrt(1.0 - beta2 ** step))
    decay, b2, e = np.float32(1.0 - lr * weight_decay), np.float32(beta2), np.float32(eps)
    # 1 - beta worked out in float64, then rounded: 1 - 0.999 worked in float32 is 1.3e-5 off
    w1, w2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    for i in range(p.shape[0]):
        gi = g[i]
        m[i] = m[i] + w1 * (gi - m[i])
        v[i] = v[i] * b2 + (w2 * gi) * gi
        p[i] = p[i] * decay + step_size * (m[i] / (np.sqrt(v[i]) / root + e))


# The evaluation's (metrics.evaluate's) passes over its (n x samples) inputs and outputs.

@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def inputs_given_first(r, inv_p, first, out):
    """x (n, B) of toy_model.sample_inputs_given_any from uniforms r (n, B), 1/p per feature
    (n,) and each column's first active feature (B,): 0 before it, r there, and the
    unconditional law (r / p where that is below 1, else 0) after it."""
    n, B = out.shape
    for j in range(n):
        p = inv_p[j]
        for t in range(B):
            v = r[j, t] * p
            after = v if v < 1.0 else ZERO
            out[j, t] = ZERO if j < first[t] else (r[j, t] if j == first[t] else after)


@nb.njit(fastmath=FASTMATH, cache=True, nogil=True)
def weighted_sq_error(z, x, importance, relu, out):
    """out[i] = sum over features j and columns of importance[i, j] (x - x')^2, where x' = ReLU(z)
    (or z): z (I, n, B), x (I, n, B) or (1, n, B) shared by every instance; float64 across rows."""
    I, n, B = z.shape
    for i in range(I):
        xi = x[0] if x.shape[0] == 1 else x[i]
        total = 0.0
        for j in range(n):
            row = np.float32(0.0)
            for t in range(B):
                y = z[i, j, t]
                e = (y if (y > 0.0 or not relu) else y * ZERO) - xi[j, t]
                row += e * e
            total += importance[i, j] * np.float64(row)
        out[i] = total
