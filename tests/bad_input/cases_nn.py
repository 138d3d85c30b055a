"""Bad-input rows for the modules of equiops.nn (the TFN/NequIP layers, EGNN, the
egnn-pytorch drop-ins, LieConv/PointConv and their helpers).

Every module is built tiny in ``setup`` (a few channels, a few points) so that a row costs
milliseconds. Wrong devices: there is no GPU in CI, so a tensor on the ``meta`` device next
to the module's CPU parameters (or CPU tensors) stands for "the wrong device"; it must give
an error naming the argument, never a crash or a silent meta result. The tensor-product
modules (``equiops.nn.TensorProduct`` ... ``TensorProductConv``, ``from_e3nn``,
``replace_e3nn_tensor_products``) are the same objects as ``equiops.*``: their rows are in
``cases_core.py``.
"""

from __future__ import annotations

from .case import Case

CASES = []


def row(id, entry, kind, what, code, raises, match, setup="", xfail=""):
    CASES.append(Case(id=id, entry=entry, kind=kind, what=what, code=code, raises=raises, match=match,
                      setup=setup, xfail=xfail))


# --------------------------------------------------------------------------- Linear
E = "equiops.nn.Linear"
S = "from equiops.nn import Linear\nlin = Linear('2x0e+1x1o', '3x0e+1x1o')\n"
row("nn.Linear/irreps-invalid", E, "irreps", "irreps_in '2x0q' (unknown parity)",
    "Linear('2x0q', '1x0e')", ValueError, r"Linear: irreps_in is not a valid irreps.*2x0q", S)
row("nn.Linear/irreps-negative-mul", E, "irreps", "irreps_out '-2x0e'",
    "Linear('1x0e', '-2x0e')", ValueError, r"Linear: irreps_out is not a valid irreps.*-2x0e", S)
row("nn.Linear/f_in-zero", E, "value", "f_in=0", "Linear('1x0e', '1x0e', f_in=0, f_out=1)",
    ValueError, r"Linear: f_in must be a positive integer or None, got 0", S)
row("nn.Linear/f_in-without-f_out", E, "value", "f_in given, f_out not", "Linear('1x0e', '1x0e', f_in=2)",
    ValueError, r"f_in and f_out must be given together, got f_in=2, f_out=None", S)
row("nn.Linear/path_normalization-unknown", E, "option", "path_normalization='norm'",
    "Linear('1x0e', '1x0e', path_normalization='norm')", ValueError,
    r"path_normalization must be 'element' or 'path', got 'norm'", S)
row("nn.Linear/instruction-out-of-range", E, "index", "instruction (0, 3) with one output block",
    "Linear('1x0e', '1x0e', instructions=[(0, 3)])", ValueError, r"i_out=3 is not a valid index for irreps_out=1x0e", S)
row("nn.Linear/bias-on-vector", E, "irreps", "biases=[True] on a 1o output",
    "Linear('1x1o', '1x1o', biases=[True])", ValueError, r"biases\[0\] is True but irreps_out\[0\] = 1x1o is not 0e", S)
row("nn.Linear/backend-unknown", E, "option", "backend='nope'", "Linear('1x0e', '1x0e', backend='nope')",
    ValueError, r"backend must be one of .*got 'nope'", S)
row("nn.Linear/features-wrong-width", E, "shape", "features (4, 4) for irreps_in.dim 5",
    "lin(torch.ones(4, 4))", ValueError, r"Linear: features must have shape \(\.\.\., 5\).*got \(4, 4\)", S)
row("nn.Linear/features-int", E, "dtype", "int64 features", "lin(torch.ones(4, 5, dtype=torch.long))",
    TypeError, r"Linear: features must be a floating-point tensor, got torch.int64", S)
row("nn.Linear/features-float64", E, "dtype", "float64 features, float32 weights",
    "lin(torch.ones(4, 5, dtype=torch.float64))", TypeError,
    r"Linear: weight has dtype torch.float32 but features has torch.float64", S)
row("nn.Linear/features-meta", E, "device", "features on meta, weights on cpu",
    "lin(torch.ones(4, 5, device='meta'))", ValueError, r"Linear: weight is on cpu but features is on meta", S)
row("nn.Linear/weight-rows", E, "shape", "3 rows of external weights for 4 rows of features",
    "m = Linear('1x0e', '1x0e', shared_weights=False)\nm(torch.ones(4, 1), torch.ones(3, 1))", ValueError,
    r"weight has 3 rows of weights but features has 4 rows", S)

# ----------------------------------------------------------------- gate / activations
E = "equiops.nn.Gate"
S = ("from equiops.nn import Gate\n"
     "g = Gate('2x0e', [torch.relu], '1x0e', [torch.sigmoid], '1x1o')\n")
row("nn.Gate/irreps-invalid", E, "irreps", "irreps_scalars '2x0z'",
    "Gate('2x0z', [torch.relu], '1x0e', [torch.sigmoid], '1x1o')", ValueError,
    r"irreps_scalars must be irreps .*2x0z", S)
row("nn.Gate/gates-not-scalar", E, "irreps", "irreps_gates '1x1o'",
    "Gate('2x0e', [torch.relu], '1x1o', [torch.sigmoid], '1x1o')", ValueError,
    r"Gate scalars must be scalars, instead got irreps_gates = 1x1o", S)
row("nn.Gate/gates-vs-gated-count", E, "irreps", "2 gates for 1 gated irrep",
    "Gate('2x0e', [torch.relu], '2x0e', [torch.sigmoid], '1x1o')", ValueError,
    r"There are 1 irreps in irreps_gated, but a different number \(2\) of gate scalars", S)
row("nn.Gate/act-count", E, "value", "two activations for one scalar term",
    "Gate('2x0e', [torch.relu, torch.relu], '1x0e', [torch.sigmoid], '1x1o')", ValueError,
    r"Activation: Irreps in and number of activation functions does not match: irreps_in=2x0e has 1 terms, got 2", S)
row("nn.Gate/act-not-callable", E, "type", "act_scalars=[3]",
    "Gate('2x0e', [3], '1x0e', [torch.sigmoid], '1x1o')", ValueError, r"the activation must be callable, got 3", S)
row("nn.Gate/features-wrong-width", E, "shape", "features (4, 5) for irreps_in.dim 6", "g(torch.ones(4, 5))",
    ValueError, r"Gate: the last dimension of the input must be 6, got 5", S)
row("nn.Gate/features-int", E, "dtype", "int64 features", "g(torch.ones(4, 6, dtype=torch.long))",
    TypeError, r"Gate: features must be a floating-point tensor, got torch.int64", S)

E = "equiops.nn.Activation"
S = "from equiops.nn import Activation\na = Activation('2x0e+1x1o', [torch.relu, None])\n"
row("nn.Activation/non-scalar", E, "irreps", "an activation on 1x1o", "Activation('1x1o', [torch.relu])",
    ValueError, r"cannot apply an activation function to a non-scalar input \(1x1o", S)
row("nn.Activation/odd-parity", E, "irreps", "exp (neither even nor odd) on an odd scalar",
    "Activation('1x0o', [torch.exp])", ValueError, r"the parity is violated.*1x0o", S)
row("nn.Activation/features-wrong-width", E, "shape", "features (4, 2) for irreps_in.dim 5",
    "a(torch.ones(4, 2))", ValueError, r"Activation: features must have size 5 .*got shape \(4, 2\)", S)
row("nn.Activation/features-int", E, "dtype", "int64 features", "a(torch.ones(4, 5, dtype=torch.long))",
    TypeError, r"Activation: features must be a floating-point tensor, got torch.int64", S)

E = "equiops.nn.NormActivation"
S = ("from equiops.nn import NormActivation\n"
     "na = NormActivation('2x1o', torch.sigmoid, bias=True)\n")
row("nn.NormActivation/irreps-invalid", E, "irreps", "irreps_in '2x1'", "NormActivation('2x1', torch.sigmoid)",
    ValueError, r"irreps_in must be irreps .*2x1", S)
row("nn.NormActivation/epsilon-negative", E, "value", "epsilon=-1", "NormActivation('2x1o', torch.sigmoid, epsilon=-1.0)",
    ValueError, r"epsilon -1.0 is invalid, must be strictly positive", S)
row("nn.NormActivation/epsilon-without-normalize", E, "option", "epsilon with normalize=False",
    "NormActivation('2x1o', torch.sigmoid, normalize=False, epsilon=1e-3)", ValueError,
    r"epsilon and normalize = False don't make sense together", S)
row("nn.NormActivation/nonlinearity-not-callable", E, "type", "scalar_nonlinearity=3",
    "NormActivation('2x1o', 3)", ValueError, r"scalar_nonlinearity must be callable, got 3", S)
row("nn.NormActivation/features-wrong-width", E, "shape", "features (4, 5) for irreps_in.dim 6",
    "na(torch.ones(4, 5))", ValueError, r"NormActivation: the last dimension of the input must be 6, got 5", S)
row("nn.NormActivation/features-int", E, "dtype", "int64 features", "na(torch.ones(4, 6, dtype=torch.long))",
    TypeError, r"NormActivation: features must be a floating-point tensor, got torch.int64", S)
row("nn.NormActivation/features-meta", E, "device", "features on meta, biases on cpu",
    "na(torch.ones(4, 6, device='meta'))", ValueError,
    r"NormActivation: features must be on the device of biases \(cpu\), got meta", S)

# ------------------------------------------------------------------- radial functions
E = "equiops.nn.BesselBasis"
S = "from equiops.nn import BesselBasis\nb = BesselBasis(5.0, 4)\n"
row("nn.BesselBasis/r_max-zero", E, "value", "r_max=0", "BesselBasis(0.0)", ValueError,
    r"r_max must be a positive finite number, got r_max=0.0", S)
row("nn.BesselBasis/num_basis-negative", E, "value", "num_basis=-1", "BesselBasis(1.0, -1)", ValueError,
    r"num_basis must be an integer >= 1, got num_basis=-1", S)
row("nn.BesselBasis/r-int", E, "dtype", "int64 distances", "b(torch.ones(3, dtype=torch.long))", TypeError,
    r"BesselBasis: r must be a floating-point tensor, got torch.int64", S)
row("nn.BesselBasis/r-meta", E, "device", "distances on meta, weights on cpu", "b(torch.ones(3, device='meta'))",
    ValueError, r"BesselBasis: r must be on the device of the module's parameters \(cpu\), got meta", S)
row("nn.BesselBasis/r-list", E, "type", "a list of distances", "b([1.0, 2.0])", TypeError,
    r"BesselBasis: r must be a torch.Tensor, got list", S)

E = "equiops.nn.PolynomialCutoff"
S = "from equiops.nn import PolynomialCutoff\nc = PolynomialCutoff(5.0)\n"
row("nn.PolynomialCutoff/p-below-one", E, "value", "p=0", "PolynomialCutoff(5.0, p=0)", ValueError,
    r"p must be a number >= 1, got p=0", S)
row("nn.PolynomialCutoff/r_max-nan", E, "value", "r_max=nan", "PolynomialCutoff(float('nan'))", ValueError,
    r"r_max must be a positive finite number, got r_max=nan", S)
row("nn.PolynomialCutoff/r-int", E, "dtype", "int64 distances", "c(torch.ones(3, dtype=torch.long))", TypeError,
    r"PolynomialCutoff: r must be a floating-point tensor, got torch.int64", S)

E = "equiops.nn.CosineCutoff"
S = "from equiops.nn import CosineCutoff\nc = CosineCutoff(5.0)\n"
row("nn.CosineCutoff/r_max-negative", E, "value", "r_max=-1", "CosineCutoff(-1)", ValueError,
    r"r_max must be a positive finite number, got r_max=-1", S)
row("nn.CosineCutoff/r-int", E, "dtype", "int64 distances", "c(torch.ones(3, dtype=torch.long))", TypeError,
    r"CosineCutoff: r must be a floating-point tensor, got torch.int64", S)

E = "equiops.nn.GaussianBasis"
S = "from equiops.nn import GaussianBasis\ng = GaussianBasis(0.0, 1.0, 4)\n"
row("nn.GaussianBasis/basis-unknown", E, "option", "basis='foo'", "GaussianBasis(0.0, 1.0, 4, basis='foo')",
    ValueError, r"basis='foo' is not a valid entry; expected one of", S)
row("nn.GaussianBasis/start-equals-end", E, "value", "start == end", "GaussianBasis(1.0, 1.0, 4)", ValueError,
    r"start and end must differ, got start=1.0, end=1.0", S)
row("nn.GaussianBasis/x-int", E, "dtype", "int64 x (would make an integer linspace)",
    "g(torch.ones(3, dtype=torch.long))", TypeError, r"GaussianBasis: x must be a floating-point tensor, got torch.int64", S)

E = "equiops.nn.soft_one_hot_linspace"
S = "from equiops.nn import soft_one_hot_linspace as f\n"
row("nn.soft_one_hot_linspace/cutoff-none", E, "option", "cutoff=None",
    "f(torch.ones(3), 0.0, 1.0, 4, 'gaussian', None)", ValueError,
    r"cutoff must be specified as True or False, got cutoff=None", S)
row("nn.soft_one_hot_linspace/number-zero", E, "value", "number=0", "f(torch.ones(3), 0.0, 1.0, 0, 'gaussian', False)",
    ValueError, r"number must be an integer >= 1, got number=0", S)
row("nn.soft_one_hot_linspace/x-int", E, "dtype", "int64 x", "f(torch.ones(3, dtype=torch.long), 0.0, 1.0, 4, 'gaussian', False)",
    TypeError, r"soft_one_hot_linspace: x must be a floating-point tensor, got torch.int64", S)

E = "equiops.nn.RadialMLP"
S = "from equiops.nn import RadialMLP\nmlp = RadialMLP([4, 8, 3], torch.nn.functional.silu)\n"
row("nn.RadialMLP/hs-zero", E, "value", "a hidden width of 0", "RadialMLP([4, 0, 3])", ValueError,
    r"hs\[1\] must be an integer >= 1, got hs\[1\]=0", S)
row("nn.RadialMLP/hs-empty", E, "value", "hs=[]", "RadialMLP([])", ValueError, r"hs must list at least one size, got hs=\[\]", S)
row("nn.RadialMLP/act-not-callable", E, "type", "act=3", "RadialMLP([4, 3], act=3)", ValueError,
    r"act must be callable or None, got act=3", S)
row("nn.RadialMLP/x-wrong-width", E, "shape", "x (5, 3) for hs[0] = 4", "mlp(torch.ones(5, 3))", ValueError,
    r"RadialMLP: x must have shape \(\.\.\., 4\) \(hs\[0\]\), got \(5, 3\)", S)
row("nn.RadialMLP/x-int", E, "dtype", "int64 x", "mlp(torch.ones(5, 4, dtype=torch.long))", TypeError,
    r"RadialMLP: x must be a floating-point tensor, got torch.int64", S)
row("nn.RadialMLP/x-float64", E, "dtype", "float64 x, float32 weights", "mlp(torch.ones(5, 4, dtype=torch.float64))",
    TypeError, r"RadialMLP: x must have the dtype of the weights \(torch.float32\), got torch.float64", S)
row("nn.RadialMLP/x-meta", E, "device", "x on meta, weights on cpu (was a silent meta result)",
    "mlp(torch.ones(5, 4, device='meta'))", ValueError,
    r"RadialMLP: x must be on the device of the module's parameters \(cpu\), got meta", S)

E = "equiops.nn.RadialEmbedding"
S = "from equiops.nn import RadialEmbedding\nre = RadialEmbedding(5.0, 4)\n"
row("nn.RadialEmbedding/r_max-negative", E, "value", "r_max=-1", "RadialEmbedding(-1.0)", ValueError,
    r"r_max must be a positive finite number, got r_max=-1.0", S)
row("nn.RadialEmbedding/length-int", E, "dtype", "int64 lengths", "re(torch.ones(3, dtype=torch.long))", TypeError,
    r"r must be a floating-point tensor, got torch.int64", S)

E = "equiops.nn.channelwise_instructions"
S = "from equiops.nn import channelwise_instructions as ci\n"
row("nn.channelwise_instructions/irreps-invalid", E, "irreps", "irreps_in1 '1x0q'", "ci('1x0q', '1x0e', '1x0e')",
    ValueError, r"invalid term \"1x0q\"", S)
row("nn.channelwise_instructions/layout-unknown", E, "option", "layout='foo'", "ci('1x0e', '1x0e', '1x0e', layout='foo')",
    ValueError, r"layout must be one of \('mace', 'nequip', 'creation'\), got 'foo'", S)

# ------------------------------------------------------------------ TFN layers
TFN = ("from equiops.nn import TFNConv, InteractionBlock, TensorFieldNetwork\n"
       "torch.manual_seed(0)\n"
       "small = dict(r_max=2.0, num_basis=2, radial_neurons=(4,))\n"
       "x = torch.randn(3, 5)\npos = torch.randn(3, 3)\n"
       "src = torch.tensor([0, 1, 2])\ndst = torch.tensor([1, 2, 0])\n")
S = TFN + "conv = TFNConv('2x0e+1x1o', '2x0e+1x1o', 1, **small)\n"
E = "equiops.nn.TFNConv"
row("nn.TFNConv/irreps-invalid", E, "irreps", "irreps_in '2x0e+1x1q'", "TFNConv('2x0e+1x1q', '2x0e')", ValueError,
    r"TFNConv: invalid term \"1x1q\"", TFN)
row("nn.TFNConv/no-path", E, "irreps", "irreps_out 1x2e unreachable from 2x0e x (0e + 1o)",
    "TFNConv('2x0e', '1x2e', 1)", ValueError,
    r"TFNConv: no path: irreps_in=2x0e x irreps_sh=1x0e\+1x1o reaches no irrep of irreps_out=1x2e", TFN)
row("nn.TFNConv/r_max-negative", E, "value", "r_max=-1", "TFNConv('2x0e', '2x0e', 1, r_max=-1.0)", ValueError,
    r"TFNConv: r_max must be a positive finite number, got r_max=-1.0", TFN)
row("nn.TFNConv/avg_num_neighbors-zero", E, "value", "avg_num_neighbors=0",
    "TFNConv('2x0e', '2x0e', 1, avg_num_neighbors=0)", ValueError, r"TFNConv: avg_num_neighbors must be a number > 0, got 0", TFN)
row("nn.TFNConv/irreps_sh-negative", E, "irreps", "irreps_sh=-1 (a degree)", "TFNConv('2x0e', '2x0e', -1)", ValueError,
    r"TFNConv: irreps_sh as a degree must be >= 0, got -1", TFN)
row("nn.TFNConv/radial_neurons-negative", E, "value", "radial_neurons=(-3,)",
    "TFNConv('2x0e', '2x0e', 1, radial_neurons=(-3,))", ValueError,
    r"TFNConv: radial_neurons\[0\] must be an int >= 1, got -3", TFN)
row("nn.TFNConv/backend-unknown", E, "option", "backend='foo'", "TFNConv('2x0e', '2x0e', 1, backend='foo')", ValueError,
    r"TFNConv: backend must be one of .*got 'foo'", TFN)
row("nn.TFNConv/pos-wrong-shape", E, "shape", "pos (3, 2)", "conv(x, torch.randn(3, 2), src, dst)", ValueError,
    r"TFNConv: pos must have shape \(num_nodes, 3\), got torch.Size\(\[3, 2\]\)", S)
row("nn.TFNConv/x-wrong-width", E, "shape", "x (3, 4) for irreps_in.dim 5", "conv(torch.randn(3, 4), pos, src, dst)",
    ValueError, r"TFNConv: x must have shape \(num_nodes, 5\) .*got \(3, 4\)", S)
row("nn.TFNConv/x-rows-vs-pos", E, "shape", "x with 4 rows, pos with 3", "conv(torch.randn(4, 5), pos, src, dst)",
    ValueError, r"TFNConv: x must have shape \(num_nodes, 5\) with num_nodes = pos.shape\[0\] = 3, got \(4, 5\)", S)
row("nn.TFNConv/edge_src-negative", E, "index", "edge_src holds -1", "conv(x, pos, torch.tensor([-1, 1, 2]), dst)",
    IndexError, r"TFNConv: edge_src must hold node indices in \[0, 3\) .*got values in \[-1, 2\]", S)
row("nn.TFNConv/edge_dst-too-large", E, "index", "edge_dst holds num_nodes", "conv(x, pos, src, torch.tensor([0, 1, 3]))",
    IndexError, r"TFNConv: edge_dst must hold node indices in \[0, 3\) .*got values in \[0, 3\]", S)
row("nn.TFNConv/edge-lengths-differ", E, "shape", "3 edge_src, 2 edge_dst", "conv(x, pos, src, dst[:2])", ValueError,
    r"TFNConv: edge_src and edge_dst must have the same length .*got 3 and 2", S)
row("nn.TFNConv/edge_src-float", E, "dtype", "float edge_src", "conv(x, pos, src.float(), dst)", ValueError,
    r"TFNConv: edge_src must be a 1-D int64 tensor, got torch.float32", S)
row("nn.TFNConv/x-int", E, "dtype", "int64 x", "conv(x.long(), pos, src, dst)", TypeError,
    r"TFNConv: x must be a floating-point tensor, got torch.int64", S)
row("nn.TFNConv/pos-float64", E, "dtype", "float64 pos, float32 module", "conv(x, pos.double(), src, dst)", TypeError,
    r"TFNConv: pos must have the dtype of the module's parameters \(torch.float32\), got torch.float64", S)
row("nn.TFNConv/x-meta", E, "device", "x on meta", "conv(x.to('meta'), pos, src, dst)", ValueError,
    r"TFNConv: x must be on the device of the module's parameters \(cpu\), got meta", S)
row("nn.TFNConv/edge_src-meta", E, "device", "edge indices on meta", "conv(x, pos, src.to('meta'), dst.to('meta'))",
    ValueError, r"TFNConv: edge_src must be on pos' device cpu, got meta", S)

S = TFN + "ib = InteractionBlock('2x0e+1x1o', '2x0e+1x1o', '2x0e', 1, **small)\nna = torch.randn(3, 2)\n"
E = "equiops.nn.InteractionBlock"
row("nn.InteractionBlock/irreps_node_attr-invalid", E, "irreps", "irreps_node_attr '2xe0'",
    "InteractionBlock('2x0e', '2x0e', '2xe0')", ValueError, r"InteractionBlock: invalid term \"2xe0\"", TFN)
row("nn.InteractionBlock/node_attr-wrong-width", E, "shape", "node_attr (3, 3) for 2x0e",
    "ib(x, torch.randn(3, 3), pos, src, dst)", ValueError, r"y must have shape \(\.\.\., 2\) for 2x0e, got \(3, 3\)", S)
row("nn.InteractionBlock/node_attr-float64", E, "dtype", "float64 node_attr, float32 x",
    "ib(x, na.double(), pos, src, dst)", TypeError, r"y must have dtype torch.float32 like x, got torch.float64", S)
row("nn.InteractionBlock/edge_dst-negative", E, "index", "edge_dst holds -1",
    "ib(x, na, pos, src, torch.tensor([-1, 0, 0]))", IndexError,
    r"InteractionBlock: edge_dst must hold node indices in \[0, 3\) .*got values in \[-1, 0\]", S)
row("nn.InteractionBlock/pos-meta", E, "device", "pos on meta", "ib(x, na, pos.to('meta'), src, dst)", ValueError,
    r"InteractionBlock: pos must be on the device of the module's parameters \(cpu\), got meta", S)

S = (TFN + "net = TensorFieldNetwork(2, '4x0e+1x1o', 1, num_layers=1, **small)\n"
     "sp = torch.tensor([0, 1, 1])\n")
E = "equiops.nn.TensorFieldNetwork"
row("nn.TensorFieldNetwork/irreps_hidden-no-0e", E, "irreps", "irreps_hidden without 0e scalars",
    "TensorFieldNetwork(2, '4x0o+1x1o')", ValueError,
    r"TensorFieldNetwork: irreps_hidden must contain 0e scalars .*got 4x0o\+1x1o", TFN)
row("nn.TensorFieldNetwork/num_species-zero", E, "value", "num_species=0", "TensorFieldNetwork(0)", ValueError,
    r"num_species must be an int >= 1, got 0", TFN)
row("nn.TensorFieldNetwork/num_layers-zero", E, "value", "num_layers=0", "TensorFieldNetwork(2, num_layers=0)",
    ValueError, r"num_layers must be an int >= 1, got 0", TFN)
row("nn.TensorFieldNetwork/species-too-large", E, "index", "species holds num_species",
    "net(pos, torch.tensor([0, 2, 1]), src, dst)", IndexError, r"species holds 2, expected \[0, 2\)", S)
row("nn.TensorFieldNetwork/species-negative", E, "index", "species holds -1",
    "net(pos, torch.tensor([0, -1, 1]), src, dst)", IndexError, r"species holds -1, expected \[0, 2\)", S)
row("nn.TensorFieldNetwork/species-float", E, "dtype", "float species", "net(pos, sp.float(), src, dst)", TypeError,
    r"species must be an integer tensor, got torch.float32", S)
row("nn.TensorFieldNetwork/species-length", E, "shape", "2 species for 3 atoms", "net(pos, sp[:2], src, dst)",
    ValueError, r"species must have shape \(num_nodes,\) = \(3,\), got torch.Size\(\[2\]\)", S)
row("nn.TensorFieldNetwork/batch-length", E, "shape", "batch with 2 entries for 3 atoms",
    "net(pos, sp, src, dst, batch=torch.tensor([0, 0]))", ValueError,
    r"batch must have shape \(num_nodes,\) = \(3,\), got \(2,\)", S)
row("nn.TensorFieldNetwork/batch-negative", E, "index", "batch holds -1",
    "net(pos, sp, src, dst, batch=torch.tensor([0, -1, 0]))", IndexError,
    r"batch must hold structure indices in \[0, num_graphs\), got values in \[-1, 0\]", S)
row("nn.TensorFieldNetwork/batch-ge-num_graphs", E, "index", "batch holds 2 with num_graphs=2",
    "net(pos, sp, src, dst, batch=torch.tensor([0, 1, 2]), num_graphs=2)", IndexError,
    r"batch must hold structure indices in \[0, 2\), got values in \[0, 2\]", S)
row("nn.TensorFieldNetwork/batch-float", E, "dtype", "float batch",
    "net(pos, sp, src, dst, batch=torch.tensor([0.0, 1.0, 1.0]))", TypeError,
    r"batch must be an int64 tensor, got torch.float32", S)
row("nn.TensorFieldNetwork/num_graphs-negative", E, "value", "num_graphs=-1",
    "net(pos, sp, src, dst, batch=torch.tensor([0, 0, 0]), num_graphs=-1)", ValueError,
    r"num_graphs must be an int >= 0 or None, got -1", S)
row("nn.TensorFieldNetwork/pos-int", E, "dtype", "int64 pos", "net(pos.long(), sp, src, dst)", TypeError,
    r"TensorFieldNetwork: pos must be a floating-point tensor, got torch.int64", S)
row("nn.TensorFieldNetwork/pos-meta", E, "device", "pos on meta", "net(pos.to('meta'), sp, src, dst)", ValueError,
    r"TensorFieldNetwork: pos must be on the device of the module's parameters \(cpu\), got meta", S)

# ----------------------------------------------------------------------- EGNN
EG = ("import warnings\nfrom equiops.nn import E_GCL, EGNN, E_GCL_vel, EGNN_vel\ntorch.manual_seed(0)\n"
      "h = torch.randn(3, 4)\nc = torch.randn(3, 3)\nv = torch.randn(3, 3)\n"
      "ei = torch.tensor([[0, 1, 2], [1, 2, 0]])\n")
S = EG + "layer = E_GCL(4, 4, 8)\n"
E = "equiops.nn.E_GCL"
row("nn.E_GCL/coords_agg-unknown", E, "option", "coords_agg='max'", "E_GCL(4, 4, 8, coords_agg='max')", ValueError,
    r"coords_agg: expected 'mean' or 'sum', got 'max'", S)
row("nn.E_GCL/residual-size-mismatch", E, "value", "residual with input_nf != output_nf", "E_GCL(4, 5, 8)",
    ValueError, r"residual=True needs input_nf == output_nf, got 4 and 5", S)
row("nn.E_GCL/size-negative", E, "value", "input_nf=-1", "E_GCL(-1, -1, 8)", ValueError,
    r"E_GCL: input_nf must be an int >= 1, got -1", S)
row("nn.E_GCL/h-wrong-width", E, "shape", "h (3, 5) for input_nf 4", "layer(torch.randn(3, 5), ei, c)", ValueError,
    r"E_GCL: h: expected shape \(3, 4\), got \(3, 5\)", S)
row("nn.E_GCL/coord-wrong-shape", E, "shape", "coord (3, 2)", "layer(h, ei, torch.randn(3, 2))", ValueError,
    r"E_GCL: coord: expected shape \(n, 3\), got \(3, 2\)", S)
row("nn.E_GCL/coord-rows", E, "shape", "coord with 4 rows, h with 3", "layer(h, ei, torch.randn(4, 3))", ValueError,
    r"E_GCL: coord: expected 3 rows \(as h\), got 4", S)
row("nn.E_GCL/edge_index-too-large", E, "index", "edge_index row holds num_nodes",
    "layer(h, torch.tensor([[0, 1, 3], [1, 2, 0]]), c)", IndexError,
    r"E_GCL: edge_index: expected row indices in \[0, 3\) .*got values in \[0, 3\]", S)
row("nn.E_GCL/edge_index-negative", E, "index", "edge_index col holds -2",
    "layer(h, torch.tensor([[0, 1, 2], [1, -2, 0]]), c)", IndexError,
    r"E_GCL: edge_index: expected col indices in \[0, 3\) .*got values in \[-2, 1\]", S)
row("nn.E_GCL/edge_index-float", E, "dtype", "float edge_index", "layer(h, ei.float(), c)", ValueError,
    r"E_GCL: edge_index: expected an integer dtype for row, got torch.float32", S)
row("nn.E_GCL/edge_index-three-rows", E, "shape", "edge_index (3, 3)", "layer(h, torch.zeros(3, 3, dtype=torch.long), c)",
    ValueError, r"E_GCL: edge_index: expected a \(2, E\) tensor, got shape \(3, 3\)", S)
row("nn.E_GCL/edge_index-lengths-differ", E, "shape", "row of 3, col of 2", "layer(h, [ei[0], ei[1][:2]], c)",
    ValueError, r"E_GCL: edge_index: expected row and col of the same shape \(E,\), got \(3,\) and \(2,\)", S)
row("nn.E_GCL/h-int", E, "dtype", "int64 h", "layer(h.long(), ei, c)", TypeError,
    r"E_GCL: h must be a floating-point tensor, got torch.int64", S)
row("nn.E_GCL/coord-float64", E, "dtype", "float64 coord, float32 layer", "layer(h, ei, c.double())", TypeError,
    r"E_GCL: coord must have the dtype of the module's parameters \(torch.float32\), got torch.float64", S)
row("nn.E_GCL/h-meta", E, "device", "h on meta", "layer(h.to('meta'), ei, c)", ValueError,
    r"E_GCL: h must be on the device of the module's parameters \(cpu\), got meta", S)
row("nn.E_GCL/edge_index-meta", E, "device", "edge_index on meta", "layer(h, ei.to('meta'), c)", ValueError,
    r"E_GCL: edge_index must be on h's device cpu, got meta", S)
row("nn.E_GCL/edge_attr-missing", E, "shape", "no edge_attr for edges_in_d=2", "E_GCL(4, 4, 8, edges_in_d=2)(h, ei, c)",
    ValueError, r"E_GCL: edge_attr: expected shape \(3, 2\), got None", S)
row("nn.E_GCL/graph-not-a-graph", E, "type", "graph=3", "layer(h, ei, c, graph=3)", TypeError,
    r"graph: expected an equiops.Graph, got int", S)
row("nn.E_GCL/graph-stale", E, "value", "a graph with 2 edges for an edge_index of 3",
    "g = equiops.Graph(torch.tensor([0, 1]), torch.tensor([1, 2]), 3)\nlayer(h, ei, c, graph=g)", ValueError,
    r"graph: expected 3 nodes and 3 edges \(as h and edge_index\), got 3 and 2", S)

S = EG + "model = EGNN(4, 8, 2, n_layers=1)\n"
E = "equiops.nn.EGNN"
row("nn.EGNN/hidden_nf-negative", E, "value", "hidden_nf=-8", "EGNN(4, -8, 2)", ValueError,
    r"EGNN: hidden_nf must be an int >= 1, got -8", S)
row("nn.EGNN/n_layers-negative", E, "value", "n_layers=-1 (was a silent model without layers)",
    "EGNN(4, 8, 2, n_layers=-1)", ValueError, r"EGNN: n_layers must be an int >= 0, got -1", S)
row("nn.EGNN/h-wrong-width", E, "shape", "h (3, 5) for in_node_nf 4", "model(torch.randn(3, 5), c, ei)", ValueError,
    r"EGNN: h: expected shape \(n, 4\), got \(3, 5\)", S)
row("nn.EGNN/x-rows", E, "shape", "x with 2 rows, h with 3", "model(h, torch.randn(2, 3), ei)", ValueError,
    r"EGNN: x: expected 3 rows \(as h\), got 2", S)
row("nn.EGNN/edges-too-large", E, "index", "edges hold node 5 of 3", "model(h, c, torch.tensor([[0, 1, 5], [1, 2, 0]]))",
    IndexError, r"EGNN: edge_index: expected row indices in \[0, 3\) .*got values in \[0, 5\]", S)
row("nn.EGNN/x-float64", E, "dtype", "float64 x, float32 model", "model(h, c.double(), ei)", TypeError,
    r"EGNN: x must have the dtype of the module's parameters \(torch.float32\), got torch.float64", S)
row("nn.EGNN/h-meta", E, "device", "h on meta", "model(h.to('meta'), c, ei)", ValueError,
    r"EGNN: h must be on the device of the module's parameters \(cpu\), got meta", S)

S = EG + "layer = E_GCL_vel(4, 4, 8)\n"
E = "equiops.nn.E_GCL_vel"
row("nn.E_GCL_vel/vel-wrong-shape", E, "shape", "vel (2, 3) for coord (3, 3)", "layer(h, ei, c, torch.randn(2, 3))",
    ValueError, r"E_GCL_vel: vel: expected shape \(3, 3\) \(as coord\), got \(2, 3\)", S)
row("nn.E_GCL_vel/vel-float64", E, "dtype", "float64 vel (was silently promoted)", "layer(h, ei, c, v.double())",
    TypeError, r"E_GCL_vel: vel must have the dtype of the module's parameters \(torch.float32\), got torch.float64", S)
row("nn.E_GCL_vel/vel-meta", E, "device", "vel on meta", "layer(h, ei, c, v.to('meta'))", ValueError,
    r"E_GCL_vel: vel must be on the device of the module's parameters \(cpu\), got meta", S)

S = EG + "model = EGNN_vel(4, 0, 8, n_layers=1)\n"
E = "equiops.nn.EGNN_vel"
row("nn.EGNN_vel/x-wrong-shape", E, "shape", "x (3, 2)", "model(h, c[:, :2], ei, v)", ValueError,
    r"EGNN_vel: x: expected shape \(3, 3\), got \(3, 2\)", S)
row("nn.EGNN_vel/edges-negative", E, "index", "edges hold -1", "model(h, c, torch.tensor([[0, -1], [1, 2]]), v)",
    IndexError, r"EGNN_vel: edge_index: expected row indices in \[0, 3\) .*got values in \[-1, 0\]", S)
row("nn.EGNN_vel/edge_attr-missing", E, "shape", "no edge_attr for in_edge_nf=2",
    "EGNN_vel(4, 2, 8, n_layers=1)(h, c, ei, v)", ValueError, r"E_GCL_vel: edge_attr: expected shape \(3, 2\), got None", S)
row("nn.EGNN_vel/in_node_nf-zero", E, "value", "in_node_nf=0", "EGNN_vel(0, 0, 8)", ValueError,
    r"EGNN_vel: in_node_nf must be an int >= 1, got 0", S)

# ------------------------------------------------------------ egnn-pytorch drop-ins
EP = ("from equiops.nn import egnn_pytorch as ep\ntorch.manual_seed(0)\n"
      "f = torch.randn(2, 3, 4)\nco = torch.randn(2, 3, 3)\n")
S = EP + "layer = ep.EGNN(dim=4, m_dim=4)\nknn = ep.EGNN(dim=4, m_dim=4, num_nearest_neighbors=2)\n"
E = "equiops.nn.egnn_pytorch.EGNN"
row("nn.egnn_pytorch.EGNN/m_pool_method-unknown", E, "option", "m_pool_method='max'", "ep.EGNN(dim=4, m_pool_method='max')",
    ValueError, r"EGNN: m_pool_method must be 'sum' or 'mean', got 'max'", S)
row("nn.egnn_pytorch.EGNN/dim-zero", E, "value", "dim=0", "ep.EGNN(dim=0)", ValueError, r"EGNN: dim must be an int >= 1, got 0", S)
row("nn.egnn_pytorch.EGNN/no-update", E, "option", "update_feats=False and update_coors=False",
    "ep.EGNN(dim=4, update_feats=False, update_coors=False)", ValueError, r"update_feats and update_coors are both False", S)
row("nn.egnn_pytorch.EGNN/feats-2d", E, "shape", "feats (3, 4) without the batch axis", "layer(torch.randn(3, 4), co)",
    ValueError, r"EGNN: feats must have shape \(batch, nodes, dim=4\), got \(3, 4\)", S)
row("nn.egnn_pytorch.EGNN/coors-wrong-shape", E, "shape", "coors (2, 4, 3) for feats (2, 3, 4)",
    "layer(f, torch.randn(2, 4, 3))", ValueError, r"EGNN: coors must have shape \(2, 3, 3\) to match feats .*got \(2, 4, 3\)", S)
row("nn.egnn_pytorch.EGNN/feats-int", E, "dtype", "int64 feats", "layer(f.long(), co)", TypeError,
    r"EGNN: feats must be a floating-point tensor, got torch.int64", S)
row("nn.egnn_pytorch.EGNN/coors-float64", E, "dtype", "float64 coors, float32 feats", "layer(f, co.double())", TypeError,
    r"EGNN: coors must have feats' dtype torch.float32, got torch.float64", S)
row("nn.egnn_pytorch.EGNN/feats-float64-params-float32", E, "dtype", "float64 inputs, float32 parameters",
    "layer(f.double(), co.double())", TypeError,
    r"EGNN: feats must have the dtype of the layer's parameters \(torch.float32\), got torch.float64", S)
row("nn.egnn_pytorch.EGNN/coors-meta", E, "device", "coors on meta", "layer(f, co.to('meta'))", ValueError,
    r"EGNN: coors must be on feats' device cpu, got meta", S)
row("nn.egnn_pytorch.EGNN/feats-meta", E, "device", "feats and coors on meta, parameters on cpu",
    "layer(f.to('meta'), co.to('meta'))", ValueError,
    r"EGNN: feats must be on the device of the layer's parameters \(cpu\), got meta", S)
row("nn.egnn_pytorch.EGNN/mask-int", E, "dtype", "int64 mask", "layer(f, co, mask=torch.ones(2, 3, dtype=torch.long))",
    TypeError, r"EGNN: mask must be a bool tensor \(True = real node\), got torch.int64", S)
row("nn.egnn_pytorch.EGNN/mask-wrong-shape", E, "shape", "mask (2, 4) for 3 nodes",
    "layer(f, co, mask=torch.ones(2, 4, dtype=torch.bool))", ValueError, r"EGNN: mask must have shape \(2, 3\), got \(2, 4\)", S)
row("nn.egnn_pytorch.EGNN/edges-without-edge_dim", E, "option", "edges given to a layer built with edge_dim=0",
    "layer(f, co, edges=torch.randn(2, 3, 3, 1))", ValueError, r"edges were given \(shape \(2, 3, 3, 1\)\) but the layer was built with edge_dim=0", S)
row("nn.egnn_pytorch.EGNN/edges-wrong-shape", E, "shape", "edges (2, 3, 3, 3) for edge_dim=2",
    "ep.EGNN(dim=4, edge_dim=2)(f, co, edges=torch.randn(2, 3, 3, 3))", ValueError,
    r"EGNN: edges must have shape \(2, 3, 3, edge_dim=2\), got \(2, 3, 3, 3\)", S)
row("nn.egnn_pytorch.EGNN/neighbours-more-than-nodes", E, "value", "num_nearest_neighbors=5 with 3 nodes",
    "ep.EGNN(dim=4, num_nearest_neighbors=5)(f, co)", ValueError, r"EGNN: cannot pick 5 neighbours among 3 nodes", S)
row("nn.egnn_pytorch.EGNN/adj_mat-wrong-shape", E, "shape", "adj_mat (4, 4) for 3 nodes",
    "knn(f, co, adj_mat=torch.ones(4, 4, dtype=torch.bool))", ValueError,
    r"EGNN: adj_mat must have shape \(3, 3\) or \(2, 3, 3\), got \(4, 4\)", S)
row("nn.egnn_pytorch.EGNN/adj_mat-int", E, "dtype", "int64 adj_mat", "knn(f, co, adj_mat=torch.ones(3, 3, dtype=torch.long))",
    TypeError, r"EGNN: adj_mat must be a bool tensor, got torch.int64", S)
row("nn.egnn_pytorch.EGNN/adj_mat-meta", E, "device", "adj_mat on meta",
    "knn(f, co, adj_mat=torch.ones(3, 3, dtype=torch.bool, device='meta'))", ValueError,
    r"EGNN: adj_mat must be on feats' device cpu, got meta", S)
row("nn.egnn_pytorch.EGNN/feats-list", E, "type", "feats is a list", "layer([1.0], co)", TypeError,
    r"EGNN: feats must be a torch.Tensor, got list", S)

S = EP + ("net = ep.EGNN_Network(depth=1, dim=4, num_tokens=5, m_dim=4)\n"
          "tok = torch.tensor([[0, 1, 2], [3, 4, 0]])\n")
E = "equiops.nn.egnn_pytorch.EGNN_Network"
row("nn.egnn_pytorch.EGNN_Network/tokens-too-large", E, "index", "token id 5 with num_tokens=5",
    "net(torch.tensor([[0, 1, 5], [3, 4, 0]]), co)", IndexError,
    r"EGNN_Network: feats must hold token ids in \[0, num_tokens=5\), got values in \[0, 5\]", S)
row("nn.egnn_pytorch.EGNN_Network/tokens-negative", E, "index", "token id -1",
    "net(torch.tensor([[0, 1, -1], [3, 4, 0]]), co)", IndexError,
    r"EGNN_Network: feats must hold token ids in \[0, num_tokens=5\), got values in \[-1, 4\]", S)
row("nn.egnn_pytorch.EGNN_Network/tokens-float", E, "dtype", "float token ids", "net(tok.float(), co)", TypeError,
    r"EGNN_Network: feats must be an int64 tensor of token ids .*got torch.float32", S)
row("nn.egnn_pytorch.EGNN_Network/edge-tokens-too-large", E, "index", "edge token 3 with num_edge_tokens=3",
    "m = ep.EGNN_Network(depth=1, dim=4, num_edge_tokens=3, edge_dim=2, m_dim=4)\n"
    "m(f, co, edges=torch.full((2, 3, 3), 3))", IndexError,
    r"EGNN_Network: edges must hold token ids in \[0, num_edge_tokens=3\), got values in \[3, 3\]", S)
row("nn.egnn_pytorch.EGNN_Network/positions-exceeded", E, "shape", "3 nodes with num_positions=2",
    "ep.EGNN_Network(depth=1, dim=4, num_positions=2, m_dim=4)(f, co)", ValueError,
    r"EGNN_Network: 3 nodes exceed num_positions=2", S)
row("nn.egnn_pytorch.EGNN_Network/num_adj_degrees-zero", E, "value", "num_adj_degrees=0",
    "ep.EGNN_Network(depth=1, dim=4, num_adj_degrees=0)", ValueError, r"EGNN_Network: num_adj_degrees must be >= 1, got 0", S)
row("nn.egnn_pytorch.EGNN_Network/adj_mat-missing", E, "value", "no adj_mat with num_adj_degrees",
    "ep.EGNN_Network(depth=1, dim=4, num_adj_degrees=2, adj_dim=2, m_dim=4)(f, co)", ValueError,
    r"EGNN_Network: adj_mat is required with num_adj_degrees", S)
row("nn.egnn_pytorch.EGNN_Network/adj_mat-int", E, "dtype", "int64 adj_mat",
    "ep.EGNN_Network(depth=1, dim=4, num_adj_degrees=2, adj_dim=2, m_dim=4)(f, co, adj_mat=torch.ones(3, 3, dtype=torch.long))",
    TypeError, r"EGNN_Network: adj_mat must be a bool tensor, got torch.int64", S)
row("nn.egnn_pytorch.EGNN_Network/depth-negative", E, "value", "depth=-1 (was a silent network without layers)",
    "ep.EGNN_Network(depth=-1, dim=4)", ValueError, r"EGNN_Network: depth must be an int >= 0, got -1", S)
row("nn.egnn_pytorch.EGNN_Network/unknown-option", E, "option", "an unknown keyword foo=3 (passed to every layer)",
    "ep.EGNN_Network(depth=1, dim=4, foo=3)", TypeError, r"unexpected keyword argument 'foo'", S)

# ------------------------------------------------------------------ LieConv family
LC = ("from equiops import lie\n"
      "from equiops.nn import PointConv, LieConv, LieConvBNrelu, LieResNet, BottleBlock, GlobalPool, MaskBatchNormNd\n"
      "from equiops.nn import lieconv as lc\ntorch.manual_seed(0)\n"
      "xyz = torch.randn(1, 4, 3)\nv = torch.randn(1, 4, 2)\nm = torch.ones(1, 4, dtype=torch.bool)\n")
S = LC + "pc = PointConv(2, 3, mc_samples=2)\n"
E = "equiops.nn.PointConv"
row("nn.PointConv/mc_samples-zero", E, "value", "mc_samples=0", "PointConv(2, 3, mc_samples=0)", ValueError,
    r"mc_samples \(nbhd\): expected a neighbourhood size >= 1 \(an int or inf\), got 0", S)
row("nn.PointConv/act-unknown", E, "option", "act='gelu'", "PointConv(2, 3, act='gelu')", ValueError,
    r"act: expected 'swish' or 'relu', got 'gelu'", S)
row("nn.PointConv/ds_frac-unsupported", E, "option", "ds_frac=0.5", "PointConv(2, 3, ds_frac=0.5)", ValueError,
    r"ds_frac: PointConv supports only ds_frac=1, got 0.5", S)
row("nn.PointConv/chin-negative", E, "value", "chin=-2", "PointConv(-2, 3)", ValueError, r"PointConv: chin must be an int >= 1, got -2", S)
row("nn.PointConv/knn_channels-too-large", E, "value", "knn_channels=5 with xyz_dim=3 (was silently all channels)",
    "PointConv(2, 3, knn_channels=5)", ValueError, r"PointConv: knn_channels must be None or an int in \[1, xyz_dim=3\], got 5", S)
row("nn.PointConv/xyz-wrong-dim", E, "shape", "xyz (1, 4, 2) for xyz_dim 3", "pc((torch.randn(1, 4, 2), v, m))",
    ValueError, r"PointConv: coords: expected last dim 3 \(xyz_dim\), got 2", S)
row("nn.PointConv/values-wrong-channels", E, "shape", "values with 3 channels for chin 2", "pc((xyz, torch.randn(1, 4, 3), m))",
    ValueError, r"PointConv: values: expected 2 channels \(chin\), got 3", S)
row("nn.PointConv/mask-int", E, "dtype", "int64 mask", "pc((xyz, v, m.long()))", TypeError,
    r"PointConv: mask: expected dtype torch.bool, got torch.int64", S)
row("nn.PointConv/mask-wrong-shape", E, "shape", "mask (1, 3) for 4 points", "pc((xyz, v, m[:, :3]))", ValueError,
    r"PointConv: coords: expected shape \(1, 3, d\) to match mask \(bs, n\), got \(1, 4, 3\)", S)
row("nn.PointConv/not-a-triple", E, "type", "a (coords, values) pair", "pc((xyz, v))", TypeError,
    r"PointConv: inp: expected a \(coords, values, mask\) tuple, got tuple of length 2", S)
row("nn.PointConv/values-int", E, "dtype", "int64 values", "pc((xyz, v.long(), m))", TypeError,
    r"PointConv: values: expected a floating dtype, got torch.int64", S)
row("nn.PointConv/values-float64", E, "dtype", "float64 inputs, float32 parameters", "pc((xyz.double(), v.double(), m))",
    TypeError, r"PointConv: coords must have the dtype of the module's parameters \(torch.float32\), got torch.float64", S)
row("nn.PointConv/values-meta", E, "device", "values on meta, coords on cpu", "pc((xyz, v.to('meta'), m))", ValueError,
    r"PointConv: values: expected coords' device cpu, got meta", S)
row("nn.PointConv/inputs-meta", E, "device", "all inputs on meta, parameters on cpu",
    "pc((xyz.to('meta'), v.to('meta'), m.to('meta')))", ValueError,
    r"PointConv: coords must be on the device of the module's parameters \(cpu\), got meta", S)

S = LC + "conv = LieConv(2, 3, mc_samples=2, group=lie.T(3))\n"
E = "equiops.nn.LieConv"
row("nn.LieConv/group-not-a-group", E, "type", "group='SE3' (a string)", "LieConv(2, 3, group='SE3')", TypeError,
    r"group: expected a Lie group of equiops.lie \(with lie_dim\), got str", S)
row("nn.LieConv/ds_frac-zero", E, "value", "ds_frac=0", "LieConv(2, 3, ds_frac=0)", ValueError,
    r"ds_frac: expected a fraction in \(0, 1\], got 0", S)
row("nn.LieConv/nbhd-nan", E, "value", "mc_samples=nan", "LieConv(2, 3, mc_samples=float('nan'))", ValueError,
    r"mc_samples \(nbhd\): expected a neighbourhood size >= 1 \(an int or inf\), got nan", S)
row("nn.LieConv/lifted-wrong-dim", E, "shape", "lifted points (1, 4, 2) for T(3)", "conv((torch.randn(1, 4, 2), v, m))",
    ValueError, r"LieConv: coords: expected last dim 3 \(lie_dim \+ q_dim of T\), got 2", S)
row("nn.LieConv/all-pairs-input", E, "shape", "the original's all-pairs tensor (1, 4, 4, 3)",
    "conv((torch.randn(1, 4, 4, 3), v, m))", ValueError, r"LieConv: coords: expected shape \(1, 4, d\) .*all-pairs tensor", S)
row("nn.LieConv/query_indices-too-large", E, "index", "query index 5 of 4 points",
    "conv((xyz, v, m), query_indices=torch.tensor([[0, 5]]))", IndexError,
    r"LieConv: query_indices must hold point indices in \[0, 4\), got values in \[0, 5\]", S)
row("nn.LieConv/query_indices-negative", E, "index", "query index -9",
    "conv((xyz, v, m), query_indices=torch.tensor([[0, -9]]))", IndexError,
    r"LieConv: query_indices must hold point indices in \[0, 4\), got values in \[-9, 0\]", S)
row("nn.LieConv/query_indices-float", E, "dtype", "float query indices",
    "conv((xyz, v, m), query_indices=torch.tensor([[0.0, 1.0]]))", ValueError,
    r"LieConv: query_indices must be an int64 tensor of shape \(1, m\), got torch.float32", S)
row("nn.LieConv/values-float64", E, "dtype", "float64 inputs, float32 parameters", "conv((xyz.double(), v.double(), m))",
    TypeError, r"LieConv: coords must have the dtype of the module's parameters \(torch.float32\), got torch.float64", S)
row("nn.LieConv/mask-meta", E, "device", "mask on meta", "conv((xyz, v, m.to('meta')))", ValueError,
    r"LieConv: mask: expected coords' device cpu, got meta", S)

row("nn.LieConvBNrelu/act-unknown", "equiops.nn.LieConvBNrelu", "option", "act='x'", "LieConvBNrelu(2, 3, act='x')",
    ValueError, r"act: expected 'swish' or 'relu', got 'x'", LC)

S = LC + "net = LieResNet(2, k=8, num_layers=1, nbhd=2, group=lie.T(3), bn=False)\n"
E = "equiops.nn.LieResNet"
row("nn.LieResNet/coords-wrong-dim", E, "shape", "coords (1, 4, 2) for T(3)", "net((torch.randn(1, 4, 2), v, m))",
    ValueError, r"LieResNet: coords: expected last dim 3 \(the points T acts on; rep_dim=3\), got 2", S)
row("nn.LieResNet/coords-so2", E, "shape", "3-D coords for SO2 (planar)",
    "LieResNet(2, k=8, num_layers=1, group=lie.SO2(), nbhd=2)((xyz, v, m))", ValueError,
    r"LieResNet: coords: expected last dim 2 \(the points SO2 acts on; rep_dim=2\), got 3", S)
row("nn.LieResNet/values-wrong-channels", E, "shape", "values with 5 channels for chin 2",
    "net((xyz, torch.randn(1, 4, 5), m))", ValueError, r"LieResNet: values: expected 2 channels \(chin\), got 5", S)
row("nn.LieResNet/mask-float", E, "dtype", "float mask", "net((xyz, v, m.float()))", TypeError,
    r"LieResNet: mask: expected dtype torch.bool, got torch.float32", S)
row("nn.LieResNet/not-a-triple", E, "type", "a bare tensor", "net(xyz)", TypeError,
    r"LieResNet: x: expected a \(coords, values, mask\) tuple, got Tensor", S)
row("nn.LieResNet/liftsamples-zero", E, "value", "liftsamples=0", "LieResNet(2, k=8, num_layers=1, liftsamples=0)",
    ValueError, r"liftsamples: expected an int >= 1, got 0", S)
row("nn.LieResNet/liftsamples-abelian", E, "value", "liftsamples=2 for T(3) (single-valued lift)",
    "LieResNet(2, k=8, num_layers=1, group=lie.T(3), liftsamples=2)((xyz, v, m))", ValueError,
    r"T.lifted_elems: the lift to T is single valued, so `nsamples` must be 1 \(got 2\)", S)
row("nn.LieResNet/act-unknown", E, "option", "act='tanh'", "LieResNet(2, k=8, num_layers=1, act='tanh')", ValueError,
    r"act: expected 'swish' or 'relu', got 'tanh'", S)
row("nn.LieResNet/nbhd-zero", E, "value", "nbhd=0", "LieResNet(2, k=8, num_layers=1, nbhd=0)", ValueError,
    r"nbhd: expected a neighbourhood size >= 1 \(an int or inf\), got 0", S)
row("nn.LieResNet/k-negative", E, "value", "k=-8", "LieResNet(2, k=-8, num_layers=1)", ValueError,
    r"LieResNet: k\[0\] must be an int >= 1, got -8", S)
row("nn.LieResNet/num_layers-negative", E, "value", "num_layers=-1", "LieResNet(2, k=8, num_layers=-1, group=lie.T(3))",
    ValueError, r"LieResNet: num_layers must be an int >= 0, got -1", S)
row("nn.LieResNet/fill-list-length", E, "shape", "fill=[0.1] for num_layers=2",
    "LieResNet(2, k=8, num_layers=2, fill=[0.1])", ValueError,
    r"LieResNet: fill must be a number or a list of num_layers=2 numbers, got 1", S)
row("nn.LieResNet/k-list-length", E, "shape", "k=[8] for num_layers=2", "LieResNet(2, k=[8], num_layers=2)", ValueError,
    r"LieResNet: k must be an int or a list of num_layers \+ 1 = 3 ints, got 1", S)
row("nn.LieResNet/values-float64", E, "dtype", "float64 inputs, float32 parameters", "net((xyz.double(), v.double(), m))",
    TypeError, r"LieResNet: coords must have the dtype of the module's parameters \(torch.float32\), got torch.float64", S)
row("nn.LieResNet/values-meta", E, "device", "values on meta", "net((xyz, v.to('meta'), m))", ValueError,
    r"LieResNet: values: expected coords' device cpu, got meta", S)

S = LC + "bb = BottleBlock(8, 8, lambda a, b: LieConv(a, b, group=lie.T(3), mc_samples=2))\n"
E = "equiops.nn.BottleBlock"
row("nn.BottleBlock/chout-below-chin", E, "value", "chin=8, chout=4", "BottleBlock(8, 4, lambda a, b: LieConv(a, b))",
    ValueError, r"chout: expected chout >= chin \(no channel reduction\), got chin=8, chout=4", S)
row("nn.BottleBlock/act-unknown", E, "option", "act='x'", "BottleBlock(8, 8, lambda a, b: LieConv(a, b), act='x')",
    ValueError, r"act: expected 'swish' or 'relu', got 'x'", S)
row("nn.BottleBlock/values-wrong-channels", E, "shape", "values with 4 channels for chin 8",
    "bb((xyz, torch.randn(1, 4, 4), m))", ValueError, r"BottleBlock: values must have 8 channels \(chin\), got 4", S)

S = LC + "gp = GlobalPool()\n"
E = "equiops.nn.GlobalPool"
row("nn.GlobalPool/mask-wrong-shape", E, "shape", "mask (1, 3) for 4 points", "gp((xyz, v, m[:, :3]))", ValueError,
    r"GlobalPool: coords: expected shape \(1, 3, d\) to match mask \(bs, n\), got \(1, 4, 3\)", S)
row("nn.GlobalPool/mask-int", E, "dtype", "int64 mask", "gp((xyz, v, m.long()))", TypeError,
    r"GlobalPool: mask: expected dtype torch.bool, got torch.int64", S)
row("nn.GlobalPool/not-a-tuple", E, "type", "a bare tensor", "gp(v)", TypeError,
    r"GlobalPool: x: expected a \(coords, values, mask\) tuple, got Tensor", S)

S = LC + "bn = MaskBatchNormNd(2)\n"
E = "equiops.nn.MaskBatchNormNd"
row("nn.MaskBatchNormNd/values-wrong-channels", E, "shape", "values with 3 channels for num_features 2",
    "bn((xyz, torch.randn(1, 4, 3), m))", ValueError,
    r"MaskBatchNormNd: values must have shape \(\.\.\., 2\) \(num_features\), got \(1, 4, 3\)", S)
row("nn.MaskBatchNormNd/mask-int", E, "dtype", "int64 mask", "bn((xyz, v, m.long()))", TypeError,
    r"MaskBatchNormNd: mask must be a bool tensor, got torch.int64", S)
row("nn.MaskBatchNormNd/mask-wrong-shape", E, "shape", "mask (1, 3) for values (1, 4, 2)", "bn((xyz, v, m[:, :3]))",
    ValueError, r"MaskBatchNormNd: mask must have values' leading shape \(1, 4\), got \(1, 3\)", S)
row("nn.MaskBatchNormNd/values-int", E, "dtype", "int64 values (was silently accepted)", "bn((xyz, v.long(), m))",
    TypeError, r"MaskBatchNormNd: values must be a floating-point tensor, got torch.int64", S)
row("nn.MaskBatchNormNd/values-float64", E, "dtype", "float64 values, float32 statistics", "bn((xyz, v.double(), m))",
    TypeError, r"MaskBatchNormNd: values must have the module's dtype torch.float32, got torch.float64", S)
row("nn.MaskBatchNormNd/values-meta", E, "device", "values and mask on meta",
    "bn((xyz, v.to('meta'), m.to('meta')))", ValueError,
    r"MaskBatchNormNd: values and mask must be on the module's device cpu, got meta and meta", S)

E = "equiops.nn.lieconv.FPSindices"
row("nn.lieconv.FPSindices/frac-above-one", E, "value", "frac=2", "lc.FPSindices(torch.rand(1, 4, 4), 2.0, m)",
    ValueError, r"farthest_point_indices: frac must be a fraction in \(0, 1\], got 2.0", LC)
row("nn.lieconv.FPSindices/dists-wrong-shape", E, "shape", "dists (1, 4, 3) for 4 points",
    "lc.FPSindices(torch.rand(1, 4, 3), 0.5, m)", ValueError,
    r"FPSindices: dists must have shape \(1, 4, 4\) .*got \(1, 4, 3\)", LC)
row("nn.lieconv.FPSindices/mask-int", E, "dtype", "int64 mask", "lc.FPSindices(torch.rand(1, 4, 4), 0.5, m.long())",
    ValueError, r"FPSindices: mask must be a bool tensor of shape \(bs, n\), got torch.int64", LC)
row("nn.lieconv.FPSsubsample/ds_frac-above-one", "equiops.nn.lieconv.FPSsubsample", "value", "ds_frac=1.5",
    "lc.FPSsubsample(1.5)", ValueError, r"ds_frac: expected a fraction in \(0, 1\], got 1.5", LC)
row("nn.lieconv.lift_points/mask-wrong-shape", "equiops.nn.lieconv.lift_points", "shape", "mask (1, 3) for 4 points",
    "lc.lift_points(lie.T(3), xyz, v, m[:, :3])", ValueError,
    r"lift_points: coords: expected shape \(1, 3, d\) to match mask \(bs, n\), got \(1, 4, 3\)", LC)
