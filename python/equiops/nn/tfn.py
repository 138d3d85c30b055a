r"""Tensor Field Network and NequIP-style layers on equiops' fused kernels.

Edge convention (every layer here): edge ``e`` sends from ``edge_src[e]`` to
``edge_dst[e]``; its vector is ``pos[edge_src] - pos[edge_dst]`` (from the receiver to the
sender, as in e3nn's point convolution and NequIP, where the centre ``i`` receives from its
neighbour ``j`` along ``r_j - r_i``), its filter
``W(r) = R(|r|) Y(r / |r|)``: radial weights from a Bessel basis times a smooth polynomial
cutoff through an MLP, real spherical harmonics (e3nn's, ``"component"`` normalization).
Messages are summed at the receivers by :class:`equiops.TensorProductConv` (no per-edge
message tensor), divided by ``sqrt(avg_num_neighbors)``.

* :class:`TFNConv`: ``self_interaction(x) + linear(conv(x, Y, R)) / sqrt(avg)``.
* :class:`InteractionBlock`: NequIP's: ``linear_1``, the channel-wise convolution (NequIP's
  instruction order), ``linear_2``, and a self-connection ``FullyConnectedTensorProduct(x,
  node_attr)``.
* :class:`TensorFieldNetwork`: one-hot species, ``TFNConv`` + :class:`Gate` layers, a linear
  readout to per-atom energies summed per structure.

Zero-length edges (self-loops, duplicated atoms) give finite values and derivatives: the
Bessel basis has its finite limit at ``r = 0`` and the harmonics of a zero vector are finite
(``equiops.spherical_harmonics``); with a cutoff the edge's weight is the cutoff's value.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import backend as _backend
from ..graph import Graph
from ..harmonics import spherical_harmonics
from ..irreps import Irrep, Irreps
from ._checks import check_like, first_parameter
from .gate import Gate
from .linear import Linear
from .radial import BesselBasis, PolynomialCutoff, RadialMLP
from .tensor_product import FullyConnectedTensorProduct, channelwise_instructions
from .tp_conv import TensorProductConv

__all__ = ["RadialEmbedding", "TFNConv", "InteractionBlock", "TensorFieldNetwork"]


def _sh_irreps(irreps_sh) -> Irreps:
    if isinstance(irreps_sh, int):
        if irreps_sh < 0:
            raise ValueError(f"irreps_sh as a degree must be >= 0, got {irreps_sh}")
        return Irreps.spherical_harmonics(irreps_sh)
    return Irreps(irreps_sh)


def edge_vectors(pos: Tensor, edge_src: Tensor, edge_dst: Tensor, where: str) -> Tensor:
    """``pos[edge_src] - pos[edge_dst]`` with the shapes checked."""
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"{where}: pos must have shape (num_nodes, 3), got {getattr(pos, 'shape', type(pos))}")
    if not pos.is_floating_point():
        raise TypeError(f"{where}: pos must be a floating-point tensor, got {pos.dtype}")
    for name, t in (("edge_src", edge_src), ("edge_dst", edge_dst)):
        if not isinstance(t, Tensor) or t.dim() != 1 or t.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{where}: {name} must be a 1-D int64 tensor, got "
                             f"{getattr(t, 'dtype', type(t).__name__)} of shape {tuple(getattr(t, 'shape', ()))}")
        if t.device != pos.device:
            raise ValueError(f"{where}: {name} must be on pos' device {pos.device}, got {t.device}")
    if edge_src.shape != edge_dst.shape:
        raise ValueError(f"{where}: edge_src and edge_dst must have the same length (one entry per edge), "
                         f"got {edge_src.shape[0]} and {edge_dst.shape[0]}")
    n = pos.shape[0]
    # Not while compiling (data-dependent); the convolution checks its indices again.
    if not _backend.tracing() and edge_src.numel():
        for name, t in (("edge_src", edge_src), ("edge_dst", edge_dst)):
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= n:
                raise IndexError(f"{where}: {name} must hold node indices in [0, {n}) (num_nodes = pos.shape[0]), "
                                 f"got values in [{lo}, {hi}]")
    return pos.index_select(0, edge_src.long()) - pos.index_select(0, edge_dst.long())


def _check_like_module(module: torch.nn.Module, where: str, **tensors: Tensor) -> None:
    """Floating tensors in the dtype and on the device of ``module``'s parameters."""
    check_like(where, first_parameter(module), **tensors)


def _from_e3nn_edge(tp, fc, irreps_filter, layout: str, where: str):
    """Checks an e3nn channel-wise ``TensorProduct`` and ``FullyConnectedNet`` against the
    convolution ``_EdgeConv`` would build; returns (irreps_in, irreps_sh, radial kwargs)."""
    irreps_in, irreps_sh = Irreps(str(tp.irreps_in1)), Irreps(str(tp.irreps_in2))
    mid, ins = channelwise_instructions(irreps_in, irreps_sh, irreps_filter, layout=layout)
    theirs = [tuple(i[:5]) for i in tp.instructions]
    if Irreps(str(tp.irreps_out)) != mid or theirs != [tuple(i[:5]) for i in ins]:
        raise ValueError(f"{where}: the e3nn TensorProduct is not the channel-wise ('{layout}' layout) product this "
                         f"layer builds: expected irreps_out {mid} and instructions {ins}, got {tp.irreps_out} and "
                         f"{theirs}")
    if tp.shared_weights or tp.internal_weights:
        raise ValueError(f"{where}: the e3nn TensorProduct must take per-edge weights (shared_weights=False)")
    hs = list(fc.hs)
    if hs[-1] != tp.weight_numel:
        raise ValueError(f"{where}: the radial network outputs {hs[-1]} weights, the product needs {tp.weight_numel}")
    layer0 = getattr(fc, "layer0", None)
    act = getattr(getattr(layer0, "act", None), "f", None)
    if len(hs) > 2 and act is None:
        raise ValueError(f"{where}: cannot read the radial network's activation")
    return irreps_in, irreps_sh, {"num_basis": hs[0], "radial_neurons": tuple(hs[1:-1]),
                                  "radial_act": act if act is not None else torch.nn.functional.silu}


def _named_errors(init):
    """Constructor errors (``ValueError`` / ``TypeError`` from the parts it builds: irreps,
    radial basis, MLP) re-raised with the layer's name in front."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except (ValueError, TypeError) as e:
            where = type(self).__name__
            if type(e) in (ValueError, TypeError) and not str(e).startswith(where + ":"):
                raise type(e)(f"{where}: {e}") from None
            raise

    return wrapper


class RadialEmbedding(torch.nn.Module):
    """``|r| -> bessel(|r|) * cutoff(|r|)``: NequIP's edge length embedding ``(E,) -> (E, num_basis)``."""

    def __init__(self, r_max: float, num_basis: int = 8, cutoff_p: float = 6, trainable: bool = True) -> None:
        super().__init__()
        self.basis = BesselBasis(r_max, num_basis, trainable=trainable)
        self.cutoff = PolynomialCutoff(r_max, cutoff_p)
        self.num_basis = int(num_basis)

    def forward(self, length: Tensor) -> Tensor:
        return self.basis(length) * self.cutoff(length).unsqueeze(-1)


class _EdgeConv(torch.nn.Module):
    """Harmonics, radial weights and the fused channel-wise convolution of one layer."""

    def __init__(self, irreps_in, irreps_sh, filter_out, *, layout, r_max, num_basis, radial_neurons, radial_act,
                 cutoff_p, avg_num_neighbors, backend) -> None:
        super().__init__()
        if not (isinstance(avg_num_neighbors, (int, float)) and avg_num_neighbors > 0):
            raise ValueError(f"avg_num_neighbors must be a number > 0, got {avg_num_neighbors!r}")
        self.irreps_sh = _sh_irreps(irreps_sh)
        radial_neurons = tuple(radial_neurons)
        for i, h in enumerate(radial_neurons):
            if isinstance(h, bool) or not isinstance(h, int) or h < 1:
                raise ValueError(f"radial_neurons[{i}] must be an int >= 1, got {h!r}")
        irreps_mid, ins = channelwise_instructions(irreps_in, self.irreps_sh, filter_out, layout=layout)
        if len(ins) == 0:
            raise ValueError(f"no path: irreps_in={irreps_in} x irreps_sh={self.irreps_sh} reaches no irrep of "
                             f"irreps_out={filter_out}")
        self.conv = TensorProductConv(irreps_in, self.irreps_sh, irreps_mid, ins, shared_weights=False,
                                      internal_weights=False, backend=backend)
        self.irreps_mid = self.conv.irreps_out
        self.radial_embedding = RadialEmbedding(r_max, num_basis, cutoff_p)
        self.radial = RadialMLP([num_basis, *radial_neurons, self.conv.weight_numel], radial_act)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.backend = backend

    def forward(self, x: Tensor, edge_vec: Tensor, edge_src: Tensor, edge_dst: Tensor, graph: Optional[Graph]) -> Tensor:
        sh = spherical_harmonics(self.irreps_sh, edge_vec, True, "component", backend=self.backend)
        weight = self.radial(self.radial_embedding(edge_vec.norm(dim=-1)))
        # The sum is linear in x: scaling the (num_nodes, in) features costs less than the
        # (num_nodes, out) sums.
        return self.conv(x * (1.0 / math.sqrt(self.avg_num_neighbors)), sh, weight, edge_src, edge_dst, x.shape[0],
                         graph=graph)


class TFNConv(torch.nn.Module):
    r"""Tensor Field Network point convolution.

    ``out = self_interaction(x) + linear(conv(x, Y(r), R(|r|))) / sqrt(avg_num_neighbors)``
    with the channel-wise convolution of ``irreps_in`` and the harmonics ``irreps_sh`` filtered
    to the irreps of ``irreps_out`` (edge convention: the module docstring).

    Args:
        irreps_in, irreps_out: node features in and out.
        irreps_sh: the harmonics (irreps, or a degree ``l_max``: ``0e + 1o + ... + l_max``).
        r_max: cutoff radius (> 0); num_basis: Bessel functions; cutoff_p: the polynomial
            envelope's degree; radial_neurons: hidden widths of the radial MLP (activation
            ``radial_act``, default SiLU, normalised as e3nn does).
        avg_num_neighbors: the sum over neighbours is divided by its square root.
        self_interaction: add ``Linear(irreps_in, irreps_out)(x)`` (TFN's self-interaction).

    ``forward(x, pos, edge_src, edge_dst, graph=None)``: ``x (num_nodes, irreps_in.dim)``,
    ``pos (num_nodes, 3)``; returns ``(num_nodes, irreps_out.dim)``. Submodules: ``conv``
    (``radial_embedding``, ``radial``, ``conv.conv``), ``linear``, ``self_interaction``.
    """

    @_named_errors
    def __init__(self, irreps_in, irreps_out, irreps_sh: Union[int, str, Irreps] = 2, *, r_max: float = 5.0,
                 num_basis: int = 8, cutoff_p: float = 6, radial_neurons: Sequence[int] = (64,),
                 radial_act: Callable[[Tensor], Tensor] = torch.nn.functional.silu, avg_num_neighbors: float = 1.0,
                 self_interaction: bool = True, backend: Optional[str] = None) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self.conv = _EdgeConv(self.irreps_in, irreps_sh, self.irreps_out, layout="mace", r_max=r_max,
                              num_basis=num_basis, radial_neurons=radial_neurons, radial_act=radial_act,
                              cutoff_p=cutoff_p, avg_num_neighbors=avg_num_neighbors, backend=backend)
        self.linear = Linear(self.conv.irreps_mid, self.irreps_out)
        self.self_interaction = Linear(self.irreps_in, self.irreps_out) if self_interaction else None

    @classmethod
    def from_e3nn(cls, tp, fc, linear, self_interaction=None, *, r_max: float, avg_num_neighbors: float,
                  cutoff_p: float = 6, backend: Optional[str] = None) -> "TFNConv":
        """The layer composed of e3nn parts, with their weights: ``tp`` an
        ``o3.TensorProduct`` with this layer's channel-wise instructions (MACE's sorted
        layout) and per-edge weights, ``fc`` the ``nn.FullyConnectedNet`` radial network,
        ``linear`` the ``o3.Linear`` after the sum, ``self_interaction`` an ``o3.Linear``
        (or None). The radial embedding (Bessel basis x polynomial cutoff, ``r_max``,
        ``cutoff_p``) has no e3nn counterpart and starts at its defaults."""
        irreps_out = Irreps(str(linear.irreps_out))
        irreps_in, irreps_sh, radial = _from_e3nn_edge(tp, fc, irreps_out, "mace", "TFNConv.from_e3nn")
        ours = cls(irreps_in, irreps_out, irreps_sh, r_max=r_max, cutoff_p=cutoff_p,
                   avg_num_neighbors=avg_num_neighbors, self_interaction=self_interaction is not None,
                   backend=backend, **radial)
        ours.to(next(linear.parameters()).dtype)  # before loading: no rounding through float32
        ours.conv.radial.load_state_dict(fc.state_dict())
        ours.linear.load_state_dict(linear.state_dict())
        if self_interaction is not None:
            ours.self_interaction.load_state_dict(self_interaction.state_dict())
        return ours

    def forward(self, x: Tensor, pos: Tensor, edge_src: Tensor, edge_dst: Tensor, graph: Optional[Graph] = None) -> Tensor:
        where = type(self).__name__
        _check_like_module(self, where, x=x, pos=pos)
        if x.dim() != 2 or x.shape[1] != self.irreps_in.dim or x.shape[0] != pos.shape[0]:
            raise ValueError(f"{where}: x must have shape (num_nodes, {self.irreps_in.dim}) with num_nodes = "
                             f"pos.shape[0] = {pos.shape[0]}, got {tuple(x.shape)}")
        vec = edge_vectors(pos, edge_src, edge_dst, where)
        out = self.linear(self.conv(x, vec, edge_src, edge_dst, graph))
        if self.self_interaction is not None:
            out = out + self.self_interaction(x)
        return out


class InteractionBlock(torch.nn.Module):
    r"""NequIP's interaction block on the fused convolution.

    ``out = sc(x, node_attr) + linear_2(conv(linear_1(x), Y, R)) / sqrt(avg_num_neighbors)``
    with ``sc = FullyConnectedTensorProduct(irreps_in, irreps_node_attr, irreps_out)`` (the
    self-connection; ``use_sc=False`` drops it), the channel-wise convolution with NequIP's
    instruction and weight order (``layout="nequip"``). Arguments as :class:`TFNConv`, plus
    ``irreps_node_attr`` (e.g. the one-hot species ``"Nx0e"``).

    ``forward(x, node_attr, pos, edge_src, edge_dst, graph=None)``.
    """

    @_named_errors
    def __init__(self, irreps_in, irreps_out, irreps_node_attr, irreps_sh: Union[int, str, Irreps] = 2, *,
                 r_max: float = 5.0, num_basis: int = 8, cutoff_p: float = 6, radial_neurons: Sequence[int] = (64,),
                 radial_act: Callable[[Tensor], Tensor] = torch.nn.functional.silu, avg_num_neighbors: float = 1.0,
                 use_sc: bool = True, backend: Optional[str] = None) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self.irreps_node_attr = Irreps(irreps_node_attr)
        self.linear_1 = Linear(self.irreps_in, self.irreps_in)
        self.conv = _EdgeConv(self.irreps_in, irreps_sh, self.irreps_out, layout="nequip", r_max=r_max,
                              num_basis=num_basis, radial_neurons=radial_neurons, radial_act=radial_act,
                              cutoff_p=cutoff_p, avg_num_neighbors=avg_num_neighbors, backend=backend)
        self.linear_2 = Linear(self.conv.irreps_mid, self.irreps_out)
        self.sc = (FullyConnectedTensorProduct(self.irreps_in, self.irreps_node_attr, self.irreps_out, backend=backend)
                   if use_sc else None)

    @classmethod
    def from_e3nn(cls, linear_1, tp, fc, linear_2, sc=None, *, r_max: float, avg_num_neighbors: float,
                  cutoff_p: float = 6, backend: Optional[str] = None) -> "InteractionBlock":
        """The block composed of e3nn parts, with their weights (NequIP's order: ``linear_1``,
        the channel-wise ``tp`` in NequIP's instruction order with per-edge weights from
        ``fc``, ``linear_2``, and the self-connection ``sc``, an
        ``o3.FullyConnectedTensorProduct(irreps_in, irreps_node_attr, irreps_out)`` or None)."""
        irreps_out = Irreps(str(linear_2.irreps_out))
        irreps_in, irreps_sh, radial = _from_e3nn_edge(tp, fc, irreps_out, "nequip", "InteractionBlock.from_e3nn")
        node_attr = Irreps(str(sc.irreps_in2)) if sc is not None else Irreps("0e")
        ours = cls(irreps_in, irreps_out, node_attr, irreps_sh, r_max=r_max, cutoff_p=cutoff_p,
                   avg_num_neighbors=avg_num_neighbors, use_sc=sc is not None, backend=backend, **radial)
        ours.to(next(linear_2.parameters()).dtype)  # before loading: no rounding through float32
        ours.linear_1.load_state_dict(linear_1.state_dict())
        ours.conv.radial.load_state_dict(fc.state_dict())
        ours.linear_2.load_state_dict(linear_2.state_dict())
        if sc is not None:
            ours.sc.load_state_dict(sc.state_dict())
        return ours

    def forward(self, x: Tensor, node_attr: Tensor, pos: Tensor, edge_src: Tensor, edge_dst: Tensor,
                graph: Optional[Graph] = None) -> Tensor:
        where = type(self).__name__
        _check_like_module(self, where, x=x, pos=pos)
        if x.dim() != 2 or x.shape[1] != self.irreps_in.dim or x.shape[0] != pos.shape[0]:
            raise ValueError(f"{where}: x must have shape (num_nodes, {self.irreps_in.dim}) with num_nodes = "
                             f"pos.shape[0] = {pos.shape[0]}, got {tuple(x.shape)}")
        vec = edge_vectors(pos, edge_src, edge_dst, where)
        out = self.linear_2(self.conv(self.linear_1(x), vec, edge_src, edge_dst, graph))
        if self.sc is not None:
            out = out + self.sc(x, node_attr)
        return out


def _gate_irreps(irreps_hidden: Irreps):
    """(scalars, gates, gated) such that Gate(...) outputs ``irreps_hidden``: its scalars pass
    through SiLU (even) / tanh (odd), every non-scalar channel gets one even gate."""
    scalars = Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
    gated = Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
    gates = Irreps([(gated.num_irreps, Irrep("0e"))]) if gated.num_irreps > 0 else Irreps("")
    return scalars, gates, gated


class TensorFieldNetwork(torch.nn.Module):
    r"""A Tensor Field Network for per-structure energies (and forces by autograd).

    One-hot species (``num_species x 0e``) -> ``num_layers`` x [:class:`TFNConv` to the
    gate's input irreps -> :class:`Gate` (SiLU / tanh on scalars, sigmoid gates)] ->
    ``Linear(irreps_hidden, "1x0e")`` per-atom energies, summed per structure.

    Args: ``num_species``; ``irreps_hidden`` (its scalars must include a ``0e``);
    ``irreps_sh`` (irreps or ``l_max``); ``num_layers``; the radial arguments of
    :class:`TFNConv`; ``avg_num_neighbors``.

    ``forward(pos, species, edge_src, edge_dst, batch=None, num_graphs=None, graph=None)``:
    ``pos (N, 3)``, ``species (N,)`` int in ``[0, num_species)``, ``batch (N,)`` the structure
    of each atom (default: one structure); returns energies ``(num_graphs,)``. Forces:
    ``-torch.autograd.grad(E.sum(), pos, create_graph=training)[0]``.
    """

    @_named_errors
    def __init__(self, num_species: int, irreps_hidden="16x0e+8x1o+8x1e", irreps_sh: Union[int, str, Irreps] = 2, *,
                 num_layers: int = 3, r_max: float = 5.0, num_basis: int = 8, cutoff_p: float = 6,
                 radial_neurons: Sequence[int] = (32,), avg_num_neighbors: float = 1.0,
                 backend: Optional[str] = None) -> None:
        super().__init__()
        if not isinstance(num_species, int) or num_species < 1:
            raise ValueError(f"num_species must be an int >= 1, got {num_species!r}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        self.num_species = num_species
        self.irreps_hidden = Irreps(irreps_hidden)
        scalars, gates, gated = _gate_irreps(self.irreps_hidden)
        if not any(ir == Irrep("0e") for _, ir in scalars):
            raise ValueError(f"irreps_hidden must contain 0e scalars (the energy readout), got {self.irreps_hidden}")
        acts = {1: torch.nn.functional.silu, -1: torch.tanh}
        irreps = Irreps(f"{num_species}x0e")
        self.layers = torch.nn.ModuleList()
        self.gates = torch.nn.ModuleList()
        for _ in range(num_layers):
            gate = Gate(scalars, [acts[ir.p] for _, ir in scalars], gates, [torch.sigmoid] * len(gates), gated)
            self.layers.append(TFNConv(irreps, gate.irreps_in, irreps_sh, r_max=r_max, num_basis=num_basis,
                                       cutoff_p=cutoff_p, radial_neurons=radial_neurons,
                                       avg_num_neighbors=avg_num_neighbors, backend=backend))
            self.gates.append(gate)
            irreps = gate.irreps_out
        self.readout = Linear(irreps, "1x0e")

    def forward(self, pos: Tensor, species: Tensor, edge_src: Tensor, edge_dst: Tensor, batch: Optional[Tensor] = None,
                num_graphs: Optional[int] = None, graph: Optional[Graph] = None) -> Tensor:
        where = type(self).__name__
        _check_like_module(self, where, pos=pos)
        if not isinstance(species, Tensor) or species.dim() != 1 or species.shape[0] != pos.shape[0]:
            raise ValueError(f"{where}: species must have shape (num_nodes,) = ({pos.shape[0]},), got "
                             f"{getattr(species, 'shape', type(species))}")
        if species.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{where}: species must be an integer tensor, got {species.dtype}")
        if not _backend.tracing() and species.numel():
            lo, hi = int(species.min()), int(species.max())
            if lo < 0 or hi >= self.num_species:
                raise IndexError(f"{where}: species holds {lo if lo < 0 else hi}, expected [0, {self.num_species})")
        if num_graphs is not None and (isinstance(num_graphs, bool) or not isinstance(num_graphs, int) or num_graphs < 0):
            raise ValueError(f"{where}: num_graphs must be an int >= 0 or None, got {num_graphs!r}")
        if batch is not None:
            if not isinstance(batch, Tensor) or batch.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"{where}: batch must be an int64 tensor, got {getattr(batch, 'dtype', type(batch).__name__)}")
            if batch.shape != species.shape:
                raise ValueError(f"{where}: batch must have shape (num_nodes,) = ({pos.shape[0]},), got {tuple(batch.shape)}")
            if batch.device != pos.device:
                raise ValueError(f"{where}: batch must be on pos' device {pos.device}, got {batch.device}")
            if not _backend.tracing() and batch.numel():
                lo, hi = int(batch.min()), int(batch.max())
                if lo < 0 or (num_graphs is not None and hi >= num_graphs):
                    raise IndexError(f"{where}: batch must hold structure indices in [0, "
                                     f"{num_graphs if num_graphs is not None else 'num_graphs'}), got values in [{lo}, {hi}]")
        x = torch.nn.functional.one_hot(species.long(), self.num_species).to(pos.dtype)
        for conv, gate in zip(self.layers, self.gates):
            x = gate(conv(x, pos, edge_src, edge_dst, graph))
        atom_energy = self.readout(x).squeeze(-1)
        if batch is None:
            return atom_energy.sum().reshape(1)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        return atom_energy.new_zeros(num_graphs).index_add_(0, batch.long(), atom_energy)
