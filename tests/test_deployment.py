"""Deployment routes: torch.export of a TFN and an EGNN model, energy-and-forces programs
(the backward traced into the graph), an AOTInductor package of a TFN energy-and-forces
model run from a fresh process that loads only the compiled kernels (what a molecular-
dynamics code does), exported programs saved and loaded in a fresh process, and
TorchScript (``torch.jit.script`` of the raw operators, which is what the ops allow: the
Python modules use dataclasses, closures and ``Irreps`` objects that TorchScript cannot
compile; ``torch.jit.trace`` bakes some sizes into the trace, so neither TorchScript route
serves the modules: ``torch.export`` / AOTInductor do).

Every exported artefact is run at sizes other than the example's (dynamic atom and edge
counts) and compared with the eager model in float64."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import equiops
import equiops.export as eqexport
from equiops.nn import EGNN, TensorFieldNetwork

from conftest import assert_close

pytestmark = pytest.mark.slow


def _structure(n: int, seed: int, species: int = 3, cutoff: float = 3.5):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * 4.0
    spec = torch.randint(0, species, (n,), generator=g)
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    d = (pos[:, None] - pos[None]).norm(dim=-1)
    keep = (src != dst) & (d < cutoff)
    return pos, spec, src[keep].contiguous(), dst[keep].contiguous()


def _tfn():
    torch.manual_seed(0)
    return TensorFieldNetwork(3, "8x0e+4x1o+4x1e", 2, num_layers=2, r_max=3.5, avg_num_neighbors=6.0).double().eval()


def _eager_energy_forces(model, pos, *rest):
    pos = pos.detach().requires_grad_(True)
    energy = model(pos, *rest)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    return energy.detach(), -grad


def _run_fresh(script: str, *args: str, timeout: int = 600) -> None:
    """Runs ``script`` in a new interpreter; a non-zero exit (a crash included) fails."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"fresh process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"


# A fresh process that never imports equiops' Python package: only the shared library
# with the operator schemas and CPU kernels, as a C++ host would dlopen it.
_LOAD_LIBRARY_ONLY = """
import sys, torch
torch.ops.load_library(sys.argv[1])
assert "equiops" not in sys.modules, "the loader must not need equiops' Python package"
"""


@pytest.fixture(scope="module")
def tfn_program():
    model = _tfn()
    return model, eqexport.export_energy_and_forces(model, _structure(11, seed=1))


@pytest.mark.parametrize("n", [2, 7, 19])
def test_energy_and_forces_program_matches_eager(tfn_program, n):
    model, program = tfn_program
    args = _structure(n, seed=n, cutoff=3.5 if n > 2 else 10.0)
    energy, forces = program.module()(*args)
    e_ref, f_ref = _eager_energy_forces(model, *args)
    assert_close(energy, e_ref)
    assert_close(forces, f_ref, order=1)
    # The backward is in the graph: our backward operators appear in it.
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("tp_conv_backward" in t for t in targets), sorted(targets)
    assert any("spherical_harmonics_backward" in t for t in targets), sorted(targets)


def test_aoti_tfn_energy_and_forces_in_fresh_process(tmp_path):
    """The done-when of issue 10: an AOTInductor package of a TFN energy-and-forces model
    loads in a fresh process (only the kernels' library loaded) and gives the eager
    model's energies and forces, at sizes other than the traced one."""
    model = _tfn()
    path = eqexport.package_energy_and_forces(model, _structure(11, seed=1), str(tmp_path / "tfn.pt2"))
    cases = [_structure(n, seed=100 + n) for n in (6, 23)]
    torch.save(cases, tmp_path / "inputs.pt")
    _run_fresh(_LOAD_LIBRARY_ONLY + """
runner = torch._inductor.aoti_load_package(sys.argv[2])
cases = torch.load(sys.argv[3])
torch.save([tuple(t.detach() for t in runner(*c)) for c in cases], sys.argv[4])
""", eqexport.library_path(), path, str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt"))
    outputs = torch.load(tmp_path / "outputs.pt")
    for (energy, forces), case in zip(outputs, cases):
        e_ref, f_ref = _eager_energy_forces(model, *case)
        assert_close(energy, e_ref)
        assert_close(forces, f_ref, order=1)
        assert forces.shape == case[0].shape


def test_export_tfn_saved_and_loaded_in_fresh_process(tmp_path):
    model = _tfn()
    atoms, edges = torch.export.Dim("atoms", min=2), torch.export.Dim("edges", min=2)
    program = torch.export.export(model, _structure(11, seed=1),
                                  dynamic_shapes=({0: atoms}, {0: atoms}, {0: edges}, {0: edges}))
    torch.export.save(program, tmp_path / "tfn_energy.pt2")
    cases = [_structure(n, seed=200 + n) for n in (5, 17)]
    torch.save(cases, tmp_path / "inputs.pt")
    _run_fresh(_LOAD_LIBRARY_ONLY + """
program = torch.export.load(sys.argv[2])
cases = torch.load(sys.argv[3])
torch.save([program.module()(*c) for c in cases], sys.argv[4])
""", eqexport.library_path(), str(tmp_path / "tfn_energy.pt2"), str(tmp_path / "inputs.pt"),
        str(tmp_path / "outputs.pt"))
    for energy, case in zip(torch.load(tmp_path / "outputs.pt"), cases):
        assert_close(energy, model(*case).detach())


class _EGNNEnergy(torch.nn.Module):
    """An EGNN as an energy model: summed invariant node outputs (forces by autograd)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.egnn = EGNN(in_node_nf=4, hidden_nf=16, out_node_nf=2, in_edge_nf=1, n_layers=2, attention=True,
                         normalize=True).double()

    def forward(self, pos, h, src, dst):
        edge_attr = (pos[src] - pos[dst]).pow(2).sum(-1, keepdim=True)
        h_out, _ = self.egnn(h, pos, [dst, src], edge_attr)
        return h_out.sum().reshape(1)


def _egnn_inputs(n: int, seed: int):
    pos, _, src, dst = _structure(n, seed)
    h = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return pos, h, src, dst


def test_export_egnn_forward_and_forces():
    model = _EGNNEnergy().eval()
    atoms, edges = torch.export.Dim("atoms", min=2), torch.export.Dim("edges", min=2)
    shapes = ({0: atoms}, {0: atoms}, {0: edges}, {0: edges})
    program = torch.export.export(model, _egnn_inputs(12, seed=3), dynamic_shapes=shapes)
    forces_program = eqexport.export_energy_and_forces(model, _egnn_inputs(12, seed=3))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("egnn_message" in t for t in targets), sorted(targets)
    for n in (6, 21):
        args = _egnn_inputs(n, seed=300 + n)
        assert_close(program.module()(*args), model(*args).detach())
        energy, forces = forces_program.module()(*args)
        e_ref, f_ref = _eager_energy_forces(model, *args)
        assert_close(energy, e_ref)
        assert_close(forces, f_ref, order=1)


def test_export_rejects_bad_example():
    with pytest.raises(ValueError, match=r"example_args\[0\] must be positions"):
        eqexport.export_energy_and_forces(_tfn(), (torch.zeros(4, 2, dtype=torch.float64),))
    with pytest.raises(TypeError, match="example_args must be a non-empty tuple"):
        eqexport.export_energy_and_forces(_tfn(), ())
    with pytest.raises(ValueError, match="package_path must end with .pt2"):
        eqexport.package_energy_and_forces(_tfn(), _structure(5, 0), "/tmp/x.zip")


# ------------------------------------------------------------------------ TorchScript
@torch.jit.script
def _scripted_message_passing(x: torch.Tensor, vec: torch.Tensor, table: torch.Tensor, src: torch.Tensor,
                              dst: torch.Tensor, indptr: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Raw operators from TorchScript: harmonics of the edge vectors times gathered
    features, summed per receiver (sorted edges, segment sum) and by scatter."""
    sh = torch.ops.equiops.spherical_harmonics(vec, table, [0, 1], True, "component", "cpu")
    msg = (x.index_select(0, src)[:, :, None] * sh[:, None, :]).reshape(src.shape[0], -1)
    by_segment = torch.ops.equiops.segment_sum(msg.unsqueeze(0), indptr.unsqueeze(0), None, "cpu")
    by_scatter = torch.ops.equiops.scatter_sum(msg.unsqueeze(0), dst.view(1, -1, 1).expand(1, -1, msg.shape[1]),
                                               num_nodes, "cpu")
    return torch.cat([by_segment, by_scatter], dim=-1).squeeze(0)


def test_jit_script_raw_ops_saved_and_loaded(tmp_path):
    from equiops.ops.spherical_harmonics import coupling_table

    n = 9
    pos, _, src, dst = _structure(n, seed=5)
    order = torch.argsort(dst, stable=True)
    src, dst = src[order], dst[order]
    indptr = torch.zeros(n + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=n), 0)
    x = torch.randn(n, 3, dtype=torch.float64)
    vec = pos[src] - pos[dst]
    args = (x, vec, coupling_table(1), src, dst, indptr, n)
    out = _scripted_message_passing(*args)
    sh = equiops.spherical_harmonics([0, 1], vec, normalize=True, normalization="component")
    msg = (x[src][:, :, None] * sh[:, None, :]).reshape(len(src), -1)
    expected = torch.zeros(n, msg.shape[1], dtype=torch.float64).index_add_(0, dst, msg)
    assert_close(out, torch.cat([expected, expected], dim=-1))
    _scripted_message_passing.save(str(tmp_path / "mp.pt"))
    torch.save(args, tmp_path / "args.pt")
    _run_fresh(_LOAD_LIBRARY_ONLY + """
fn = torch.jit.load(sys.argv[2])
torch.save(fn(*torch.load(sys.argv[3])), sys.argv[4])
""", eqexport.library_path(), str(tmp_path / "mp.pt"), str(tmp_path / "args.pt"), str(tmp_path / "out.pt"))
    assert torch.equal(torch.load(tmp_path / "out.pt"), out)


def test_modules_are_not_scriptable_with_a_pytorch_error():
    """Documented limit: the modules are Python (dataclasses, Irreps objects, closures);
    torch.jit.script refuses them with TorchScript's own compile error, never silently.
    (Use torch.export / AOTInductor, tested above.)"""
    with pytest.raises(Exception):  # TorchScript's frontend error; its type varies by construct
        torch.jit.script(_tfn())


# ------------------------------------------------------------------- imports
def test_import_without_the_extension_or_triton():
    """``import equiops`` works on a machine without the compiled kernels and without
    Triton: ``auto`` runs the references, a named kernel backend raises an error that says
    what is missing (no crash, no silent fallback)."""
    _run_fresh("""
import sys
sys.modules["equiops._C"] = None   # as if never built (ImportError on import)
sys.modules["triton"] = None       # as if not installed
import torch, equiops
assert not equiops._extension.available()
src = torch.randn(6, 2, dtype=torch.float64)
index = torch.tensor([0, 1, 0, 2, 2, 1])
expected = torch.zeros(3, 2, dtype=torch.float64).index_add_(0, index, src)
assert torch.equal(equiops.scatter(src, index, dim=0, dim_size=3), expected)
sh = equiops.spherical_harmonics([0, 1, 2], torch.randn(4, 3, dtype=torch.float64), normalize=True)
assert sh.shape == (4, 9)
try:
    equiops.scatter(src, index, dim=0, dim_size=3, backend="cpu")
except RuntimeError as err:
    assert "equiops._C" in str(err) and "not importable" in str(err), err
else:
    raise AssertionError("backend='cpu' without the extension must raise")
""")
