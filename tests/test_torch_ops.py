"""Every op's PyTorch implementation (`OpDef.torch`, used by the benchmark's PyTorch twin) agrees with
its numpy semantics (`OpDef.evaluate`) on every registry sample, in float64."""
from __future__ import annotations

import numpy as np
import pytest

from test_ops import CASES, IDS, OPS, case_rng, parse_input, random_value

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name,k", CASES, ids=IDS)
def test_torch_matches_numpy(name, k):
    opdef = OPS[name]
    assert opdef.torch is not None, f"op `{name}` has no PyTorch implementation (`torch` method)"
    sample = opdef.samples[k]
    rng = case_rng("torch", name, k)
    arrays = [random_value(kind, shape, high, "float64", rng) for kind, shape, high in map(parse_input, sample.inputs)]
    want = np.asarray(opdef.evaluate(*arrays, **opdef.complete_attrs(sample.attrs)))
    got = opdef.torch(torch, *[torch.from_numpy(np.array(a)) for a in arrays], **opdef.complete_attrs(sample.attrs))
    got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, numpy says {want.shape}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
