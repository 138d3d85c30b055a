"""The charged-particle N-body simulator and the velocity EGNN (examples/nbody_egnn.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import random_o3
from equiops.reference.egnn_vel import EGNN_vel, E_GCL_vel

_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nbody_egnn.py"
_spec = importlib.util.spec_from_file_location("nbody_egnn", _EXAMPLE)
nbody = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbody)

TOL = dict(rtol=1e-10, atol=1e-10)


def _short_run(n_systems=16, seed=0, n_steps=400, sample_freq=50, **force_kw):
    loc, vel, charges = nbody.initial_state(n_systems, seed)
    locs, vels = nbody.simulate_from(loc, vel, charges, n_steps, sample_freq=sample_freq, **force_kw)
    return loc, vel, charges, locs, vels


# --------------------------------------------------------------------------- simulator


def test_initial_state_distribution():
    loc, vel, charges = nbody.initial_state(200, seed=1)
    assert loc.shape == vel.shape == (200, 5, 3) and charges.shape == (200, 5)
    torch.testing.assert_close(vel.norm(dim=-1), torch.full((200, 5), 0.5, dtype=torch.float64))
    assert set(charges.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(charges.mean())) < 0.1
    assert abs(float(loc.std()) - nbody.LOC_STD) < 0.1


@pytest.mark.parametrize("max_f", [nbody.MAX_F, 0.5], ids=["nri_clip", "heavy_clip"])
def test_momentum_and_center_of_mass(max_f):
    _, vel, _, locs, vels = _short_run(max_f=max_f)
    momentum = vels.sum(dim=2)  # unit masses
    torch.testing.assert_close(momentum, vel.sum(dim=1, keepdim=True).expand_as(momentum), **TOL)
    # The center of mass moves in a straight line at constant speed.
    t = torch.arange(locs.size(1), dtype=torch.float64)[None, :, None] * 50 * nbody.DELTA_T
    expected = locs[:, :1].mean(dim=2) + t * vel.mean(dim=1, keepdim=True)
    torch.testing.assert_close(locs.mean(dim=2), expected, rtol=1e-9, atol=1e-9)
    # The motion is not trivial.
    assert (vels[:, -1] - vels[:, 0]).abs().max() > 1e-2


def test_clipped_forces_antisymmetric_and_bounded():
    loc, _, charges = nbody.initial_state(32, seed=2)
    loc = loc * 0.05  # close particles: many pairs above the clip
    f = nbody.pairwise_forces(loc, charges, max_f=3.0)
    unclipped = nbody.pairwise_forces(loc, charges, max_f=float("inf"))
    torch.testing.assert_close(f, -f.transpose(1, 2), **TOL)
    assert float(f.norm(dim=-1).max()) <= 3.0 + 1e-9
    assert (unclipped.norm(dim=-1) > 3.0).any()  # the clip acted
    # Clipping keeps directions: parallel to x_i - x_j, repulsive for like charges.
    diff = loc[:, :, None] - loc[:, None, :]
    qq = charges[:, :, None] * charges[:, None, :]
    assert torch.all((f * diff).sum(-1) * qq >= 0)
    assert torch.all(f.diagonal(dim1=1, dim2=2) == 0)


def test_energy_nearly_conserved_without_close_encounters():
    loc, vel, charges, locs, vels = _short_run(n_systems=64, n_steps=1000, sample_freq=100)

    def energy(x, v):
        d = (x[..., :, None, :] - x[..., None, :, :]).norm(dim=-1)
        qq = charges[:, None, :, None] * charges[:, None, None, :]
        pot = torch.triu(qq / d.masked_fill(d == 0, float("inf")), diagonal=1).sum((-1, -2))
        return 0.5 * (v**2).sum((-1, -2)) + pot

    e = energy(locs, vels)
    min_dist = (locs[:, :, :, None] - locs[:, :, None, :]).norm(dim=-1)
    min_dist = min_dist + torch.eye(5, dtype=torch.float64) * 1e9
    far = min_dist.amin(dim=(1, 2, 3)) > 0.3
    assert far.sum() > 10
    drift = (e[far] - e[far, :1]).abs().amax(dim=1) / e[far, :1].abs().clamp(min=1.0)
    assert float(drift.max()) < 2e-2


def test_simulator_deterministic_and_seeded():
    a = nbody.simulate(3, seed=5, n_frames=3)
    b = nbody.simulate(3, seed=5, n_frames=3)
    c = nbody.simulate(3, seed=6, n_frames=3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 4, 5, 3)
    split = nbody.make_split(2, seed=5)
    assert split["loc"].dtype == torch.float32 and split["target"].shape == (2, 5, 3)


def test_simulator_equivariant():
    loc, vel, charges = nbody.initial_state(4, seed=3)
    shift = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    locs, vels = nbody.simulate_from(loc, vel, charges, 300, sample_freq=100)
    for R in random_o3(2, seed=1):
        locs_r, vels_r = nbody.simulate_from(loc @ R.T + shift, vel @ R.T, charges, 300, sample_freq=100)
        torch.testing.assert_close(locs_r, locs @ R.T + shift, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(vels_r, vels @ R.T, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- model


def _random_model(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("recurrent", True)
    model = EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=16, n_layers=3, **kw).double()
    # Make the (tiny at init) coordinate MLPs matter.
    for i in range(model.n_layers):
        nn.init.normal_(model._modules[f"gcl_{i}"].coord_mlp[2].weight, std=0.3)
    return model


def test_state_dict_names():
    keys = set(nbody.make_model().state_dict())
    assert "embedding.weight" in keys
    assert "gcl_3.coord_mlp_vel.0.weight" in keys and "gcl_3.coord_mlp_vel.2.bias" in keys
    assert "gcl_3.edge_mlp.0.weight" in keys and "gcl_4.edge_mlp.0.weight" not in keys
    assert nbody.make_model().gcl_0.edge_mlp[0].in_features == 2 * 64 + 1 + 2


def test_layer_velocity_term():
    torch.manual_seed(0)
    layer = E_GCL_vel(4, 4, 8, edges_in_d=1).double()
    nn.init.zeros_(layer.coord_mlp[-1].weight)
    h = torch.randn(5, 4, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    v = torch.randn(5, 3, dtype=torch.float64)
    row, col = nbody.fully_connected_edges(5, 1)
    a = torch.randn(row.numel(), 1, dtype=torch.float64)
    _, x_out, a_out = layer(h, (row, col), x, v, edge_attr=a)
    torch.testing.assert_close(x_out, x + layer.coord_mlp_vel(h) * v, **TOL)
    assert a_out is a
    with pytest.raises(ValueError, match="vel"):
        layer(h, (row, col), x, v[:4], edge_attr=a)


@pytest.mark.parametrize("norm_diff", [False, True], ids=["plain", "norm_diff"])
def test_egnn_vel_equivariant(norm_diff):
    model = _random_model(norm_diff=norm_diff)
    loc, vel, charges = nbody.initial_state(3, seed=4)
    out = nbody.predict(model, loc, vel, charges)
    assert (out - loc).abs().max() > 1e-2
    shift = torch.tensor([1.5, -0.7, 0.2], dtype=torch.float64)
    for R in random_o3(4, seed=2):
        out_r = nbody.predict(model, loc @ R.T + shift, vel @ R.T, charges)
        torch.testing.assert_close(out_r, out @ R.T + shift, **TOL)
    # Velocities are vectors: translating them is not a symmetry.
    out_t = nbody.predict(model, loc, vel + shift, charges)
    assert (out_t - out).abs().max() > 1e-3


def test_egnn_vel_layer_h_invariant():
    torch.manual_seed(1)
    layer = E_GCL_vel(4, 4, 8, edges_in_d=0).double()
    h = torch.randn(6, 4, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    v = torch.randn(6, 3, dtype=torch.float64)
    edges = nbody.fully_connected_edges(3, 2)
    h_out, x_out, _ = layer(h, edges, x, v)
    for R in random_o3(2, seed=3):
        h_r, x_r, _ = layer(h, edges, x @ R.T - 1.0, v @ R.T)
        torch.testing.assert_close(h_r, h_out, **TOL)
        torch.testing.assert_close(x_r, x_out @ R.T - 1.0, **TOL)


def test_one_training_step_reduces_loss():
    data = nbody.make_split(8, seed=7)
    model = nbody.make_model(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    batch = [data[k] for k in ("loc", "vel", "charges", "target")]
    before = nbody.train_step(model, opt, *batch)
    with torch.no_grad():
        after = float(nn.functional.mse_loss(nbody.predict(model, *batch[:3]), batch[3]))
    assert after < before
    assert torch.isfinite(torch.tensor(after))


# --------------------------------------------------------------------------- fused


@pytest.mark.parametrize(
    "config",
    [dict(), dict(norm_diff=True), dict(tanh=True, coords_weight=0.7), dict(recurrent=False)],
    ids=["plain", "norm_diff", "tanh+coords_weight", "no_recurrent"],
)
def test_fused_egnn_vel_equals_reference(config):
    """equiops.nn.EGNN_vel (the fused message kernel) == the reference: outputs and the
    gradients w.r.t. inputs and every parameter, in float64, with coordinate terms large
    enough that the trans clamp (+-100) acts on some edges (but with tanh, which bounds
    them by |x_i - x_j|)."""
    import equiops.nn as fused

    ref = _random_model(**config)
    kw = {"recurrent": True, **config}
    model = fused.EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=16, n_layers=3, **kw).double()
    loc, vel, charges = nbody.initial_state(4, seed=9)
    loc = (loc * 3).requires_grad_()
    with torch.no_grad():
        for i in range(3):
            ref._modules[f"gcl_{i}"].coord_mlp[2].weight.mul_(1000.0)
    model.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():  # the first layer's coordinate terms reach the clamp (tanh bounds them by |d|)
        h, x, (row, col), v, edge_attr = nbody.batch_inputs(loc, vel, charges)
        layer = ref.gcl_0
        radial, diff = layer.coord2radial(row, col, x)
        m = layer.edge_model(*(ref.embedding(h)[idx] for idx in (row, col)), radial, edge_attr)
        assert (diff * layer.coord_mlp(m)).abs().max() > (1 if config.get("tanh") else 100)
    g = torch.Generator().manual_seed(3)
    cot = torch.randn(loc.shape, generator=g, dtype=torch.float64)
    outs = {}
    for name, m in (("ref", ref), ("fused", model)):
        out = nbody.predict(m, loc, vel, charges)
        params = [loc, *m.parameters()]
        grads = torch.autograd.grad((out * cot).sum(), params, allow_unused=True)  # the last node MLP is unused
        outs[name] = (out, *(torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads)))
    for k, (a, b) in enumerate(zip(outs["fused"], outs["ref"])):
        torch.testing.assert_close(a, b, **TOL, msg=lambda msg: f"output {k}: {msg}")
