"""What the recurrent scan ops (`dslc/ops/recurrent.py`: `rnn_scan`, `gru_scan`, `lstm_scan`) share: the
`Scan` base (shape rule, the unrolled lowering's loop) and the gradient's building blocks — the states
each step starts from, the backward time loop, a step of the output's gradient (skipping steps known to
be zero), and the recurrent weights' gradient as one product over all steps."""
from __future__ import annotations

import numpy as np

from dslc.ir.graph import OpError
from dslc.ops.registry import OpDef, expect_float


# ---- the scan ops' shared rules ---------------------------------------------------------------------------------
class Scan(OpDef):
    """Shared by the scan ops: the shape rule, the unrolled lowering's loop, and the gradient's helpers.
    Inputs: `xp` `[B, T, G·H]`, `w_hh` `[H, G·H]`, `b_hh` `[G·H]`, then the initial states `[B, H]`
    (none, or `states` of them: all or nothing)."""

    gates = 1  # G
    states = 1  # initial-state inputs: h (and c for the LSTM)
    width = 1  # the output holds `width` states per step

    def infer(self, xp, w_hh, b_hh, *initial, last=False):
        for t in (xp, w_hh, b_hh, *initial):
            expect_float(t)
            if t.dtype != xp.dtype:
                raise OpError(f"`{self.name}` of mismatched dtypes `{xp}` and `{t}`")
        if xp.rank != 3:
            raise OpError(f"`{self.name}` needs input projections `[B, T, {self.gates}·H]`, got `{xp}`")
        batch, steps, cols = xp.shape
        if not isinstance(steps, int) or steps < 1:
            raise OpError(f"`{self.name}` needs a fixed, positive number of time steps, got `{xp}`")
        if w_hh.rank != 2 or not isinstance(w_hh.shape[0], int):
            raise OpError(f"`{self.name}` needs a recurrent weight `[H, {self.gates}·H]`, got `{w_hh}`")
        units = w_hh.shape[0]
        if w_hh.shape[1] != self.gates * units or cols != self.gates * units:
            raise OpError(f"`{self.name}` with {units} units needs `[B, T, {self.gates * units}]` projections and a "
                          f"`[{units}, {self.gates * units}]` weight, got `{xp}` and `{w_hh}`")
        if b_hh.shape != (self.gates * units,):
            raise OpError(f"`{self.name}` needs a recurrent bias `[{self.gates * units}]`, got `{b_hh}`")
        if len(initial) not in (0, self.states):
            raise OpError(f"`{self.name}` takes {self.states} initial state(s) or none, got {len(initial)}")
        for s in initial:
            if s.shape != (batch, units):
                raise OpError(f"`{self.name}` needs initial states `[{batch}, {units}]`, got `{s}`")
        return xp.with_shape((batch, self.width * units) if last else (batch, steps, self.width * units))

    # -- lowering: the unrolled loop; `cell(e, a_t, hp_t, prev)` gives what the step writes, its new
    # state(s) first (the states the next step reads: h, and c for the LSTM)
    def unroll(self, e, steps: int, units: int, initial, reverse: bool, step, by_kind: bool = False,
               last: bool = False) -> str:
        """The loop: `step(e, t, prev)` gives what step t writes, its new state(s) first (h, and c for the
        LSTM: what the next step reads as `prev`, which is None before a first step without initial
        state). The result is `[B, T, W]` with each step's writings side by side, or with `by_kind`
        `[B, K, T, H]`: the writings of each kind (h, a gate...) as one sequence, all written by one
        Concat (no per-step Concat); with `last`, only the final step's `[B, W]`."""
        prev = list(initial) or None
        outputs: dict[int, list[str]] = {}
        for t in _order(steps, reverse):
            outputs[t] = prev = step(e, t, prev)
        kinds = len(outputs[0])
        if last:
            return prev[0] if kinds == 1 else e.node("Concat", *prev, axis=1)
        if by_kind:
            return e.node("Reshape", e.node("Concat", *[outputs[t][k] for k in range(kinds) for t in range(steps)],
                                            axis=1), e.int64s([0, kinds, steps, units]))
        joined = [o[0] if kinds == 1 else e.node("Concat", *o, axis=1) for o in (outputs[t] for t in range(steps))]
        return e.node("Reshape", e.node("Concat", *joined, axis=1), e.int64s([0, steps, kinds * units]))

    @staticmethod
    def projected_step(xp, w_hh, b_hh, cell):
        """An `unroll` step that gives `cell(e, a_t, hp_t, prev)` the step's input projections a_t and its
        recurrent product hp_t = h_{t-1} @ w_hh + b_hh."""
        def step(e, t, prev):
            a = e.node("Gather", xp, e.int64s(t, scalar=True), axis=1)
            # without an initial state the first step's recurrent product is just the bias
            hp = b_hh if prev is None else e.node("Gemm", prev[0], w_hh, b_hh)
            return cell(e, a, hp, prev)
        return step

    # -- numpy semantics
    def scan_numpy(self, xp, w_hh, b_hh, initial, reverse: bool, cell, by_kind: bool = False,
                   last: bool = False) -> np.ndarray:
        batch, steps, _ = xp.shape
        prev = list(initial) or None
        outputs = {}
        for t in _order(steps, reverse):
            hp = b_hh + np.zeros((batch, 1), xp.dtype) if prev is None else prev[0] @ w_hh + b_hh
            outputs[t] = prev = cell(xp[:, t], hp, prev)
        if last:
            return np.concatenate(prev, axis=1)
        if by_kind:
            return np.stack([np.stack([outputs[t][k] for t in range(steps)], axis=1) for k in range(len(prev))], axis=1)
        return np.stack([np.concatenate(outputs[t], axis=1) for t in range(steps)], axis=1)

    # -- PyTorch semantics (for the benchmark's twin)
    def scan_torch(self, T, xp, w_hh, b_hh, initial, reverse: bool, cell, by_kind: bool = False, last: bool = False):
        """The recurrence step by step in PyTorch (autograd differentiates it); `cell` as for numpy."""
        steps = xp.shape[1]
        prev = list(initial) or None
        outputs = {}
        for t in _order(steps, reverse):
            hp = b_hh.expand(xp.shape[0], -1) if prev is None else T.addmm(b_hh, prev[0], w_hh)
            outputs[t] = prev = cell(xp[:, t], hp, prev)
        if last:
            return T.cat(prev, dim=1) if len(prev) > 1 else prev[0]
        if by_kind:
            return T.stack([T.stack([outputs[t][k] for t in range(steps)], dim=1) for k in range(len(prev))], dim=1)
        return T.stack([T.cat(outputs[t], dim=1) if len(prev) > 1 else outputs[t][0] for t in range(steps)], dim=1)

    def whole_sequence(self, b, g, out, inputs, attrs):
        """(g, out) for the gradient rules, which read every step's state: with `last` the output is the
        final step's alone, so the sequence is computed again and g is that step's gradient (layers ask
        for `last` only where no gradient is taken: inference and evaluation graphs)."""
        if not attrs["last"]:
            return g, out
        full = b.emit(self.name, *inputs, **{**attrs, "last": False})
        steps = full.type.shape[1]
        final = 0 if attrs["reverse"] else steps - 1
        return b.pad(b.unsqueeze(g, axes=(1,)), axis=1, before=final, after=steps - 1 - final), full

    def flops(self, out, xp, w_hh, b_hh, *initial, **attrs):
        """The recurrent products h_{t-1} @ w_hh (the first step has none without an initial state)."""
        batch, steps, cols = xp.shape
        return 2 * batch * (steps if initial else steps - 1) * cols * w_hh.shape[0]


def _order(steps: int, reverse: bool):
    return range(steps - 1, -1, -1) if reverse else range(steps)


def gate(e, x, k: int, units: int) -> str:
    """Columns k·H .. (k+1)·H of `x` `[B, G·H]` or `[G·H]` (ONNX Slice on the last axis)."""
    return columns(e, x, k * units, (k + 1) * units)


def columns(e, x, start: int, end: int) -> str:
    return e.node("Slice", x, e.int64s([start]), e.int64s([end]), e.int64s([-1]))


def input_steps(e, xp, start: int, end: int, plus=None):
    """Step t's columns start..end of the input projections `xp` `[B, T, G·H]` (the first input of the
    scan being lowered), plus `plus` `[end - start]` when given, as a function of t. When `xp` is rows
    looked up in a table (`fold_lookup` makes the projections such a lookup), each step looks its rows up
    in the table's columns: no `[B, T, ...]` copy of the projections is made, sliced or added to."""
    source, lookup = e.lowering.inputs[0] if e.lowering is not None else None, e.producer(xp)
    looked_up = (source is not None and source.op == "gather_rows" and source.inputs[0].type.rank == 2
                 and lookup is not None and lookup.op_type == "Gather")  # ids `[B, T]` into a table of rows
    part = columns(e, lookup.input[0] if looked_up else xp, start, end)
    if plus is not None:
        part = e.node("Add", part, plus)
    if looked_up:
        ids = lookup.input[1]
        return lambda t: e.node("Gather", part, e.node("Gather", ids, e.int64s(t, scalar=True), axis=1), axis=0)
    return lambda t: e.node("Gather", part, e.int64s(t, scalar=True), axis=1)


def split_gates(b, x, count: int):
    """`x` `[B, T, count·H]` split along the last axis into `count` tensors `[B, T, H]`."""
    units = x.type.shape[2] // count
    return [b.slice(x, axis=2, start=k * units, end=(k + 1) * units) for k in range(count)]


def previous_states(b, seq, initial, reverse: bool):
    """`[B, T, H]`: the state each step starts from — the initial state (zeros when absent) at the first
    step, then the step before's output."""
    steps = seq.type.shape[1]
    rest = None
    if steps > 1:
        rest = b.slice(seq, axis=1, start=1, end=steps) if reverse else b.slice(seq, axis=1, start=0, end=steps - 1)
    if initial is None:
        if rest is None:
            return b.mul(seq, b.scalar_like(0.0, seq))
        return b.pad(rest, axis=1, before=int(not reverse), after=int(reverse))
    first = b.unsqueeze(initial, axes=(1,))
    if rest is None:
        return first
    return b.concat(rest, first, axis=1) if reverse else b.concat(first, rest, axis=1)


def backward_loop(b, steps: int, reverse: bool, step):
    """Run `step(t, carry) -> (value, carry)` from the last processed step to the first; returns the
    values stacked at their positions `[B, T, ...]` (a tuple of stacks where `value` is a tuple) and the
    final carry (the initial state's gradient)."""
    values, carry = {}, None
    for t in reversed(list(_order(steps, reverse))):
        values[t], carry = step(t, carry)
    if isinstance(values[0], tuple):
        return tuple(b.stack(*[values[t][k] for t in range(steps)], axis=1) for k in range(len(values[0]))), carry
    return b.stack(*[values[t] for t in range(steps)], axis=1), carry


def step_gradient(b, g, t: int, needed: bool):
    """Step t of the output's gradient `g` `[B, T, ...]`, or None where it is known to be zero and not
    `needed`: the gradient of a `pick` (the last state, say) is the picked step's padded with zeros, so
    the other steps' additions and reads are left out of the time loop."""
    if g.op == "pad" and g.attrs["axis"] in (1, 1 - g.type.rank):
        before, inner = g.attrs["before"], g.inputs[0]
        if before <= t < before + inner.type.shape[1]:
            if inner.op == "unsqueeze" and tuple(inner.attrs["axes"]) == (1,):
                return inner.inputs[0]
            return b.pick(inner, axis=1, index=t - before)
        if not needed:
            return None
    return b.pick(g, axis=1, index=t)


def weight_grads(b, prev, dpre):
    """dW_hh = Σ_t h_{t-1}ᵀ dpre_t as one GEMM over all steps, and db_hh = Σ dpre."""
    dw = b.gemm(b.flatten(prev, axis=2), b.flatten(dpre, axis=2), trans_a=True)
    return dw, b.reduce_sum(dpre, axes=(0, 1))


def one_minus(b, x):
    return b.sub(b.scalar_like(1.0, x), x)


def plus(b, x, carry):
    """x + carry, either of which may be None (zero), not both."""
    return x if carry is None else carry if x is None else b.add(x, carry)
