"""Tensor Field Network / NequIP layers (equiops.nn.tfn) against the same composition of
e3nn parts with copied weights (float64, 1e-10): outputs, gradients and the force-training
double backward; the model's invariances, forces, zero-length edges, compile, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import equiops
from equiops.nn.tfn import InteractionBlock, TensorFieldNetwork, TFNConv

from conftest import default_dtype

o3 = pytest.importorskip("e3nn.o3")
e3nn_nn = pytest.importorskip("e3nn.nn")

pytestmark = pytest.mark.skipif(not equiops._extension.available(), reason="C++ extension not built")


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _graph(n, seed, r_max=2.5, self_loops=True):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.2
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    d = (pos[i] - pos[j]).norm(dim=-1)
    mask = (d < r_max) & ((i != j) | torch.tensor(self_loops))
    # receiver i, sender j: vector pos[j] - pos[i]
    return pos, j[mask], i[mask]


class E3nnConv(torch.nn.Module):
    """The e3nn composition of a TFNConv / InteractionBlock convolution: e3nn harmonics,
    the same radial embedding, e3nn's FullyConnectedNet, e3nn's TensorProduct on gathered
    edges + index_add_, divided by sqrt(avg)."""

    def __init__(self, ours_edge_conv):
        super().__init__()
        c = ours_edge_conv.conv
        with default_dtype(torch.float64):
            self.tp = o3.TensorProduct(str(c.irreps_in1), str(c.irreps_in2), str(c.irreps_out),
                                       [tuple(i[:5]) for i in c.instructions], shared_weights=False,
                                       internal_weights=False)
            self.fc = e3nn_nn.FullyConnectedNet(ours_edge_conv.radial.hs, torch.nn.functional.silu)
        self.fc.load_state_dict(ours_edge_conv.radial.state_dict())
        self.embed = ours_edge_conv.radial_embedding  # tested against closed forms in test_radial.py
        self.irreps_sh = str(ours_edge_conv.irreps_sh)
        self.avg = ours_edge_conv.avg_num_neighbors

    def forward(self, x, vec, src, dst):
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        w = self.fc(self.embed(vec.norm(dim=-1)))
        msg = self.tp(x[src], sh, w)
        return torch.zeros(x.shape[0], msg.shape[1], dtype=x.dtype).index_add_(0, dst, msg) / math.sqrt(self.avg)


def _e3nn_linear(ours):
    with default_dtype(torch.float64):
        lin = o3.Linear(str(ours.irreps_in), str(ours.irreps_out))
    lin.load_state_dict(ours.state_dict())
    return lin


def _compare(f_ours, f_theirs, leaves_ours, leaves_theirs, pos_ours, pos_theirs):
    """Outputs, first derivatives and the force-training second derivatives agree."""
    res = []
    for f, leaves, pos in ((f_ours, leaves_ours, pos_ours), (f_theirs, leaves_theirs, pos_theirs)):
        out = f()
        energy = (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum() + (out**2).sum()
        forces = -torch.autograd.grad(energy, pos, create_graph=True)[0]
        loss = (forces**2).sum() + energy
        res.append((out.detach(), forces.detach()) + torch.autograd.grad(loss, leaves))
    for a, b in zip(*res):
        assert a.shape == b.shape and _rel(a, b) < 1e-10


def test_tfnconv_equals_e3nn_composition():
    torch.manual_seed(0)
    ours = TFNConv("4x0e+2x1o+2x1e", "3x0e+2x1o+2x1e+1x2e", 2, r_max=2.5, num_basis=6, radial_neurons=(16,),
                   avg_num_neighbors=4.0).double()
    conv = E3nnConv(ours.conv)
    lin, si = _e3nn_linear(ours.linear), _e3nn_linear(ours.self_interaction)
    pos, src, dst = _graph(10, 1)
    x = torch.randn(10, ours.irreps_in.dim, dtype=torch.float64)
    xa, pa = x.clone().requires_grad_(), pos.clone().requires_grad_()
    xb, pb = x.clone().requires_grad_(), pos.clone().requires_grad_()
    theirs_params = list(conv.fc.parameters()) + list(lin.parameters()) + list(si.parameters())
    ours_params = list(ours.conv.radial.parameters()) + list(ours.linear.parameters()) + list(
        ours.self_interaction.parameters())
    _compare(lambda: ours(xa, pa, src, dst), lambda: lin(conv(xb, pb[src] - pb[dst], src, dst)) + si(xb),
             [xa] + ours_params, [xb] + theirs_params, pa, pb)


def test_interaction_block_equals_e3nn_composition():
    torch.manual_seed(1)
    ours = InteractionBlock("4x0e+2x1o", "4x0e+2x1o+2x1e", "3x0e", 2, r_max=2.5, num_basis=5, radial_neurons=(8,),
                            avg_num_neighbors=3.0).double()
    conv = E3nnConv(ours.conv)
    l1, l2 = _e3nn_linear(ours.linear_1), _e3nn_linear(ours.linear_2)
    with default_dtype(torch.float64):
        sc = o3.FullyConnectedTensorProduct("4x0e+2x1o", "3x0e", "4x0e+2x1o+2x1e")
    sc.load_state_dict(ours.sc.state_dict())
    pos, src, dst = _graph(9, 2)
    x = torch.randn(9, ours.irreps_in.dim, dtype=torch.float64)
    attr = torch.nn.functional.one_hot(torch.arange(9) % 3, 3).double()
    xa, pa = x.clone().requires_grad_(), pos.clone().requires_grad_()
    xb, pb = x.clone().requires_grad_(), pos.clone().requires_grad_()
    _compare(lambda: ours(xa, attr, pa, src, dst), lambda: l2(conv(l1(xb), pb[src] - pb[dst], src, dst)) + sc(xb, attr),
             [xa, ours.sc.weight, ours.linear_1.weight], [xb, sc.weight, l1.weight], pa, pb)


def _model_and_data(seed=0, n=14):
    torch.manual_seed(seed)
    m = TensorFieldNetwork(3, "8x0e+2x0o+4x1o+4x1e", 2, num_layers=2, r_max=2.5, num_basis=6, radial_neurons=(16,),
                           avg_num_neighbors=5.0).double()
    # No self-loops here: the derivative of the harmonics at a zero vector is huge (finite,
    # ~1/eps), so the +/- contributions of a self-loop to one atom's force cancel only to
    # rounding at that scale (test_zero_length_edges_are_finite covers them).
    pos, src, dst = _graph(n, seed + 10, self_loops=False)
    species = torch.arange(n) % 3
    return m, pos, species, src, dst


def _energy_forces(m, pos, species, src, dst, **kw):
    pos = pos.clone().requires_grad_()
    E = m(pos, species, src, dst, **kw)
    F = -torch.autograd.grad(E.sum(), pos)[0]
    return E.detach(), F


def test_model_invariances_and_forces():
    m, pos, species, src, dst = _model_and_data()
    E, F = _energy_forces(m, pos, species, src, dst)
    # Rotations with and without reflection, translations: E invariant, F equivariant.
    for det in (1, -1):
        R = equiops.so3.rand_matrix(dtype=torch.float64) * det
        E2, F2 = _energy_forces(m, pos @ R.T + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), species, src, dst)
        assert _rel(E2, E) < 1e-10 and _rel(F2, F @ R.T) < 1e-10
    # Permutations of the atoms (and the edge indices with them).
    perm = torch.randperm(pos.shape[0])
    inv = torch.argsort(perm)
    E3, F3 = _energy_forces(m, pos[perm], species[perm], inv[src], inv[dst])
    assert _rel(E3, E) < 1e-10 and _rel(F3, F[perm]) < 1e-10
    # Forces are minus the gradient of the energy (finite differences).
    eps = 1e-6
    for a, c in ((0, 0), (3, 2)):
        dp = torch.zeros_like(pos)
        dp[a, c] = eps
        fd = -(m(pos + dp, species, src, dst) - m(pos - dp, species, src, dst)) / (2 * eps)
        assert abs(float(fd) - float(F[a, c])) < 1e-6 * max(1.0, abs(float(F[a, c])))


def test_model_batches_and_graph_object():
    m, pos, species, src, dst = _model_and_data(1, n=10)
    # Two copies of the structure as a batch of two: each energy equals the single one.
    n = pos.shape[0]
    pos2 = torch.cat([pos, pos + 10.0])
    sp2, src2, dst2 = torch.cat([species, species]), torch.cat([src, src + n]), torch.cat([dst, dst + n])
    batch = torch.arange(2).repeat_interleave(n)
    E1, F1 = _energy_forces(m, pos, species, src, dst)
    E2, F2 = _energy_forces(m, pos2, sp2, src2, dst2, batch=batch, num_graphs=2)
    assert E2.shape == (2,) and _rel(E2, E1.expand(2)) < 1e-10 and _rel(F2, torch.cat([F1, F1])) < 1e-10
    g = equiops.Graph(src2, dst2, 2 * n)
    E3, F3 = _energy_forces(m, pos2, sp2, src2, dst2, batch=batch, num_graphs=2, graph=g)
    assert _rel(E3, E2) < 1e-10 and _rel(F3, F2) < 1e-10


def test_zero_length_edges_are_finite():
    m, pos, species, src, dst = _model_and_data(2, n=8)
    # A self-loop and a duplicated atom: zero-length edges, with and inside the cutoff.
    pos = torch.cat([pos, pos[:1]])
    species = torch.cat([species, species[:1]])
    extra = torch.tensor([[0, 0], [8, 0], [0, 8]])
    src = torch.cat([src, extra[:, 0]])
    dst = torch.cat([dst, extra[:, 1]])
    p = pos.clone().requires_grad_()
    E = m(p, species, src, dst)
    (F,) = torch.autograd.grad(E.sum(), p, create_graph=True)
    (g,) = torch.autograd.grad((F**2).sum(), m.readout.weight)
    assert torch.isfinite(E).all() and torch.isfinite(F).all() and torch.isfinite(g).all()


def test_compiled_force_training_equals_eager():
    import torch._dynamo.testing

    m, pos, species, src, dst = _model_and_data(3, n=10)

    def forces(p):
        E = m(p, species, src, dst)
        return -torch.autograd.grad(E.sum(), p, create_graph=True)[0]

    def run(f):
        p = pos.clone().requires_grad_()
        F = f(p)
        return (F.detach(),) + torch.autograd.grad((F**2).sum(), [m.readout.weight, m.layers[0].linear.weight])

    eager = run(forces)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = run(torch.compile(forces, backend=counter, fullgraph=True))
    for a, b in zip(eager, compiled):
        assert _rel(b, a) < 1e-10


def test_bad_input():
    m, pos, species, src, dst = _model_and_data(4, n=8)
    with pytest.raises(IndexError, match="species"):
        m(pos, species + 3, src, dst)
    with pytest.raises(TypeError, match="species"):
        m(pos, species.double(), src, dst)
    with pytest.raises(ValueError, match="pos"):
        m(pos[:, :2], species, src, dst)
    with pytest.raises(ValueError, match="species"):
        m(pos, species[:-1], src, dst)
    with pytest.raises(ValueError, match="r_max"):
        TFNConv("2x0e", "2x0e", 1, r_max=0.0)
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        TFNConv("2x0e", "2x0e", 1, avg_num_neighbors=0)
    with pytest.raises(ValueError, match="0e"):
        TensorFieldNetwork(2, "4x0o+2x1o")
    with pytest.raises(ValueError, match="x must have shape"):
        TFNConv("2x0e", "2x0e", 1).double()(torch.zeros(3, 3, dtype=torch.float64), pos[:3], src[:0], dst[:0])


def test_from_e3nn_parts():
    """Layers composed of e3nn parts load into ours with their weights and give the same
    results; a product with other instructions is refused."""
    torch.manual_seed(5)
    ir_in, sh, ir_out = "4x0e+2x1o", "0e+1o+2e", "3x0e+2x1o+2x1e"
    with default_dtype(torch.float64):
        mid, ins = equiops.nn.channelwise_instructions(ir_in, sh, ir_out, layout="mace")
        tp = o3.TensorProduct(ir_in, sh, str(mid), ins, shared_weights=False, internal_weights=False)
        fc = e3nn_nn.FullyConnectedNet([6, 16, tp.weight_numel], torch.nn.functional.silu)
        lin, si = o3.Linear(str(mid), ir_out), o3.Linear(ir_in, ir_out)
    ours = TFNConv.from_e3nn(tp, fc, lin, si, r_max=2.5, avg_num_neighbors=4.0)
    pos, src, dst = _graph(9, 7, self_loops=False)
    x = torch.randn(9, ours.irreps_in.dim, dtype=torch.float64)
    vec = pos[src] - pos[dst]
    w = fc(ours.conv.radial_embedding(vec.norm(dim=-1)))
    msg = tp(x[src], o3.spherical_harmonics(sh, vec, normalize=True, normalization="component"), w)
    want = lin(torch.zeros(9, msg.shape[1], dtype=torch.float64).index_add_(0, dst, msg) / 2.0) + si(x)
    assert _rel(ours(x, pos, src, dst), want) < 1e-10
    # NequIP's block from its e3nn parts.
    with default_dtype(torch.float64):
        mid_n, ins_n = equiops.nn.channelwise_instructions(ir_in, sh, ir_out, layout="nequip")
        tp_n = o3.TensorProduct(ir_in, sh, str(mid_n), ins_n, shared_weights=False, internal_weights=False)
        fc_n = e3nn_nn.FullyConnectedNet([6, 8, tp_n.weight_numel], torch.nn.functional.silu)
        l1, l2 = o3.Linear(ir_in, ir_in), o3.Linear(str(mid_n), ir_out)
        sc = o3.FullyConnectedTensorProduct(ir_in, "2x0e", ir_out)
    block = InteractionBlock.from_e3nn(l1, tp_n, fc_n, l2, sc, r_max=2.5, avg_num_neighbors=4.0)
    attr = torch.nn.functional.one_hot(torch.arange(9) % 2, 2).double()
    h = l1(x)
    w = fc_n(block.conv.radial_embedding(vec.norm(dim=-1)))
    msg = tp_n(h[src], o3.spherical_harmonics(sh, vec, normalize=True, normalization="component"), w)
    want = l2(torch.zeros(9, msg.shape[1], dtype=torch.float64).index_add_(0, dst, msg) / 2.0) + sc(x, attr)
    assert _rel(block(x, attr, pos, src, dst), want) < 1e-10
    # A product in another layout (NequIP's order into TFNConv) is refused.
    if [tuple(i[:5]) for i in ins_n] != [tuple(i[:5]) for i in ins]:
        with pytest.raises(ValueError, match="channel-wise"):
            TFNConv.from_e3nn(tp_n, fc_n, lin, si, r_max=2.5, avg_num_neighbors=4.0)
