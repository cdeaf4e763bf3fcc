"""Recurrent ops: the recurrence of an RNN, GRU or LSTM layer over a whole sequence (`pick`/`stack`,
one step of a sequence and steps back into a sequence, are in `dslc/ops/sequence.py`).

A scan op takes the input projections of every step, `xp = x @ W_ih + b_ih` `[B, T, G·H]` (the layer
computes them with one matrix product for all steps), and runs the recurrence
`h_t = cell(xp_t, h_{t-1} @ W_hh + b_hh)` from the initial state (zeros when absent), in time order or,
with `reverse`, from the last step to the first. Its output holds every step's state, at the step's
position: `[B, T, H]` (RNN, GRU) or `[B, T, 2H]` (LSTM: h_t and c_t side by side). Gates follow
PyTorch's layout — GRU r, z, n with the reset gate applied after the recurrent product (ONNX
`linear_before_reset=1`); LSTM i, f, g, o — so weights copy to and from `torch.nn.GRU`/`LSTM`.

Lowering: the recurrence is unrolled into standard ONNX ops, one `Gemm` per step for the recurrent
product (two for the GRU; T must be a number). The ONNX `GRU` op is no faster (GRU, hidden 128, batch
100, 40 steps, 2 threads: 3.5–3.75 ms vs 3.35–3.45 ms unrolled; the whole text_rnn inference with it,
interleaved: as fast on 1 thread, 1.4–1.6x slower on 2) and cannot give an LSTM's cell states or a
GRU's gates, which the gradient needs.

Gradient: ONNX has none for its RNN ops, so it is built here from registered ops, with everything
that does not depend on the previous step hoisted out of the time loop: the gates are recomputed
from the output states with one matrix product for all steps (the training graph's GRU instead
outputs its gates, `gates=True`, and the gradient reads them); every element-wise derivative
factor is computed for all steps at once; the loop itself does per step only the recurrent
back-propagation (`dh_{t-1} = dh_t·∂h_t/∂h_{t-1} + dpre_t @ W_hhᵀ`), skipping the steps where the
output's gradient is known to be zero (a layer that returns the last state only); and the weight
gradient is one matrix product over all steps after it, `dW_hh = Σ_t h_{t-1}ᵀ dpre_t` (the input
projection's gradient, likewise one product, comes from `matmul`'s rule).
"""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ops.registry import Sample, op
from dslc.ops.scan import (
    Scan,
    backward_loop,
    columns,
    input_steps,
    gate,
    one_minus,
    plus,
    previous_states,
    split_gates,
    step_gradient,
    weight_grads,
)


@op("rnn_scan", activation="tanh", reverse=False, last=False)
class RnnScan(Scan):
    """h_t = act(xp_t + h_{t-1} @ w_hh + b_hh), act = tanh or relu (PyTorch `nn.RNN`); y = h for every
    step `[B, T, H]`, from `h0` (zeros when absent), backwards in time with `reverse`."""

    # samples are at most 3 steps long: float32 rounding compounds over the steps, and the generic float32
    # check (2e-6 relative to float64 semantics) is sized for one op — 4 steps exceeded it near a zero
    samples = [Sample(((2, 3, 4), (4, 4), (4,), (2, 4))), Sample(((2, 3, 3), (3, 3), (3,)), {"reverse": True}),
               Sample(((3, 3, 2), (2, 2), (2,), (3, 2)), {"activation": "relu", "reverse": True}),
               Sample(((2, 1, 3), (3, 3), (3,)), {"activation": "relu"}),
               Sample(((3, 2, 3), (3, 3), (3,), (3, 3)), {"last": True})]

    def infer(self, *types, activation, reverse, last):
        if activation not in ACTIVATIONS:
            raise OpError(f"`rnn_scan` activation must be one of {', '.join(ACTIVATIONS)}, got `{activation}`")
        return super().infer(*types, last=last)

    def lower(self, e, xp, w_hh, b_hh, *initial, activation, reverse, last):
        act = ACTIVATIONS[activation]
        cell = lambda e, a, hp, prev: [e.node(act, e.node("Add", a, hp))]  # noqa: E731
        return self.unroll(e, xp.type.shape[1], w_hh.type.shape[0], initial, reverse,
                           self.projected_step(xp, w_hh, b_hh, cell), last=last)

    def evaluate(self, xp, w_hh, b_hh, *initial, activation, reverse, last):
        act = np.tanh if activation == "tanh" else (lambda v: np.maximum(v, 0))
        return self.scan_numpy(xp, w_hh, b_hh, initial, reverse, lambda a, hp, prev: [act(a + hp)], last=last)

    def torch(self, T, xp, w_hh, b_hh, *initial, activation, reverse, last):
        act = T.tanh if activation == "tanh" else T.relu
        return self.scan_torch(T, xp, w_hh, b_hh, initial, reverse, lambda a, hp, prev: [act(a + hp)], last=last)

    def grad(self, b, g, out, xp, w_hh, b_hh, *initial, activation, reverse, last):
        g, out = self.whole_sequence(b, g, out, (xp, w_hh, b_hh, *initial),
                                     {"activation": activation, "reverse": reverse, "last": last})
        # dpre_t = dh_t · act'(pre_t), with act' read off the output: 1 - h² (tanh) or h > 0 (relu)
        if activation == "tanh":
            slope = one_minus(b, b.mul(out, out))
        else:
            slope = b.cast(b.greater(out, b.scalar_like(0.0, out)), to=out.type.dtype)

        def step(t, carry):
            dpre = b.mul(plus(b, step_gradient(b, g, t, carry is None), carry), b.pick(slope, axis=1, index=t))
            return dpre, b.gemm(dpre, w_hh, trans_b=True)

        h0 = initial[0] if initial else None
        dpre, dh0 = backward_loop(b, out.type.shape[1], reverse, step)
        dw, db = weight_grads(b, previous_states(b, out, h0, reverse), dpre)
        return [dpre, dw, db] + ([dh0] if initial else [])


ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu"}


@op("gru_scan", reverse=False, gates=False, last=False)
class GruScan(Scan):
    """PyTorch's GRU (gates r, z, n): r = σ(xr + hr), z = σ(xz + hz), n = tanh(xn + r·hn),
    h_t = (1 - z)·n + z·h_{t-1}, where [xr, xz, xn] = xp_t and [hr, hz, hn] = h_{t-1} @ w_hh + b_hh
    (the reset gate applies after the product: ONNX `linear_before_reset=1`); y = h for every step
    `[B, T, H]`, or with `gates` the sequences of h, r, z, n and hn `[B, 5, T, H]`: the training graph's
    layer asks for them so that the gradient reads the gates the forward computed instead of computing
    them again (the recurrent product of all steps, hidden 128, sequence 40, batch 100: 393 MFLOP)."""

    gates = 3
    samples = [Sample(((2, 3, 6), (2, 6), (6,), (2, 2))), Sample(((2, 3, 9), (3, 9), (9,)), {"reverse": True}),
               Sample(((3, 2, 6), (2, 6), (6,), (3, 2)), {"reverse": True}), Sample(((2, 1, 6), (2, 6), (6,))),
               Sample(((2, 3, 6), (2, 6), (6,), (2, 2)), {"gates": True}),
               Sample(((3, 2, 9), (3, 9), (9,)), {"reverse": True, "gates": True}),
               Sample(((2, 3, 6), (2, 6), (6,)), {"reverse": True, "last": True})]

    def infer(self, *types, reverse, gates, last):
        if gates and last:
            raise OpError("`gru_scan` gives the gates of every step or the last state, not both")
        out = super().infer(*types, last=last)
        if not gates:
            return out
        batch, steps, units = out.shape
        return out.with_shape((batch, 5, steps, units))

    def lower(self, e, xp, w_hh, b_hh, *initial, reverse, gates, last):
        # two recurrent products per step, h @ w_rz + (xrz_t + b_rz) and h @ w_n + b_n: the r and z
        # pre-activations come out of a Gemm whose addend holds the input projections, hn out of the
        # other, with no per-step additions or slices of [B, 3H]
        units = w_hh.type.shape[0]
        x_rz = input_steps(e, xp, 0, 2 * units, plus=columns(e, b_hh, 0, 2 * units))
        x_n = input_steps(e, xp, 2 * units, 3 * units)
        w_rz, w_n = columns(e, w_hh, 0, 2 * units), columns(e, w_hh, 2 * units, 3 * units)
        b_n = columns(e, b_hh, 2 * units, 3 * units)

        def step(e, t, prev):
            a_rz, a_n = x_rz(t), x_n(t)
            # h_{-1} = 0: the first step's products are the biases alone
            rz = e.node("Sigmoid", a_rz if prev is None else e.node("Gemm", prev[0], w_rz, a_rz))
            hn = b_n if prev is None else e.node("Gemm", prev[0], w_n, b_n)
            r, z = gate(e, rz, 0, units), gate(e, rz, 1, units)
            n = e.node("Tanh", e.node("Add", a_n, e.node("Mul", r, hn)))
            if prev is None:
                h = e.node("Sub", n, e.node("Mul", z, n))
            else:
                h = e.node("Add", n, e.node("Mul", z, e.node("Sub", prev[0], n)))
            return [h, r, z, n, hn if prev is not None else e.node("Expand", hn, e.node("Shape", h))] if gates else [h]

        return self.unroll(e, xp.type.shape[1], units, initial, reverse, step, by_kind=gates, last=last)

    def evaluate(self, xp, w_hh, b_hh, *initial, reverse, gates, last):
        units = w_hh.shape[0]

        def cell(a, hp, prev):
            rz = 1.0 / (1.0 + np.exp(-(a[:, :2 * units] + hp[:, :2 * units])))
            r, z = rz[:, :units], rz[:, units:]
            n = np.tanh(a[:, 2 * units:] + r * hp[:, 2 * units:])
            h = n - z * n if prev is None else n + z * (prev[0] - n)
            return [h, r, z, n, hp[:, 2 * units:]] if gates else [h]

        return self.scan_numpy(xp, w_hh, b_hh, initial, reverse, cell, by_kind=gates, last=last)

    def torch(self, T, xp, w_hh, b_hh, *initial, reverse, gates, last):
        units = w_hh.shape[0]

        def cell(a, hp, prev):
            r, z = T.sigmoid(a[:, :2 * units] + hp[:, :2 * units]).chunk(2, dim=1)
            n = T.tanh(a[:, 2 * units:] + r * hp[:, 2 * units:])
            h = n - z * n if prev is None else n + z * (prev[0] - n)
            return [h, r, z, n, hp[:, 2 * units:]] if gates else [h]

        return self.scan_torch(T, xp, w_hh, b_hh, initial, reverse, cell, by_kind=gates, last=last)

    def grad(self, b, g, out, xp, w_hh, b_hh, *initial, reverse, gates, last):
        g, out = self.whole_sequence(b, g, out, (xp, w_hh, b_hh, *initial),
                                     {"reverse": reverse, "gates": gates, "last": last})
        units = w_hh.type.shape[0]
        h0 = initial[0] if initial else None
        if gates:
            h_seq, r, z, n, hn = (b.pick(out, axis=1, index=k) for k in range(5))
            g, g_gates = _state_and_gate_gradients(b, g)
        else:
            h_seq, g_gates = out, None
        prev = previous_states(b, h_seq, h0, reverse)
        if not gates:
            hp = b.add(b.matmul(prev, w_hh), b_hh)
            rz = b.sigmoid(b.add(b.slice(xp, axis=2, start=0, end=2 * units), b.slice(hp, axis=2, start=0, end=2 * units)))
            r, z = split_gates(b, rz, 2)
            hn = b.slice(hp, axis=2, start=2 * units, end=3 * units)
            n = b.tanh(b.add(b.slice(xp, axis=2, start=2 * units, end=3 * units), b.mul(r, hn)))
        # with dh the state's gradient: d(xn) = dh·(1-z)(1-n²), d(xz) = dh·(h_{t-1} - n)·z(1-z),
        # d(xr) = d(xn)·hn·r(1-r); the recurrent product sees the same, but r·d(xn) for hn
        dn_dpre = one_minus(b, b.mul(n, n))
        dn = b.mul(one_minus(b, z), dn_dpre)
        dz = b.mul(b.sub(prev, n), b.mul(z, one_minus(b, z)))
        dr_dpre = b.mul(r, one_minus(b, r))
        dr = b.mul(dn, b.mul(hn, dr_dpre))
        # [B, T, 3, H]: a step's three factors multiply its dh [B, 1, H] by broadcasting, no copies of dh
        to_h = b.stack(dr, dz, b.mul(dn, r), axis=2)
        # gradients arriving at the gates themselves enter each step's pre-activations, outside the loop
        direct = None
        if g_gates is not None:
            g_r, g_z, g_n, g_hn = g_gates
            e_n = b.mul(g_n, dn_dpre)
            direct = (b.mul(b.add(b.mul(e_n, hn), g_r), dr_dpre), b.mul(g_z, b.mul(z, one_minus(b, z))),
                      e_n, b.add(b.mul(e_n, r), g_hn))
            direct_h = b.stack(direct[0], direct[1], direct[3], axis=2)

        def step(t, carry):
            dh = plus(b, step_gradient(b, g, t, carry is None), carry)
            dhp = b.mul(b.unsqueeze(dh, axes=(1,)), b.pick(to_h, axis=1, index=t))
            if direct is not None:
                dhp = b.add(dhp, b.pick(direct_h, axis=1, index=t))
            dhp = b.reshape(dhp, shape=(0, 3 * units))
            return (dh, dhp), b.add(b.mul(dh, b.pick(z, axis=1, index=t)), b.gemm(dhp, w_hh, trans_b=True))

        (dh, dhp), dh0 = backward_loop(b, xp.type.shape[1], reverse, step)
        dw, db = weight_grads(b, prev, dhp)
        dxn = b.mul(dh, dn) if direct is None else b.add(b.mul(dh, dn), direct[2])
        dxp = b.concat(b.slice(dhp, axis=2, start=0, end=2 * units), dxn, axis=2)
        return [dxp, dw, db] + ([dh0] if initial else [])


def _state_and_gate_gradients(b, g):
    """The gradient of `gru_scan`'s h, r, z, n, hn `[B, 5, T, H]` split into h's and the gates' (None when
    they are known to be zero: the layer reads only h, so the gates' part is the zero padding of a
    `pick`'s gradient)."""
    if g.op == "pad" and g.attrs["axis"] in (1, -3) and g.attrs["before"] == 0 and g.attrs["after"] == 4:
        inner = g.inputs[0]
        return (inner.inputs[0] if inner.op == "unsqueeze" and tuple(inner.attrs["axes"]) == (1,)
                else b.pick(inner, axis=1, index=0)), None
    return b.pick(g, axis=1, index=0), tuple(b.pick(g, axis=1, index=k) for k in range(1, 5))


@op("lstm_scan", reverse=False, last=False)
class LstmScan(Scan):
    """PyTorch's LSTM (gates i, f, g, o): [i, f, g, o] = xp_t + h_{t-1} @ w_hh + b_hh through σ, σ, tanh, σ;
    c_t = f·c_{t-1} + i·g, h_t = o·tanh(c_t); y = [h_t, c_t] for every step `[B, T, 2H]`, from `h0`, `c0`
    (both zeros when absent)."""

    gates = 4
    states = 2
    width = 2
    samples = [Sample(((2, 3, 8), (2, 8), (8,), (2, 2), (2, 2))),
               Sample(((2, 3, 12), (3, 12), (12,)), {"reverse": True}),
               Sample(((3, 2, 8), (2, 8), (8,), (3, 2), (3, 2)), {"reverse": True}), Sample(((2, 1, 8), (2, 8), (8,))),
               Sample(((2, 3, 8), (2, 8), (8,)), {"last": True})]

    def infer(self, *types, reverse, last):
        return super().infer(*types, last=last)

    def lower(self, e, xp, w_hh, b_hh, *initial, reverse, last):
        units = w_hh.type.shape[0]

        def cell(e, a, hp, prev):
            pre = e.node("Add", a, hp)
            sig = e.node("Sigmoid", pre)  # the g columns are wasted; one kernel beats three slices first
            i, f, o = gate(e, sig, 0, units), gate(e, sig, 1, units), gate(e, sig, 3, units)
            ig = e.node("Mul", i, e.node("Tanh", gate(e, pre, 2, units)))
            c = ig if prev is None else e.node("Add", e.node("Mul", f, prev[1]), ig)
            return [e.node("Mul", o, e.node("Tanh", c)), c]

        return self.unroll(e, xp.type.shape[1], units, initial, reverse, self.projected_step(xp, w_hh, b_hh, cell),
                           last=last)

    def evaluate(self, xp, w_hh, b_hh, *initial, reverse, last):
        units = w_hh.shape[0]

        def cell(a, hp, prev):
            pre = a + hp
            sig = 1.0 / (1.0 + np.exp(-pre))
            i, f, o = sig[:, :units], sig[:, units:2 * units], sig[:, 3 * units:]
            ig = i * np.tanh(pre[:, 2 * units:3 * units])
            c = ig if prev is None else f * prev[1] + ig
            return [o * np.tanh(c), c]

        return self.scan_numpy(xp, w_hh, b_hh, initial, reverse, cell, last=last)

    def torch(self, T, xp, w_hh, b_hh, *initial, reverse, last):
        def cell(a, hp, prev):
            i, f, g, o = (a + hp).chunk(4, dim=1)
            ig = T.sigmoid(i) * T.tanh(g)
            c = ig if prev is None else T.sigmoid(f) * prev[1] + ig
            return [T.sigmoid(o) * T.tanh(c), c]

        return self.scan_torch(T, xp, w_hh, b_hh, initial, reverse, cell, last=last)

    def grad(self, b, g, out, xp, w_hh, b_hh, *initial, reverse, last):
        g, out = self.whole_sequence(b, g, out, (xp, w_hh, b_hh, *initial), {"reverse": reverse, "last": last})
        units = w_hh.type.shape[0]
        h_seq = b.slice(out, axis=2, start=0, end=units)
        c_seq = b.slice(out, axis=2, start=units, end=2 * units)
        h0, c0 = initial if initial else (None, None)
        h_prev = previous_states(b, h_seq, h0, reverse)
        c_prev = previous_states(b, c_seq, c0, reverse)
        pre = b.add(xp, b.add(b.matmul(h_prev, w_hh), b_hh))
        pi, pf, pg, po = split_gates(b, pre, 4)
        i, f, gg, o = b.sigmoid(pi), b.sigmoid(pf), b.tanh(pg), b.sigmoid(po)
        tc = b.tanh(c_seq)
        # dc_t = (c's own gradient) + dh_t·o(1 - tanh²c); the gates' pre-activations get
        # [dc·g·i(1-i), dc·c_{t-1}·f(1-f), dc·i(1-g²), dh·tanh(c)·o(1-o)]
        h_to_c = b.mul(o, one_minus(b, b.mul(tc, tc)))
        to_pre = b.concat(b.mul(gg, b.mul(i, one_minus(b, i))), b.mul(c_prev, b.mul(f, one_minus(b, f))),
                          b.mul(i, one_minus(b, b.mul(gg, gg))), b.mul(tc, b.mul(o, one_minus(b, o))), axis=2)

        def step(t, carry):
            carry_h, carry_c = carry if carry is not None else (None, None)
            g_t = step_gradient(b, g, t, carry is None)
            g_h, g_c = (None, None) if g_t is None else (b.slice(g_t, axis=1, start=0, end=units),
                                                         b.slice(g_t, axis=1, start=units, end=2 * units))
            dh = plus(b, g_h, carry_h)
            dc = b.add(plus(b, g_c, carry_c), b.mul(dh, b.pick(h_to_c, axis=1, index=t)))
            dpre = b.mul(b.concat(dc, dc, dc, dh, axis=1), b.pick(to_pre, axis=1, index=t))
            return dpre, (b.gemm(dpre, w_hh, trans_b=True), b.mul(dc, b.pick(f, axis=1, index=t)))

        dpre, (dh0, dc0) = backward_loop(b, out.type.shape[1], reverse, step)
        dw, db = weight_grads(b, h_prev, dpre)
        return [dpre, dw, db] + ([dh0, dc0] if initial else [])
