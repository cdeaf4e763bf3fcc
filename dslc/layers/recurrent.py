"""Recurrent layers: `rnn`, `gru`, `lstm` over batch-first sequences `[B, T, F]`.

Each layer (and direction) computes the input projections of all steps with one matrix product,
`x @ weight_ih + bias_ih`, then runs the recurrence as one scan op (`dslc/ops/recurrent.py`).

Parameters, per stacked layer `k` and direction (`_reverse` for the backward one), named like
PyTorch's and stored transposed (dslc's `[in, out]` convention, as `dense`): `<layer>.weight_ih_l<k>`
`[in, G·units]`, `weight_hh_l<k>` `[units, G·units]`, `bias_ih_l<k>`, `bias_hh_l<k>` `[G·units]`, with
G = 1 (rnn), 3 (gru: gates r, z, n), 4 (lstm: i, f, g, o). So torch's `weight_ih_l0` is `weight_ih_l0ᵀ`
here, and the biases are the same.

State layout (`initial_state` and `return_state`): `[B, S, W]` with S = layers · directions in
PyTorch's order (layer by layer, forward before backward) and W = units (rnn, gru) or 2·units (lstm:
h then c); `[B, W]` when S = 1.
"""
from __future__ import annotations

from dslc.builtins import builtin
from dslc.initializers import Initializer
from dslc.ir.graph import Node
from dslc.ir.types import INT_DTYPES

Tensor = Node
Init = Initializer

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
WIDTH = {"rnn": 1, "gru": 1, "lstm": 2}  # states per unit: h (and c)


@builtin("layer")
def rnn(ctx, x: Tensor, units: int, *, activation: str = "tanh", return_sequences: bool = False,
        bidirectional: bool = False, layers: int = 1, initial_state: Tensor = None, return_state: bool = False,
        init: Init = "glorot", bias_init: Init = "zeros", name: str = None):
    """Elman RNN (PyTorch's `nn.RNN`, batch first): h_t = act(x_t·W_ih + b_ih + h_{t-1}·W_hh + b_hh),
    `activation = "tanh"` or `"relu"`. Input `[B, T, F]` (T a number). Outputs the last step's state
    `[B, units·dirs]` (for the backward direction, the state after reading the whole sequence backwards),
    or with `return_sequences = true` every step's `[B, T, units·dirs]`, or with `return_state = true`
    the final state of every layer and direction `[B, layers·dirs, units]` (`[B, units]` for one), the
    layout `initial_state` takes (zeros when absent). `bidirectional` adds a backward pass over the
    sequence (dirs = 2, outputs concatenated); `layers` stacks layers, each reading the sequence below."""
    if activation not in ("tanh", "relu"):
        ctx.fail(f"`rnn` activation must be \"tanh\" or \"relu\", got \"{activation}\"", arg="activation")
    return _recurrent(ctx, "rnn", x, units, return_sequences, bidirectional, layers, initial_state, return_state,
                      init, bias_init, name, activation=activation)


@builtin("layer")
def gru(ctx, x: Tensor, units: int, *, return_sequences: bool = False, bidirectional: bool = False, layers: int = 1,
        initial_state: Tensor = None, return_state: bool = False, init: Init = "glorot", bias_init: Init = "zeros",
        name: str = None):
    """Gated recurrent unit (PyTorch's `nn.GRU`, batch first; gates r, z, n with the reset gate applied to
    h_{t-1}·W_hn + b_hn). Input `[B, T, F]` (T a number). Outputs, arguments and state layout as for
    `rnn`: the last state `[B, units·dirs]`, every step with `return_sequences = true`, or all final states
    `[B, layers·dirs, units]` with `return_state = true`."""
    return _recurrent(ctx, "gru", x, units, return_sequences, bidirectional, layers, initial_state, return_state,
                      init, bias_init, name)


@builtin("layer")
def lstm(ctx, x: Tensor, units: int, *, return_sequences: bool = False, bidirectional: bool = False, layers: int = 1,
         initial_state: Tensor = None, return_state: bool = False, init: Init = "glorot", bias_init: Init = "zeros",
         name: str = None):
    """Long short-term memory (PyTorch's `nn.LSTM`, batch first; gates i, f, g, o). Input `[B, T, F]` (T a
    number). Outputs h as for `rnn`: the last step's `[B, units·dirs]` or every step's with
    `return_sequences = true`. Its state is h and c side by side: `return_state = true` gives
    `[B, layers·dirs, 2·units]` (`[B, 2·units]` for one layer and direction), which `initial_state` takes."""
    return _recurrent(ctx, "lstm", x, units, return_sequences, bidirectional, layers, initial_state, return_state,
                      init, bias_init, name)


def _recurrent(ctx, cell, x, units, return_sequences, bidirectional, layers, initial_state, return_state,
               init, bias_init, name, **attrs):
    batch, steps = _check_sequence(ctx, cell, x)
    if units < 1:
        ctx.fail(f"`{cell}` needs at least 1 unit, got {units}", arg="units")
    if layers < 1:
        ctx.fail(f"`{cell}` needs at least 1 layer, got {layers}", arg="layers")
    if return_sequences and return_state:
        ctx.fail(f"`{cell}` returns one tensor: choose `return_sequences` or `return_state`", arg="return_state",
                 hint="`return_sequences = true` gives every step's output; `return_state = true` the final state "
                      "of every layer and direction (for another layer's `initial_state`)")
    dirs = 2 if bidirectional else 1
    ctx.recurrent_steps(steps * layers * dirs, cell)
    gates, width = GATES[cell], WIDTH[cell]
    initial = _initial_states(ctx, cell, x, initial_state, batch, units, layers * dirs) if initial_state is not None \
        else None

    b = ctx.b
    layer = ctx.new_layer(cell, name)
    init, bias_init = init.recurrent(units), bias_init.recurrent(units)
    seq, finals = x, []
    for k in range(layers):
        outs = []
        # inference and evaluation of a layer that returns its last state: the top layer's scans give
        # only their final state (no sequence to concatenate)
        last_only = ctx.mode != "train" and k == layers - 1 and not return_sequences and not return_state
        for d in range(dirs):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            fan_in = seq.type.shape[2]
            w_ih = ctx.param(layer, "weight_ih" + suffix, (fan_in, gates * units), init, "weight",
                             fan_in=fan_in, fan_out=gates * units)
            w_hh = ctx.param(layer, "weight_hh" + suffix, (units, gates * units), init, "weight",
                             fan_in=units, fan_out=gates * units)
            b_ih = ctx.param(layer, "bias_ih" + suffix, (gates * units,), bias_init, "bias",
                             fan_in=fan_in, fan_out=gates * units)
            b_hh = ctx.param(layer, "bias_hh" + suffix, (gates * units,), bias_init, "bias",
                             fan_in=units, fan_out=gates * units)
            states = _state_inputs(b, initial, k * dirs + d, units, width)
            projections = b.add(b.matmul(seq, w_ih), b_ih)
            if last_only:  # no step but the final one is read, and no gradient taken
                finals.append(b.emit(f"{cell}_scan", projections, w_hh, b_hh, *states, reverse=bool(d), last=True,
                                     **attrs))
                continue
            if cell == "gru" and ctx.mode == "train":  # the gradient reads the gates the forward computed
                out = b.pick(b.emit("gru_scan", projections, w_hh, b_hh, *states, reverse=bool(d), gates=True),
                             axis=1, index=0)
            else:
                out = b.emit(f"{cell}_scan", projections, w_hh, b_hh, *states, reverse=bool(d), **attrs)
            outs.append(out)
            finals.append(b.pick(out, axis=1, index=0 if d else steps - 1))
        if last_only:
            break
        hs = [o if width == 1 else b.slice(o, axis=2, start=0, end=units) for o in outs]
        seq = hs[0] if dirs == 1 else b.concat(*hs, axis=2)

    if return_sequences:
        return seq
    if return_state:
        return finals[0] if len(finals) == 1 else b.stack(*finals, axis=1)
    top = [f if width == 1 else b.slice(f, axis=1, start=0, end=units) for f in finals[-dirs:]]
    return top[0] if dirs == 1 else b.concat(*top, axis=1)


def _check_sequence(ctx, cell, x):
    """(B, T) of a float sequence `[B, T, F]` with T and F numbers, or a compile error at `x`."""
    if x.type.dtype in INT_DTYPES:
        ctx.fail(f"`{cell}` expects float features `[B, T, F]`, got `{x.type}`", arg="x",
                 label="integers: token ids?",
                 hint=f"embed token ids first: `ids |> embedding(vocab, dim) |> {cell}(...)`")
    if not x.type.is_float:
        ctx.fail(f"`{cell}` expects float features `[B, T, F]`, got `{x.type}`", arg="x")
    if x.type.rank != 3:
        if x.type.rank == 2 and isinstance(x.type.shape[1], int):
            steps = x.type.shape[1]
            hint = (f"a sequence needs a feature axis: `reshape(x, {steps}, 1)` reads the {steps} values as "
                    f"{steps} steps of 1 feature; token ids go through `embedding` first")
        else:
            hint = "a sequence is `[batch, time, features]`: reshape it, or embed token ids with `embedding`"
        ctx.fail(f"`{cell}` expects a sequence `[B, T, F]`, got `{x.type}`", arg="x",
                 label=f"this input is {x.type.rank}-D", hint=hint)
    batch, steps, features = x.type.shape
    if not isinstance(steps, int):
        ctx.fail(f"`{cell}` needs a fixed sequence length, got `{x.type}`", arg="x",
                 label=f"`{steps}` is not a number",
                 hint=f"declare the length as a number, e.g. `{_type_text(x, (batch, 40, features))}` "
                      f"(the recurrence is unrolled over the steps)")
    if steps < 1:
        ctx.fail(f"`{cell}` needs at least one time step, got `{x.type}`", arg="x")
    if not isinstance(features, int):
        ctx.fail(f"`{cell}` needs a known number of input features, got `{x.type}`", arg="x",
                 hint=f"declare the feature dimension as a number, not the symbol `{features}`")
    return batch, steps


def _initial_states(ctx, cell, x, state, batch, units, count):
    """`state` checked against the layout `[B, count, W]` (or `[B, W]` when count is 1)."""
    width = WIDTH[cell] * units
    expected = (batch, width) if count == 1 else (batch, count, width)
    if state.type.dtype != x.type.dtype or state.type.shape != expected:
        shown = _type_text(x, expected)
        each = f"h and c of {units} units side by side" if cell == "lstm" else f"{units} units"
        layout = f"({each})" if count == 1 else f"({count} = layers·directions states, each {each})"
        hint = f"the state of this `{cell}` is `{shown}` {layout}"
        if cell == "lstm":
            hint += "; an LSTM's final state comes from `lstm(..., return_state = true)`"
        ctx.fail(f"`{cell}` initial state must be `{shown}`, got `{state.type}`", arg="initial_state",
                 label="wrong shape" if state.type.dtype == x.type.dtype else "wrong dtype", hint=hint)
    return state


def _type_text(like: Node, shape) -> str:
    """`f32[B, 40, 8]`: `like`'s dtype with another shape."""
    return f"{str(like.type).split('[')[0]}[{', '.join(str(d) for d in shape)}]"


def _state_inputs(b, initial, index, units, width):
    """The scan op's initial-state inputs for layer·direction `index`: none, `[h0]` or `[h0, c0]`."""
    if initial is None:
        return []
    state = initial if initial.type.rank == 2 else b.pick(initial, axis=1, index=index)
    if width == 1:
        return [state]
    return [b.slice(state, axis=1, start=0, end=units), b.slice(state, axis=1, start=units, end=2 * units)]
