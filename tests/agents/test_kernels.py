"""oneDNN linear layers (agents.policies.kernels): F.linear's products and gradients, and where they apply."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from agents.policies import kernels
from agents.policies.kernels import fast_linear, onednn_available, onednn_linears

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear")


def _grads(fn, x, w, b, g):
    y = fn(x, w, b)
    return y, torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], g)


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5), (4, 1, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_fast_linear_matches_f_linear_and_its_gradients(shape, bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, requires_grad=True)
    w = torch.randn(6, 5, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True) if bias else None
    g = torch.randn(*shape[:-1], 6, generator=gen)
    y, grads = _grads(fast_linear, x, w, b, g)
    y_ref, grads_ref = _grads(F.linear, x, w, b, g)
    assert y.grad_fn is not None and "OneDNN" in type(y.grad_fn).__name__  # the oneDNN path ran
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, grads_ref, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_gradients_only_where_asked_and_strided_inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 9, generator=gen).t()  # (9, 5), not contiguous
    w = torch.randn(4, 5, generator=gen, requires_grad=True)
    y = fast_linear(x, w)
    torch.testing.assert_close(y, F.linear(x, w), atol=1e-5, rtol=1e-5)
    (gw,) = torch.autograd.grad(y.square().sum(), [w])
    (gw_ref,) = torch.autograd.grad(F.linear(x, w).square().sum(), [w])
    torch.testing.assert_close(gw, gw_ref, atol=1e-4, rtol=1e-5)
    with torch.no_grad():  # no graph: the bare product
        assert fast_linear(x, w).grad_fn is None


@pytest.mark.parametrize(
    "case",
    ["float64", "1-d input", "empty batch", "cpu autocast"],
)
def test_falls_back_to_f_linear_where_onednn_does_not_apply(case, monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "_product", lambda *a: calls.append(a) or F.linear(*a))
    x, w = torch.randn(3, 5), torch.randn(4, 5)
    if case == "float64":
        x, w = x.double(), w.double()
    elif case == "1-d input":
        x = x[0]
    elif case == "empty batch":
        x = x[:0]
    if case == "cpu autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fast_linear(x, w)
        assert y.dtype == torch.bfloat16  # autocast's own F.linear ran
    else:
        y = fast_linear(x, w)
        torch.testing.assert_close(y, F.linear(x, w))
    assert calls == []


@needs_onednn
def test_onednn_linears_routes_plain_linears_for_the_block_only():
    class Scaled(nn.Linear):  # a subclass may compute something else: left alone
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), Scaled(4, 3))
    x = torch.randn(2, 5)
    want = model(x)
    with onednn_linears(model) as routed:
        assert routed == 1
        assert "forward" in model[0].__dict__ and "forward" not in model[2].__dict__
        with onednn_linears(model) as inner:  # nested: the outer routing stays
            assert inner == 0
        assert "forward" in model[0].__dict__
        got = model(x)
        clone = copy.deepcopy(model)  # a copy made inside the block computes on its own weights
        with torch.no_grad():
            clone[0].weight.zero_()
            clone[0].bias.zero_()
        assert torch.equal(clone(x), clone[2](torch.zeros(2, 4)))
    assert all("forward" not in m.__dict__ for m in model.modules())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with onednn_linears(model, enabled=False) as routed:
        assert routed == 0


def test_onednn_linears_restores_the_modules_when_the_block_raises():
    model = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="boom"), onednn_linears(model):
        raise RuntimeError("boom")
    assert "forward" not in model.__dict__


@needs_onednn
def test_hf_policy_runs_its_linears_through_onednn_with_the_same_logits_and_gradients(monkeypatch):
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_policy

    calls = []
    real = kernels._product
    monkeypatch.setattr(kernels, "_product", lambda *a: calls.append(1) or real(*a))
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    attn = ids != 0
    results = []
    for onednn in (True, False):
        torch.manual_seed(0)
        policy = tiny_hf_policy(onednn=onednn).train()
        calls.clear()
        logits, _ = policy(ids, attn)
        logits.logsumexp(-1)[attn].sum().backward()
        assert bool(calls) is onednn
        grads = torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])
        results.append((logits.detach(), grads))
        assert all("forward" not in m.__dict__ for m in policy.modules())  # routed for the call only
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)


@needs_onednn
def test_checkpointed_recompute_runs_the_forwards_kernels(monkeypatch):
    """A checkpointed layer's recompute (in the backward, outside the forward's block) must use the same
    kernels, or torch.utils.checkpoint finds saved tensors of other metadata and raises."""
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_policy

    calls = []
    real = kernels._product
    monkeypatch.setattr(kernels, "_product", lambda *a: calls.append(torch.is_grad_enabled()) or real(*a))
    policy = tiny_hf_policy(gradient_checkpointing=True).train()
    ids = torch.tensor([[0, 5, 6, 7], [3, 4, 5, 6]])
    logits, _ = policy(ids, ids != 0)
    n_forward = len(calls)
    logits.logsumexp(-1).sum().backward()
    assert len(calls) > 2 * n_forward  # the recompute's products and the backward's ran in oneDNN too
    assert all(p.grad is not None for p in policy.model.parameters() if p.requires_grad)


# ---- prepacked frozen weights ------------------------------------------------------------------------------
needs_packing = pytest.mark.skipif(
    not kernels.packing_available(), reason="this torch build cannot prepack weights for oneDNN"
)


def _frozen_linear(n_in: int = 24, n_out: int = 40, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias).requires_grad_(False)


@needs_packing
@pytest.mark.parametrize("rows", [1, 8, 32, 100])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_products_equal_the_unpacked_ones(rows, bias):
    layer = _frozen_linear(bias=bias)
    packed = kernels.PackedWeights()
    x = torch.randn(rows, 3, 24)[:, 1]  # strided rows
    with torch.no_grad():
        want = F.linear(x, layer.weight, layer.bias)
        with onednn_linears(layer, packed=packed):
            got = layer(x)
            got3 = layer(x[:, None])  # (rows, 1, K): a decode step's shape
    assert len(packed) == 1 and packed.nbytes >= layer.weight.numel() * 4
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got3[:, 0], want, atol=1e-5, rtol=1e-5)


@needs_packing
def test_a_write_to_the_weight_repacks_and_a_freed_weight_drops_its_copy():
    layer = _frozen_linear()
    packed = kernels.PackedWeights()
    x = torch.randn(8, 24)
    with torch.no_grad(), onednn_linears(layer, packed=packed):
        before = layer(x)
        first = packed.get(layer.weight)
        assert packed.get(layer.weight) is first  # kept while the weight is unchanged
        layer.weight.mul_(2)  # an in-place write moves the version counter
        after = layer(x)
        assert packed.get(layer.weight) is not first
        layer.weight = nn.Parameter(torch.zeros(40, 24), requires_grad=False)  # another tensor
        zeroed = layer(x)
    torch.testing.assert_close(after - layer.bias, 2 * (before - layer.bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zeroed, layer.bias.expand(8, 40))
    assert len(packed) == 1  # the replaced weights were freed, and their copies with them
    del layer
    assert len(packed) == 0


@needs_packing
def test_trainable_weights_and_autograd_never_use_packed_copies():
    trainable = nn.Linear(24, 40)  # requires_grad: an optimizer may change it at any step
    frozen = _frozen_linear()
    packed = kernels.PackedWeights()
    x = torch.randn(8, 24, requires_grad=True)
    with onednn_linears(trainable, packed=packed), onednn_linears(frozen, packed=packed):
        with torch.no_grad():
            trainable(x)
        assert len(packed) == 0
        y = frozen(x)  # the input needs a gradient: the autograd path (weight · grad), not the copy
        assert len(packed) == 0 and y.grad_fn is not None
        (gx,) = torch.autograd.grad(y.sum(), [x])
    torch.testing.assert_close(gx, frozen.weight.sum(0).expand(8, 24), atol=1e-5, rtol=1e-5)


@needs_packing
def test_packed_copies_are_never_copied_or_pickled_with_their_owner():
    import pickle

    layer = _frozen_linear()
    packed = kernels.PackedWeights()
    packed.get(layer.weight)
    assert len(copy.deepcopy(packed)) == 0
    assert len(pickle.loads(pickle.dumps(packed))) == 0
    assert len(packed) == 1
    packed.clear()
    assert len(packed) == 0 and packed.nbytes == 0


def test_inference_tensors_and_other_dtypes_are_not_packed():
    with torch.inference_mode():
        made_in_inference = torch.randn(4, 5)
    assert not kernels.PackedWeights.packable(made_in_inference)  # no version counter to tell a write
    assert not kernels.PackedWeights.packable(torch.randn(4, 5, dtype=torch.float64))
    assert not kernels.PackedWeights.packable(torch.randn(4, 5, requires_grad=True))


@needs_packing
def test_prune_drops_the_copies_of_weights_made_trainable_or_changed():
    keep, thaw, write = _frozen_linear(seed=0), _frozen_linear(seed=1), _frozen_linear(seed=2)
    packed = kernels.PackedWeights()
    for layer in (keep, thaw, write):
        packed.get(layer.weight)
    thaw.weight.requires_grad_(True)  # trainable again: its copy would never be used
    with torch.no_grad():
        write.weight.add_(1)  # changed: its copy is stale
    assert packed.prune() == 2 and len(packed) == 1
    assert packed.get(keep.weight) is not None and len(packed) == 1


@needs_packing
def test_an_hf_policy_frees_its_packed_copies_when_unfrozen_or_moved():
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_policy

    policy = tiny_hf_policy().requires_grad_(False)
    ids = torch.tensor([[5, 6, 7], [6, 7, 8]])
    with torch.no_grad():
        cache = policy.new_cache(2, 16)
        policy.prefill(ids, None, cache)
        policy.decode_step(torch.tensor([5, 6]), cache)
        assert len(policy.packed_weights) > 0
        policy.requires_grad_(True)
        cache = policy.new_cache(2, 16)
        policy.prefill(ids, None, cache)  # the next rollout starts: the copies go
        assert len(policy.packed_weights) == 0
        policy.requires_grad_(False)
        policy.decode_step(torch.tensor([5, 6]), cache)
        assert len(policy.packed_weights) > 0
    policy.to(torch.float32)  # any .to() / .float(): the copies are of the old tensors
    assert len(policy.packed_weights) == 0
