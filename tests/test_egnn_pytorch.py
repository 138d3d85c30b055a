"""equiops.nn.egnn_pytorch against the egnn-pytorch package it replaces.

Every configuration loads the original's (randomised) weights with strict=True, both
ways, and compares outputs and gradients (features, coordinates, edges, every
parameter) in float64, on the message block's plain-PyTorch path (backend="torch") and
on the default backend (the fused C++ CPU kernel when the extension has it). A counting
wrapper around the message block checks which configurations are fused.
"""

from __future__ import annotations

import pytest
import torch

egnn_pytorch = pytest.importorskip("egnn_pytorch")

from conftest import random_o3  # noqa: E402
import equiops.ops.egnn as egnn_ops  # noqa: E402
from equiops.nn.egnn_pytorch import EGNN, EGNN_Network  # noqa: E402

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
B, N, DIM = 2, 6, 4

# None: the process default ("auto": the C++ CPU kernel when the extension is built).
BACKENDS = pytest.mark.parametrize("backend", ["torch", None], ids=["torch", "default"])


def _randomise(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Weights large enough for visible coordinate updates (egnn-pytorch inits them at 1e-3)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def _pair(cls_ref, cls_ours, backend, seed=0, **kwargs):
    ref = cls_ref(**kwargs).to(DT)
    _randomise(ref, seed)
    ours = cls_ours(backend=backend, **kwargs).to(DT)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref, ours


def _inputs(seed=1, edge_dim=0, masked=False, b=B, n=N, dim=DIM):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, dim, generator=g, dtype=DT)
    coors = torch.randn(b, n, 3, generator=g, dtype=DT)
    kw = {}
    if edge_dim:
        kw["edges"] = torch.randn(b, n, n, edge_dim, generator=g, dtype=DT)
    if masked:
        mask = torch.ones(b, n, dtype=torch.bool)
        mask[0, -2:] = False  # padded nodes at the end
        mask[1, 1] = False  # and one in the middle
        kw["mask"] = mask
    return feats, coors, kw


@pytest.fixture
def count_calls(monkeypatch):
    """How often the fused message block was called (the module calls it through equiops.ops.egnn)."""
    calls = []
    original = egnn_ops.egnn_message

    def counting(*args, **kwargs):
        calls.append(kwargs.get("backend"))
        return original(*args, **kwargs)

    monkeypatch.setattr(egnn_ops, "egnn_message", counting)
    return calls


def _compare(ref, ours, feats, coors, kw, seed=2):
    # With norm_coors the self pair (i, i) (d = x_i - x_i = 0) sends c_ii * scale * d / 1e-8
    # back into x_i twice, with opposite signs: exactly 0, but in float64 each
    # implementation keeps ~1e-8 of rounding noise from those 1e8-sized terms (in its own
    # summation order), so the coordinate gradient is compared at that level there.
    coors_tol = dict(rtol=1e-7, atol=1e-7) if ref.coors_mlp is not None and ref.coors_norm.__class__.__name__ == \
        "CoorsNorm" else TOL
    leaves_ref = [t.clone().requires_grad_() for t in (feats, coors)]
    leaves_ours = [t.clone().requires_grad_() for t in (feats, coors)]
    kw_ref, kw_ours = dict(kw), dict(kw)
    if "edges" in kw:
        kw_ref["edges"] = kw["edges"].clone().requires_grad_()
        kw_ours["edges"] = kw["edges"].clone().requires_grad_()
    out_ref = ref(*leaves_ref, **kw_ref)
    out_ours = ours(*leaves_ours, **kw_ours)
    g = torch.Generator().manual_seed(seed)
    cot = [torch.randn(o.shape, generator=g, dtype=DT) for o in out_ref]
    for a, e in zip(out_ours, out_ref):
        torch.testing.assert_close(a, e, **TOL)
    sum((o * c).sum() for o, c in zip(out_ref, cot)).backward()
    sum((o * c).sum() for o, c in zip(out_ours, cot)).backward()
    for name, a, e, tol in zip(("feats", "coors"), leaves_ours, leaves_ref, (TOL, coors_tol)):
        torch.testing.assert_close(a.grad, e.grad, **tol, msg=lambda m: f"grad {name}: {m}")
    if "edges" in kw:
        torch.testing.assert_close(kw_ours["edges"].grad, kw_ref["edges"].grad, **TOL)
    params_ref = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        e = params_ref[name].grad
        if e is None:
            assert p.grad is None or not p.grad.any(), name
        else:
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, e, **TOL, msg=lambda m: f"grad {name}: {m}")
    return out_ours


# (kwargs of the layer, edge_dim of the inputs, masked inputs, adj_mat kind, fused?)
CASES = {
    "default": (dict(), 0, False, None, True),
    "edges": (dict(edge_dim=3), 3, False, None, True),
    "m_dim": (dict(m_dim=7), 0, False, None, True),
    "norm_coors": (dict(norm_coors=True), 0, False, None, True),
    "norm_feats": (dict(norm_feats=True), 0, False, None, True),
    "soft_edges": (dict(soft_edges=True), 0, False, None, True),
    "clamp": (dict(coor_weights_clamp_value=0.05), 0, False, None, True),
    "mean": (dict(m_pool_method="mean"), 0, False, None, True),
    "mask": (dict(), 0, True, None, True),
    "mask_mean": (dict(m_pool_method="mean", edge_dim=2), 2, True, None, True),
    "fourier": (dict(fourier_features=3), 0, False, None, True),
    "no_coors": (dict(update_coors=False), 0, True, None, True),
    "no_feats": (dict(update_feats=False, norm_feats=True), 0, True, None, True),
    "nearest": (dict(num_nearest_neighbors=3, edge_dim=2), 2, False, None, True),
    "nearest_mask_radius": (dict(num_nearest_neighbors=3, valid_radius=2.0, m_pool_method="mean"), 0, True, None,
                            True),
    "nearest_adj": (dict(num_nearest_neighbors=4), 0, True, "shared", True),
    "sparse_adj": (dict(only_sparse_neighbors=True, edge_dim=1), 1, True, "batched", True),
    "sparse_adj_nomask": (dict(only_sparse_neighbors=True), 0, False, "shared", True),
    "everything": (dict(edge_dim=2, m_dim=5, fourier_features=2, norm_feats=True, norm_coors=True, soft_edges=True,
                        coor_weights_clamp_value=0.5, m_pool_method="mean"), 2, True, None, True),
    "dropout_eval": (dict(dropout=0.3, edge_dim=1), 1, True, None, True),
    "clamp_zero": (dict(coor_weights_clamp_value=0.0), 0, False, None, False),
}


def _adj(kind, b=B, n=N):
    g = torch.Generator().manual_seed(5)
    a = torch.rand(b, n, n, generator=g) < 0.4
    a = a | a.transpose(1, 2)
    return a[0] if kind == "shared" else a


@BACKENDS
@pytest.mark.parametrize("case", list(CASES))
def test_matches_egnn_pytorch(case, backend, count_calls):
    kwargs, edge_dim, masked, adj, fused = CASES[case]
    ref, ours = _pair(egnn_pytorch.EGNN, EGNN, backend, dim=DIM, **kwargs)
    if kwargs.get("dropout"):
        ref.eval(), ours.eval()
    feats, coors, kw = _inputs(edge_dim=edge_dim, masked=masked)
    if adj is not None:
        kw["adj_mat"] = _adj(adj)
    _compare(ref, ours, feats, coors, kw)
    assert len(count_calls) == (1 if fused else 0)


def test_clamp_is_active():
    """The clamp case above clamps: without it the coordinates differ."""
    _, ours = _pair(egnn_pytorch.EGNN, EGNN, "torch", dim=DIM, coor_weights_clamp_value=0.05)
    feats, coors, _ = _inputs()
    clamped = ours(feats, coors)[1]
    ours.coor_weights_clamp_value = None
    assert (ours(feats, coors)[1] - clamped).abs().max() > 1e-2


def test_dropout_training_dense_path(count_calls):
    """Training with dropout runs the dense path, drawing the original's dropout masks."""
    ref, ours = _pair(egnn_pytorch.EGNN, EGNN, None, dim=DIM, dropout=0.4, soft_edges=True, edge_dim=2)
    feats, coors, kw = _inputs(edge_dim=2, masked=True)
    torch.manual_seed(7)
    expected = ref(feats, coors, **kw)
    torch.manual_seed(7)
    actual = ours(feats, coors, **kw)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOL)
    assert count_calls == []


def test_double_backward_torch_backend():
    """Forces from an energy and their gradient (second order) with backend='torch'."""
    # (Not with norm_coors: the second derivative of |d| at the self pairs' d = 0 is NaN.)
    ref, ours = _pair(egnn_pytorch.EGNN, EGNN, "torch", dim=DIM, soft_edges=True, fourier_features=2, edge_dim=1)
    feats, coors, kw = _inputs(edge_dim=1, masked=True)
    grads = []
    for model in (ref, ours):
        x = coors.clone().requires_grad_()
        h, y = model(feats, x, **kw)
        energy = (h ** 2).sum() + (y ** 3).sum()
        (force,) = torch.autograd.grad(energy, x, create_graph=True)
        grads.append(torch.autograd.grad((force ** 2).sum(), [x, model.edge_mlp[0].weight]))
    for a, e in zip(*grads):
        torch.testing.assert_close(a, e, **TOL)


@BACKENDS
def test_network_matches(backend, count_calls):
    kwargs = dict(depth=2, dim=DIM, num_tokens=5, num_positions=N, num_edge_tokens=3, edge_dim=2, num_adj_degrees=2,
                  adj_dim=2, global_linear_attn_every=1, global_linear_attn_heads=2, global_linear_attn_dim_head=3,
                  num_global_tokens=2, m_dim=5, soft_edges=True)
    ref = egnn_pytorch.EGNN_Network(**kwargs).to(DT)
    _randomise(ref, 3, std=0.2)
    ours = EGNN_Network(backend=backend, **kwargs).to(DT)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, 5, (B, N), generator=g)
    edge_tokens = torch.randint(0, 3, (B, N, N), generator=g)
    coors = torch.randn(B, N, 3, generator=g, dtype=DT)
    _, _, kw = _inputs(masked=True)
    adj = _adj("batched")
    outs = []
    for model in (ref, ours):
        x = coors.clone().requires_grad_()
        h, y, changes = model(tokens, x, adj_mat=adj, edges=edge_tokens, mask=kw["mask"], return_coor_changes=True)
        assert len(changes) == 3
        (h.sin().sum() + (y ** 2).sum()).backward()
        outs.append((h, y, x.grad, {k: p.grad for k, p in model.named_parameters()}))
    for a, e in zip(outs[1][:3], outs[0][:3]):
        torch.testing.assert_close(a, e, **TOL)
    for name, e in outs[0][3].items():
        a = outs[1][3][name]
        if e is None:
            assert a is None or not a.any(), name
        else:
            torch.testing.assert_close(a, e, **TOL, msg=lambda m: f"grad {name}: {m}")
    assert len(count_calls) == 2


@BACKENDS
def test_network_sparse_neighbours_float_feats(backend, count_calls):
    """Float features with position embeddings (the original adds them in place: given a
    clone), adjacency degrees up to 3 and only_sparse_neighbors layers."""
    kwargs = dict(depth=2, dim=DIM, num_positions=N, num_adj_degrees=3, adj_dim=2, only_sparse_neighbors=True,
                  m_pool_method="mean")
    ref = egnn_pytorch.EGNN_Network(**kwargs).to(DT)
    _randomise(ref, 6, std=0.3)
    ours = EGNN_Network(backend=backend, **kwargs).to(DT)
    ours.load_state_dict(ref.state_dict(), strict=True)
    feats, coors, kw = _inputs(masked=True)
    adj = torch.zeros(N, N, dtype=torch.bool)
    idx = torch.arange(N - 1)
    adj[idx, idx + 1] = adj[idx + 1, idx] = True  # a chain
    expected = ref(feats.clone(), coors, adj_mat=adj, mask=kw["mask"])
    given = feats.clone()
    actual = ours(given, coors, adj_mat=adj, mask=kw["mask"])
    assert torch.equal(given, feats)  # not modified in place
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOL)
    assert len(count_calls) == 2


@BACKENDS
def test_float32(backend):
    ref, ours = _pair(egnn_pytorch.EGNN, EGNN, backend, dim=DIM, edge_dim=2, soft_edges=True, m_pool_method="mean")
    ref.float(), ours.float()
    feats, coors, kw = _inputs(edge_dim=2, masked=True)
    kw["edges"] = kw["edges"].float()
    outs = []
    for model in (ref, ours):
        x = coors.float().requires_grad_()
        h, y = model(feats.float(), x, **kw)
        (h.sum() + (y ** 2).sum()).backward()
        outs.append((h, y, x.grad))
    for a, e in zip(*outs[::-1]):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_default_backend_is_the_fused_kernel():
    """Says which implementation the "default" cases above ran (the C++ CPU kernel when built)."""
    from equiops import _extension, backend

    expected = "cpu" if _extension.available() else "torch"
    assert backend.resolve(None, torch.device("cpu"), "egnn") == expected


# ------------------------------------------------------------------ symmetries
def _symmetry_model(backend):
    _, ours = _pair(egnn_pytorch.EGNN, EGNN, backend, dim=DIM, edge_dim=2, norm_coors=True, soft_edges=True,
                    fourier_features=2)
    return ours


@BACKENDS
def test_e3_equivariance(backend):
    model = _symmetry_model(backend)
    feats, coors, kw = _inputs(edge_dim=2, masked=True)
    h, x = model(feats, coors, **kw)
    shift = torch.tensor([0.3, -1.2, 2.0], dtype=DT)
    for R in random_o3(2, seed=11):  # one rotation, one reflection
        h2, x2 = model(feats, coors @ R.T + shift, **kw)
        torch.testing.assert_close(h2, h, **TOL)
        torch.testing.assert_close(x2, x @ R.T + shift, **TOL)


@BACKENDS
@pytest.mark.parametrize("nearest", [0, 3])
def test_permutation_equivariance(backend, nearest):
    model = _symmetry_model(backend)
    model.num_nearest_neighbors = nearest
    feats, coors, kw = _inputs(edge_dim=2, masked=True)
    h, x = model(feats, coors, **kw)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    edges = kw["edges"][:, perm][:, :, perm]
    h2, x2 = model(feats[:, perm], coors[:, perm], edges=edges, mask=kw["mask"][:, perm])
    torch.testing.assert_close(h2, h[:, perm], **TOL)
    torch.testing.assert_close(x2, x[:, perm], **TOL)


# ------------------------------------------------------------------ bad input
def _bad_calls():
    f, x, kw = _inputs(edge_dim=2, masked=True)
    e, m = kw["edges"], kw["mask"]
    return {
        "feats_2d": ((f[0], x), dict(edges=e), ValueError, "feats"),
        "feats_dim": ((f[..., :3], x), dict(edges=e), ValueError, "feats"),
        "feats_int": ((f.long(), x), dict(edges=e), TypeError, "feats"),
        "feats_list": ((f.tolist(), x), dict(edges=e), TypeError, "feats"),
        "coors_cols": ((f, x[..., :2]), dict(edges=e), ValueError, "coors"),
        "coors_nodes": ((f, x[:, :-1]), dict(edges=e), ValueError, "coors"),
        "coors_2d": ((f, x[0]), dict(edges=e), ValueError, "coors"),
        "coors_dtype": ((f, x.float()), dict(edges=e), TypeError, "coors"),
        "mask_float": ((f, x), dict(edges=e, mask=m.double()), TypeError, "mask"),
        "mask_shape": ((f, x), dict(edges=e, mask=m[:, :-1]), ValueError, "mask"),
        "edges_dim": ((f, x), dict(edges=e[..., :1]), ValueError, "edges"),
        "edges_missing": ((f, x), dict(), ValueError, "edges"),
        "edges_shape": ((f, x), dict(edges=e[:, :, :-1]), ValueError, "edges"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input(case):
    model = EGNN(dim=DIM, edge_dim=2, backend="torch").to(DT)
    args, kw, exc, name = _bad_calls()[case]
    with pytest.raises(exc, match=name):
        model(*args, **kw)


def test_bad_input_edges_without_edge_dim_and_adj():
    f, x, _ = _inputs(edge_dim=2)
    with pytest.raises(ValueError, match="edges"):
        EGNN(dim=DIM).to(DT)(f, x, edges=torch.zeros(B, N, N, 2, dtype=DT))
    model = EGNN(dim=DIM, num_nearest_neighbors=2).to(DT)
    with pytest.raises(TypeError, match="adj_mat"):
        model(f, x, adj_mat=torch.ones(N, N))
    with pytest.raises(ValueError, match="adj_mat"):
        model(f, x, adj_mat=torch.ones(N, N + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="neighbours"):
        EGNN(dim=DIM, num_nearest_neighbors=N + 1).to(DT)(f, x)
    with pytest.raises(ValueError, match="m_pool_method"):
        EGNN(dim=DIM, m_pool_method="max")
