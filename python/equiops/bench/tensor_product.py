"""Tensor-product benchmark problems and baselines (``../shared/design/BENCHMARKS.md``).

Problems: the field's public configurations. Channel-wise ("uvu", MACE's sorted output
layout, one weight row per row of the batch): mace-large, mace-medium, nequip-lips,
nequip-benzene, nequip-water, sevennet-first. Fully connected ("uvw"): diffdock-l2
(per-row weights) and tetris-poly-1 (shared weights). Rows: 10,000 on the CPU (the
issue's CPU goal; BENCHMARKS.md says 5,000-20,000 there), 50,000 on a GPU (the
field's default); 1,000 with ``quick`` (10,000 on a GPU).

Passes, each timed as one call from the inputs:

* ``forward``: ``out = TP(x, y, w)``.
* ``backward`` (rows named ``... fwd+bwd``): forward, then the gradients of
  ``<out, g>`` with respect to every input (``x``, ``y`` and the weights).
* ``force`` (the double backward of force training): forward, ``dy = d<out, g>/dy``
  with ``create_graph``, then the gradients of ``<dy, v>`` with respect to every input.
  The product is linear in ``y``, so that last gradient is zero for ``y``: it is
  materialized as zeros (``materialize_grads``) on every side alike.

Candidates: equiops (``backend`` as given; with ``auto`` on a GPU also each named GPU
backend that ``auto`` does not pick), ``e3nn.o3.TensorProduct`` eager (the same
instructions, the same weights passed in), and on CUDA e3nn under ``torch.compile``
(not for the double backward, which PyTorch cannot compile), cuEquivariance's
``ChannelWiseTensorProduct`` / ``FullyConnectedTensorProduct`` and OpenEquivariance's
``TensorProduct``, when importable. A baseline that fails to build or to run is
reported with the reason (no time), never fatal.

Checks, before anything is timed: every candidate in float64 at ``CHECK_ROWS`` rows
against e3nn's float64 results (or, without e3nn, equiops' plain-PyTorch reference),
to 1e-10 of each result's largest magnitude; then at the timed size and dtype against
e3nn eager (that call is also the warm-up). Under ``torch.compile`` e3nn is checked at
the timed size only. Baselines whose layouts differ from e3nn's (cuEquivariance's
weight and output block order, OpenEquivariance's weight order) get their inputs
permuted once before timing and are checked against the reference in their layout.

Throughput: FLOPs from the CG nonzeros (:meth:`equiops.tp_problem.TPProblem.flops_per_row`,
the forward); the ``fwd+bwd`` call is counted as 2x and the ``force`` call as 3x the
forward's FLOPs -- nominal counts for the whole timed call (which also runs the
forward), so those rates are comparable between candidates, not exact. Bytes (forward
only): each input read once and the output written once.

CPU allocations: PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` (transparent huge pages for large
CPU tensors) changes the cost of fresh allocations a lot on some machines. It is read
when PyTorch starts, so it is never set here: export it before running to apply it to
every candidate alike; the JSON records whether it was set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import backend as _backend
from ..nn.tensor_product import ChannelWiseTensorProduct, FullyConnectedTensorProduct, TensorProduct
from ..tp_problem import decode
from . import optional_module

GROUPS = ("forward", "backward", "force")
SUFFIX = {"forward": "", "backward": " fwd+bwd", "force": " force"}
# Nominal FLOPs of each timed call as a multiple of the forward's (see the docstring).
FLOP_MULTIPLE = {"forward": 1, "backward": 2, "force": 3}

CPU_ROWS, GPU_ROWS = 10_000, 50_000
QUICK_CPU_ROWS, QUICK_GPU_ROWS = 1_000, 10_000
CHECK_ROWS = 24
CHECK_TOL_F64 = 1e-10
TIMED_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


@dataclass(frozen=True)
class Problem:
    name: str
    kind: str  # "channelwise" (uvu, MACE's sorted layout) or "fully_connected" (uvw)
    irreps_in1: str
    irreps_in2: str
    irreps_out: str  # the output filter for channel-wise products
    shared_weights: bool
    rows: int = 0

    @property
    def label(self) -> str:
        return f"{self.name} N={self.rows:.0e}".replace("e+0", "e")

    def with_rows(self, rows: int) -> "Problem":
        return dataclasses.replace(self, rows=rows)


PROBLEMS = (
    Problem("mace-large", "channelwise", "128x0e+128x1o+128x2e", "1x0e+1x1o+1x2e+1x3o",
            "128x0e+128x1o+128x2e+128x3o", False),
    Problem("mace-medium", "channelwise", "128x0e+128x1o", "1x0e+1x1o+1x2e+1x3o", "128x0e+128x1o+128x2e", False),
    Problem("nequip-lips", "channelwise", "32x0o+32x0e+32x1o+32x1e+32x2o+32x2e", "0e+1o+2e",
            "32x0o+32x0e+32x1o+32x1e+32x2o+32x2e", False),
    Problem("nequip-benzene", "channelwise", "64x0o+64x0e+64x1o+64x1e+64x2o+64x2e+64x3o+64x3e", "0e+1o+2e+3o",
            "64x0o+64x0e+64x1o+64x1e+64x2o+64x2e+64x3o+64x3e", False),
    Problem("nequip-water", "channelwise", "32x0o+32x0e+32x1o+32x1e", "0e+1o", "32x0o+32x0e+32x1o+32x1e", False),
    Problem("sevennet-first", "channelwise", "128x0e", "1x0e+1x1e+1x2e+1x3e", "128x0e+128x1e+128x2e+128x3e", False),
    Problem("diffdock-l2", "fully_connected", "10x1o+10x1e+48x0e+48x0o", "1x0e+1x1o+1x2e",
            "10x1o+10x1e+48x0e+48x0o", False),
    Problem("tetris-poly-1", "fully_connected", "1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e+1x3o",
            "64x0e+24x1e+24x1o+16x2e+16x2o", True),
)
NAMES = tuple(p.name for p in PROBLEMS)


def problems(quick: bool = False, device="cpu", names: Optional[Sequence[str]] = None) -> List[Problem]:
    """The problems (all, or those named) with the row count for the device."""
    gpu = torch.device(device).type == "cuda"
    rows = (QUICK_GPU_ROWS if gpu else QUICK_CPU_ROWS) if quick else (GPU_ROWS if gpu else CPU_ROWS)
    if names is not None:
        unknown = [n for n in names if n not in NAMES]
        if unknown:
            raise ValueError(f"unknown tensor-product problems {unknown}; choose from {NAMES}")
    return [p.with_rows(rows) for p in PROBLEMS if names is None or p.name in names]


# ----------------------------------------------------------------------------- modules
def equiops_module(problem: Problem, backend: Optional[str] = None) -> TensorProduct:
    """Our product, through the public API (weights passed in, never internal)."""
    if problem.kind == "channelwise":
        return ChannelWiseTensorProduct(problem.irreps_in1, problem.irreps_in2, problem.irreps_out, backend=backend)
    return FullyConnectedTensorProduct(
        problem.irreps_in1, problem.irreps_in2, problem.irreps_out,
        shared_weights=problem.shared_weights, internal_weights=False, backend=backend,
    )


def flops_per_row(problem: Problem) -> int:
    return decode(equiops_module(problem).problem).flops_per_row()


def flops(problem: Problem, group: str) -> int:
    """Nominal FLOPs of one timed call of ``group`` (see the module docstring)."""
    return FLOP_MULTIPLE[group] * flops_per_row(problem) * problem.rows


def bytes_moved(problem: Problem, dtype) -> int:
    """The forward: each input read once, the output written once."""
    m = equiops_module(problem)
    item = torch.empty((), dtype=dtype).element_size()
    w = m.weight_numel * (1 if problem.shared_weights else problem.rows)
    return item * (problem.rows * (m.irreps_in1.dim + m.irreps_in2.dim + m.irreps_out.dim) + w)


def e3nn_module(ours: TensorProduct):
    """``e3nn.o3.TensorProduct`` with our instructions (its own normalization, which
    the check compares), or None without e3nn; built in float64 (move it to the dtype
    wanted), so that its float64 results carry float64 constants."""
    o3 = optional_module("e3nn.o3")
    if o3 is None:
        return None
    ins = [(i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight) for i in ours.instructions]
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its CG constants in the default dtype
    try:
        return o3.TensorProduct(
            str(ours.irreps_in1), str(ours.irreps_in2), str(ours.irreps_out), ins,
            shared_weights=ours.shared_weights, internal_weights=False,
        )
    finally:
        torch.set_default_dtype(old)


@dataclass
class Candidate:
    """A product ``fn(x, y, w)`` in its own layout: it takes ``w[..., w_index]`` and its
    output is ours' ``out[..., out_index]`` (None: the same layout as e3nn's)."""

    fn: Callable
    w_index: Optional[torch.Tensor] = None
    out_index: Optional[torch.Tensor] = None
    kind: str = "baseline"  # "ours" or "baseline"
    checked_f64: bool = True  # False: checked at the timed size only (torch.compile)


def _blocks(irreps) -> List[Tuple[str, int, int]]:
    """(irrep, offset, size) of each block of an irreps (e3nn's mul_ir layout)."""
    out, off = [], 0
    for mul, ir in irreps:
        size = mul * ir.dim
        out.append((str(ir), off, size))
        off += size
    return out


def _cue_channelwise_layout(ours: TensorProduct, cue_out_irreps) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and output indices of cuEquivariance's channel-wise product in terms of
    ours. Both sort the output blocks by irrep, stably, from the same creation order,
    and both keep one weight block per output block; cuEquivariance's irrep order may
    differ from e3nn's, so blocks are matched by irrep, in order."""
    ours_out = _blocks(ours.irreps_out)
    w_off, offsets = 0, {}
    for ins in ours.instructions:
        n = 1
        for s in ins.path_shape:
            n *= s
        offsets[ins.i_out] = (w_off, n)
        w_off += n if ins.has_weight else 0
    queues: Dict[str, List[int]] = {}
    for j, (ir, _, _) in enumerate(ours_out):
        queues.setdefault(ir, []).append(j)
    out_index, w_index = [], []
    for mul, ir in cue_out_irreps:
        key = str(ir)
        if not queues.get(key):
            raise ValueError(f"cuEquivariance output block {mul}x{ir} has no match in {ours.irreps_out}")
        j = queues[key].pop(0)
        _, off, size = ours_out[j]
        if size != mul * ir.dim:
            raise ValueError(f"cuEquivariance output block {mul}x{ir} differs from ours ({size} values)")
        out_index.extend(range(off, off + size))
        wo, wn = offsets[j]
        if wn != mul:
            raise ValueError(f"cuEquivariance weight block of {mul}x{ir} differs from ours ({wn} weights)")
        w_index.extend(range(wo, wo + wn))
    return torch.tensor(w_index), torch.tensor(out_index)


def _cuequivariance(problem: Problem, ours: TensorProduct, device, dtype) -> Candidate:
    cue = optional_module("cuequivariance")
    cuet = optional_module("cuequivariance_torch")
    if cue is None or cuet is None:
        raise ImportError("cuequivariance / cuequivariance_torch are not importable")

    def irreps(s):
        return cue.Irreps("O3", str(s))

    common = dict(layout=cue.mul_ir, internal_weights=False, device=device, dtype=dtype, math_dtype=dtype)
    if problem.kind == "channelwise":
        mod = cuet.ChannelWiseTensorProduct(
            irreps(problem.irreps_in1), irreps(problem.irreps_in2), irreps(problem.irreps_out),
            shared_weights=False, **common,
        )
        w_index, out_index = _cue_channelwise_layout(ours, mod.irreps_out)
    else:
        # Paths in e3nn's order (loops over in1, in2, out), weights (u, v, w) row-major.
        mod = cuet.FullyConnectedTensorProduct(
            irreps(problem.irreps_in1), irreps(problem.irreps_in2), irreps(problem.irreps_out),
            shared_weights=problem.shared_weights, **common,
        )
        w_index = out_index = None
    if problem.shared_weights:
        return Candidate(lambda x, y, w: mod(x, y, w.reshape(1, -1)), w_index, out_index)
    return Candidate(mod, w_index, out_index)


def _openequivariance(problem: Problem, ours: TensorProduct, device, dtype) -> Candidate:
    oeq = optional_module("openequivariance")
    if oeq is None:
        raise ImportError("openequivariance is not importable")
    import numpy as np

    npdtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    ins = [(i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight) for i in ours.instructions]
    tpp = oeq.TPProblem(
        oeq.Irreps(str(ours.irreps_in1)), oeq.Irreps(str(ours.irreps_in2)), oeq.Irreps(str(ours.irreps_out)), ins,
        shared_weights=problem.shared_weights, internal_weights=False, irrep_dtype=npdtype, weight_dtype=npdtype,
    )
    mod = oeq.TensorProduct(tpp, torch_op=True)
    w_index = None
    if hasattr(mod, "reorder_weights_from_e3nn"):  # its weight order differs from e3nn's
        probe = torch.arange(ours.weight_numel, dtype=torch.float64)
        probe = probe if problem.shared_weights else probe[None]
        moved = mod.reorder_weights_from_e3nn(probe, not problem.shared_weights)
        w_index = torch.as_tensor(moved).reshape(-1).round().long().cpu()
    return Candidate(mod, w_index, None)


def our_variants(device, backend: str) -> Dict[str, str]:
    """{row name: backend}: ``backend`` as given, and with ``auto`` on a GPU each named
    GPU backend that is available and that ``auto`` does not pick."""
    variants = {"equiops": backend}
    if backend == "auto" and torch.device(device).type == "cuda":
        from .. import _extension

        picked = _backend.resolve("auto", torch.device(device), "tensor_product")
        for name in ("triton", "cuda"):
            usable = _extension.with_cuda() if name == "cuda" else _backend.triton_available()
            if name != picked and usable:
                variants[f"equiops {name}"] = name
    return variants


def build(problem: Problem, device, dtype, backend: str, compile_e3nn: bool, check_only: bool = False):
    """({name: Candidate}, {name: error}) for one problem: ours, e3nn and, on CUDA,
    e3nn compiled, cuEquivariance and OpenEquivariance. ``check_only`` leaves out the
    compiled baseline (it is checked at the timed size)."""
    device = torch.device(device)
    cands: Dict[str, Candidate] = {}
    errors: Dict[str, str] = {}
    ours = None
    for name, be in our_variants(device, backend).items():
        mod = equiops_module(problem, be).to(device)
        ours = mod if ours is None else ours
        cands[name] = Candidate(mod, kind="ours")
    try:
        e3 = e3nn_module(ours)
    except Exception as exc:  # noqa: BLE001 - a baseline's failure is reported, not fatal
        e3, errors["e3nn"] = None, f"{type(exc).__name__}: {exc}"
    if e3 is not None:
        e3 = e3.to(device=device, dtype=dtype)
        cands["e3nn"] = Candidate(e3)
        if compile_e3nn and not check_only:
            cands["e3nn compiled"] = Candidate(torch.compile(e3), checked_f64=False)
    if device.type == "cuda":
        for name, make in (("cuequivariance", _cuequivariance), ("openequivariance", _openequivariance)):
            try:
                cands[name] = make(problem, ours, device, dtype)
            except ImportError:
                pass  # not installed: no row
            except Exception as exc:  # noqa: BLE001
                errors[name] = f"{type(exc).__name__}: {exc}"
    return cands, errors


def reference_candidate(problem: Problem, device) -> Candidate:
    """Float64 reference: e3nn eager when installed, else equiops' plain-PyTorch reference."""
    ours = equiops_module(problem, "torch").to(device)
    e3 = e3nn_module(ours)
    return Candidate(e3.to(device=device, dtype=torch.float64) if e3 is not None else ours)


# ------------------------------------------------------------------------------ inputs
def make_inputs(problem: Problem, device, dtype, seed: int = 0) -> Dict[str, torch.Tensor]:
    """x, y, w (per-row or shared), the cotangent g of the output and v of dy."""
    m = equiops_module(problem)
    g = torch.Generator().manual_seed(seed)
    n = problem.rows

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    return {
        "x": randn(n, m.irreps_in1.dim),
        "y": randn(n, m.irreps_in2.dim),
        "w": randn(m.weight_numel) if problem.shared_weights else randn(n, m.weight_numel),
        "g": randn(n, m.irreps_out.dim),
        "v": randn(n, m.irreps_in2.dim),
    }


def passes(cand: Candidate, inputs: Dict[str, torch.Tensor], groups: Sequence[str] = GROUPS) -> Dict[str, Callable]:
    """{group: zero-argument callable} for one candidate; each returns a tuple of tensors
    in the candidate's layout (inputs permuted here, once, outside the timed call)."""
    x, y, w, g, v = (inputs[k] for k in ("x", "y", "w", "g", "v"))
    if cand.w_index is not None:
        w = w[..., cand.w_index.to(w.device)].contiguous()
    if cand.out_index is not None:
        g = g[..., cand.out_index.to(g.device)].contiguous()
    f = cand.fn
    leaves = tuple(t.detach().requires_grad_() for t in (x, y, w))
    xl, yl, wl = leaves

    def forward():
        return (f(x, y, w),)

    def backward():
        return torch.autograd.grad(f(xl, yl, wl), leaves, g)

    def force():
        (dy,) = torch.autograd.grad(f(xl, yl, wl), yl, g, create_graph=True)
        return torch.autograd.grad((dy * v).sum(), leaves, allow_unused=True, materialize_grads=True)

    fns = {"forward": forward, "backward": backward, "force": force}
    return {k: fns[k] for k in groups}


def in_layout(expected: Tuple[torch.Tensor, ...], group: str, cand: Candidate) -> Tuple[torch.Tensor, ...]:
    """The reference's results (e3nn's layout) in the candidate's layout."""
    if group == "forward":
        (out,) = expected
        return (out[..., cand.out_index.to(out.device)],) if cand.out_index is not None else expected
    gx, gy, gw = expected
    if cand.w_index is not None:
        gw = gw[..., cand.w_index.to(gw.device)]
    return gx, gy, gw


def agree(got: Tuple[torch.Tensor, ...], expected: Tuple[torch.Tensor, ...], tol: float) -> bool:
    """Max error of each result within ``tol`` of its largest expected magnitude (of the
    largest over all results where a result is zero: the force pass's y gradient)."""
    if len(got) != len(expected):
        return False
    exp = [e.detach().double().cpu() for e in expected]
    overall = max(float(e.abs().max()) if e.numel() else 0.0 for e in exp)
    for a, e in zip(got, exp):
        a = a.detach().double().cpu()
        if a.shape != e.shape or not bool(torch.isfinite(a).all()):
            return False
        if a.numel() == 0:
            continue
        scale = float(e.abs().max()) or overall or 1.0
        if float((a - e).abs().max()) > tol * scale:
            return False
    return True
