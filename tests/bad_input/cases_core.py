"""Bad-input rows for the core API: equiops.__all__ (scatter/segment family, Graph, irreps,
spherical harmonics, tensor products, the fused convolution, backends, so3), the op-level
functions equiops.ops.egnn.egnn_message and equiops.ops.pointconv.pointconv, and every
raw torch.ops.equiops.* operator (the C++ must raise on what it is given, never crash).

Wrong devices: there is no GPU in CI, so a tensor on the ``meta`` device next to CPU
tensors stands for "the wrong device"; it must give an error, not a crash or a silent
(meta or uninitialised) result.
"""

from __future__ import annotations

from .case import Case

CASES = []


def row(id, entry, kind, what, code, raises, match, setup="", xfail=""):
    CASES.append(Case(id=id, entry=entry, kind=kind, what=what, code=code, raises=raises, match=match,
                      setup=setup, xfail=xfail))


# ----------------------------------------------------------------- scatter family
SC = "src = torch.randn(6, 2)\nidx = torch.tensor([0, 1, 2, 0, 1, 2])\n"
E = "equiops.scatter"
row("scatter/index-too-large", E, "index", "index value >= dim_size",
    "equiops.scatter(src, torch.tensor([0, 1, 2, 0, 1, 7]), 0, dim_size=3)", IndexError, r"index holds 7.*\[0, 3\)", SC)
row("scatter/index-negative", E, "index", "negative index value",
    "equiops.scatter(src, torch.tensor([0, 1, 2, 0, -1, 2]), 0, dim_size=3)", IndexError, r"index holds -1.*\[0, 3\)", SC)
row("scatter/index-float", E, "dtype", "float index", "equiops.scatter(src, idx.float(), 0)",
    TypeError, r"index must be an int64 \(or int32\) tensor, got torch.float32", SC)
row("scatter/src-int", E, "dtype", "integer src", "equiops.scatter(idx, idx, 0)",
    TypeError, r"src must be float16, bfloat16, float32 or float64, got torch.int64", SC)
row("scatter/src-list", E, "type", "src is a list", "equiops.scatter(src.tolist(), idx, 0)",
    TypeError, r"src must be a torch.Tensor, got list", SC)
row("scatter/index-list", E, "type", "index is a list", "equiops.scatter(src, idx.tolist(), 0)",
    TypeError, r"index must be a torch.Tensor, got list", SC)
row("scatter/index-wrong-length", E, "shape", "1-D index shorter than src.size(dim)", "equiops.scatter(src, idx[:5], 0)",
    ValueError, r"1-D index must have src.size\(dim\) = 6 entries.*got 5", SC)
row("scatter/index-not-broadcastable", E, "shape", "index of shape (6, 3) for src (6, 2)",
    "equiops.scatter(src, torch.zeros(6, 3, dtype=torch.long), 0)", ValueError, r"does not broadcast", SC)
row("scatter/index-more-dims", E, "shape", "index with more dims than src",
    "equiops.scatter(src, torch.zeros(6, 2, 1, dtype=torch.long), 0)", ValueError, r"index has 3 dims, more than src's 2", SC)
row("scatter/src-scalar", E, "shape", "0-d src", "equiops.scatter(torch.tensor(1.0), torch.tensor(0), 0)",
    ValueError, r"src must have at least one dimension, got a scalar", SC)
row("scatter/dim-out-of-range", E, "index", "dim = 2 for a 2-D src", "equiops.scatter(src, idx, 2)",
    IndexError, r"dim must be in \[-2, 1\] for src with 2 dims, got 2", SC)
row("scatter/dim-float", E, "type", "dim is a float", "equiops.scatter(src, idx, 0.0)",
    TypeError, r"dim must be an int, got float", SC)
row("scatter/reduce-unknown", E, "option", "reduce='prod'", "equiops.scatter(src, idx, 0, reduce='prod')",
    ValueError, r"reduce must be one of .*got 'prod'", SC)
row("scatter/dim-size-negative", E, "value", "dim_size = -1", "equiops.scatter(src, idx, 0, dim_size=-1)",
    ValueError, r"dim_size must be >= 0, got -1", SC)
row("scatter/dim-size-float", E, "type", "dim_size is a float", "equiops.scatter(src, idx, 0, dim_size=3.0)",
    TypeError, r"dim_size must be an int or None, got float", SC)
row("scatter/out-wrong-shape", E, "shape", "out of the wrong shape",
    "equiops.scatter(src, idx, 0, dim_size=3, out=torch.zeros(4, 2))", ValueError, r"out must have shape \(3, 2\), got \(4, 2\)", SC)
row("scatter/out-wrong-dtype", E, "dtype", "out float64 for float32 src",
    "equiops.scatter(src, idx, 0, dim_size=3, out=torch.zeros(3, 2, dtype=torch.float64))",
    TypeError, r"out must have src's dtype torch.float32, got torch.float64", SC)
row("scatter/out-meta", E, "device", "out on meta, src on cpu",
    "equiops.scatter(src, idx, 0, dim_size=3, out=torch.zeros(3, 2, device='meta'))",
    ValueError, r"out must be on cpu like src, got meta", SC)
row("scatter/index-meta", E, "device", "index on meta, src on cpu", "equiops.scatter(src, idx.to('meta'), 0)",
    ValueError, r"index must be on cpu like src, got meta", SC)
row("scatter/src-meta", E, "device", "src on meta, index on cpu", "equiops.scatter(src.to('meta'), idx, 0)",
    ValueError, r"index must be on meta like src, got cpu", SC)
row("scatter/backend-unknown", E, "option", "backend='nope'", "equiops.scatter(src, idx, 0, backend='nope')",
    ValueError, r"backend must be one of .*got 'nope'", SC)
row("scatter/backend-cuda-on-cpu", E, "device", "backend='cuda' with CPU tensors", "equiops.scatter(src, idx, 0, backend='cuda')",
    ValueError, r"backend 'cuda' runs on CUDA tensors, but the inputs are on cpu", SC)
row("scatter/max-index-too-large", E, "index", "reduce='max' with index >= dim_size",
    "equiops.scatter(src, idx + 1, 0, dim_size=3, reduce='max')", IndexError, r"index holds 3.*\[0, 3\)", SC)
row("scatter_sum/index-too-large", "equiops.scatter_sum", "index", "index value >= dim_size",
    "equiops.scatter_sum(src, idx, 0, dim_size=2)", IndexError, r"index holds 2.*\[0, 2\)", SC)
row("scatter_sum/index-int16", "equiops.scatter_sum", "dtype", "int16 index", "equiops.scatter_sum(src, idx.short(), 0)",
    TypeError, r"index must be an int64 \(or int32\) tensor, got torch.int16", SC)
row("scatter_add/index-negative", "equiops.scatter_add", "index", "negative index value",
    "equiops.scatter_add(src, idx - 1, 0)", IndexError, r"index holds -1", SC)
row("scatter_mean/index-too-large", "equiops.scatter_mean", "index", "index value >= dim_size",
    "equiops.scatter_mean(src, idx * 3, 0, dim_size=4)", IndexError, r"index holds 6.*\[0, 4\)", SC)
row("scatter_mean/src-bool", "equiops.scatter_mean", "dtype", "bool src", "equiops.scatter_mean(src > 0, idx, 0)",
    TypeError, r"src must be float16, bfloat16, float32 or float64, got torch.bool", SC)
row("scatter_max/index-too-large", "equiops.scatter_max", "index", "index value >= dim_size",
    "equiops.scatter_max(src, idx, 0, dim_size=1)", IndexError, r"index holds [12].*\[0, 1\)", SC)
row("scatter_max/out-wrong-shape", "equiops.scatter_max", "shape", "out with the wrong trailing size",
    "equiops.scatter_max(src, idx, 0, out=torch.zeros(3, 5))", ValueError, r"out must have shape \(3, 2\), got \(3, 5\)", SC)
row("scatter_min/index-meta", "equiops.scatter_min", "device", "index on meta, src on cpu",
    "equiops.scatter_min(src, idx.to('meta'), 0)", ValueError, r"index must be on cpu like src, got meta", SC)
row("scatter_min/index-negative", "equiops.scatter_min", "index", "negative index value",
    "equiops.scatter_min(src, -idx - 1, 0, dim_size=3)", IndexError, r"index holds -[123]", SC)

# ------------------------------------------------------------------ segment family
SG = "src = torch.randn(6, 2)\nindptr = torch.tensor([0, 2, 6])\n"
E = "equiops.segment_csr"
row("segment_csr/indptr-decreasing", E, "index", "indptr not non-decreasing",
    "equiops.segment_csr(src, torch.tensor([0, 4, 2, 6]))", ValueError,
    r"non-decreasing.*indptr\[0, 1\] = 4 > indptr\[0, 2\] = 2", SG)
row("segment_csr/indptr-beyond-rows", E, "index", "indptr[-1] > src.size(dim)",
    "equiops.segment_csr(src, torch.tensor([0, 4, 9]))", IndexError, r"indptr\[0, -1\] = 9 exceeds the number of rows N = 6", SG)
row("segment_csr/indptr-negative", E, "index", "indptr starts below 0",
    "equiops.segment_csr(src, torch.tensor([-1, 4, 6]))", ValueError, r"indptr must start at >= 0", SG)
row("segment_csr/indptr-float", E, "dtype", "float indptr", "equiops.segment_csr(src, indptr.float())",
    TypeError, r"indptr must be an int64 \(or int32\) tensor, got torch.float32", SG)
row("segment_csr/indptr-empty", E, "shape", "indptr of size 0", "equiops.segment_csr(src, indptr[:0])",
    ValueError, r"indptr must have at least one dimension of size >= 1, got shape \(0,\)", SG)
row("segment_csr/indptr-batch-mismatch", E, "shape", "2-D indptr whose batch does not match src",
    "equiops.segment_csr(torch.randn(2, 6, 2), torch.tensor([[0, 6], [0, 6], [0, 6]]))", ValueError, r"indptr's leading shape \(3,\) does not broadcast to src's \(2,\)", SG)
row("segment_csr/src-int", E, "dtype", "integer src", "equiops.segment_csr(indptr, indptr)",
    TypeError, r"src must be float16, bfloat16, float32 or float64, got torch.int64", SG)
row("segment_csr/indptr-meta", E, "device", "indptr on meta, src on cpu", "equiops.segment_csr(src, indptr.to('meta'))",
    ValueError, r"indptr must be on cpu like src, got meta", SG)
row("segment_csr/reduce-unknown", E, "option", "reduce='median'", "equiops.segment_csr(src, indptr, reduce='median')",
    ValueError, r"reduce must be one of .*got 'median'", SG)
row("segment_csr/out-wrong-shape", E, "shape", "out of the wrong shape",
    "equiops.segment_csr(src, indptr, out=torch.zeros(3, 2))", ValueError, r"out must have shape \(2, 2\), got \(3, 2\)", SG)
row("segment_csr/backend-triton-on-cpu", E, "device", "backend='triton' with CPU tensors",
    "equiops.segment_csr(src, indptr, backend='triton')", ValueError, r"backend 'triton' runs on CUDA tensors", SG)
row("segment_csr/indptr-list", E, "type", "indptr is a list", "equiops.segment_csr(src, [0, 2, 6])",
    TypeError, r"indptr must be a torch.Tensor, got list", SG)
row("segment_sum_csr/indptr-beyond-rows", "equiops.segment_sum_csr", "index", "indptr[-1] > src.size(dim)",
    "equiops.segment_sum_csr(src, torch.tensor([0, 7]))", IndexError, r"indptr\[0, -1\] = 7 exceeds the number of rows N = 6", SG)
row("segment_add_csr/indptr-decreasing", "equiops.segment_add_csr", "index", "indptr not non-decreasing",
    "equiops.segment_add_csr(src, torch.tensor([0, 3, 1, 6]))", ValueError, r"non-decreasing", SG)
row("segment_mean_csr/indptr-float", "equiops.segment_mean_csr", "dtype", "float indptr",
    "equiops.segment_mean_csr(src, indptr.double())", TypeError, r"indptr must be an int64 \(or int32\) tensor, got torch.float64", SG)
row("segment_max_csr/indptr-beyond-rows", "equiops.segment_max_csr", "index", "indptr[-1] > src.size(dim)",
    "equiops.segment_max_csr(src, torch.tensor([0, 2, 60]))", IndexError, r"indptr\[0, -1\] = 60 exceeds", SG)
row("segment_min_csr/indptr-meta", "equiops.segment_min_csr", "device", "indptr on meta, src on cpu",
    "equiops.segment_min_csr(src, indptr.to('meta'))", ValueError, r"indptr must be on cpu like src, got meta", SG)
row("segment_min_csr/indptr-negative", "equiops.segment_min_csr", "index", "indptr starts below 0",
    "equiops.segment_min_csr(src, torch.tensor([-2, 6]))", ValueError, r"indptr must start at >= 0", SG)

GC = "src = torch.randn(2, 3)\nindptr = torch.tensor([0, 2, 5])\n"
E = "equiops.gather_csr"
row("gather_csr/indptr-size-mismatch", E, "shape", "indptr with a segment count != src.size(0)",
    "equiops.gather_csr(src, torch.tensor([0, 1, 2, 5]))", ValueError, r"src must have indptr.size\(-1\) - 1 = 3 entries along dim 0, got shape \(2, 3\)", GC)
row("gather_csr/indptr-decreasing", E, "index", "indptr not non-decreasing",
    "equiops.gather_csr(src, torch.tensor([0, 3, 1]))", ValueError, r"non-decreasing", GC)
row("gather_csr/indptr-negative", E, "index", "indptr starts below 0",
    "equiops.gather_csr(src, torch.tensor([-1, 2, 5]))", ValueError, r"indptr must start at >= 0", GC)
row("gather_csr/indptr-float", E, "dtype", "float indptr", "equiops.gather_csr(src, indptr.float())",
    TypeError, r"indptr must be an int64 \(or int32\) tensor, got torch.float32", GC)
row("gather_csr/indptr-meta", E, "device", "indptr on meta, src on cpu", "equiops.gather_csr(src, indptr.to('meta'))",
    ValueError, r"indptr must be on cpu like src, got meta", GC)
row("gather_csr/out-wrong-shape", E, "shape", "out with the wrong trailing size",
    "equiops.gather_csr(src, indptr, out=torch.zeros(5, 4))", ValueError, r"out must have shape \(5, 3\), got \(5, 4\)", GC)
row("gather_csr/src-int", E, "dtype", "integer src", "equiops.gather_csr(indptr[:2], indptr)",
    TypeError, r"src must be float16, bfloat16, float32 or float64, got torch.int64", GC)

# ---------------------------------------------------------------------------- Graph
GR = "s = torch.tensor([0, 1, 2])\nd = torch.tensor([1, 2, 0])\ng = equiops.Graph(s, d, 3)\n"
E = "equiops.Graph"
row("Graph/dst-too-large", E, "index", "dst value >= num_nodes", "equiops.Graph(torch.tensor([0, 1]), torch.tensor([1, 5]), 5)",
    IndexError, r"dst holds 5, expected node ids in \[0, 5\)")
row("Graph/src-negative", E, "index", "negative src value", "equiops.Graph(torch.tensor([0, -1]), torch.tensor([1, 2]), 5)",
    IndexError, r"src holds -1, expected node ids in \[0, 5\)")
row("Graph/length-mismatch", E, "shape", "src and dst of different lengths",
    "equiops.Graph(torch.tensor([0, 1]), torch.tensor([1, 2, 3]), 5)", ValueError, r"same length, got 2 and 3")
row("Graph/src-2d", E, "shape", "2-D src", "equiops.Graph(torch.zeros(2, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long), 5)",
    ValueError, r"src must be 1-D \(E,\), got shape \(2, 2\)")
row("Graph/src-float", E, "dtype", "float src", "equiops.Graph(torch.tensor([0.0, 1.0]), torch.tensor([1, 2]), 5)",
    TypeError, r"src must be an int64 \(or int32\) tensor, got torch.float32")
row("Graph/dst-list", E, "type", "dst is a list", "equiops.Graph(torch.tensor([0, 1]), [1, 2], 5)",
    TypeError, r"dst must be a torch.Tensor, got list")
row("Graph/num-nodes-negative", E, "value", "num_nodes = -1", "equiops.Graph(torch.tensor([0]), torch.tensor([0]), -1)",
    ValueError, r"num_nodes must be an int >= 0, got -1")
row("Graph/num-nodes-float", E, "type", "num_nodes is a float", "equiops.Graph(torch.tensor([0]), torch.tensor([0]), 2.5)",
    ValueError, r"num_nodes must be an int >= 0, got 2.5")
row("Graph/devices-differ", E, "device", "src on cpu, dst on meta",
    "equiops.Graph(torch.tensor([0, 1]), torch.tensor([1, 0], device='meta'), 2)", ValueError,
    r"src and dst must be on one device, got cpu and meta")
row("Graph.aggregate/values-wrong-rows", "equiops.Graph.aggregate", "shape", "values with a row count != E",
    "g.aggregate(torch.randn(4, 2))", ValueError, r"values must have shape \(E=3, \.\.\.\), got \(4, 2\)", GR)
row("Graph.aggregate/values-int", "equiops.Graph.aggregate", "dtype", "integer values",
    "g.aggregate(torch.ones(3, 2, dtype=torch.long))", TypeError, r"values must be a float tensor, got torch.int64", GR)
row("Graph.aggregate/values-meta", "equiops.Graph.aggregate", "device", "values on meta, graph on cpu",
    "g.aggregate(torch.randn(3, 2, device='meta'))", ValueError, r"values must be on the graph's device cpu, got meta", GR)
row("Graph.aggregate/values-list", "equiops.Graph.aggregate", "type", "values is a list",
    "g.aggregate([[1.0], [2.0], [3.0]])", TypeError, r"values must be a torch.Tensor, got list", GR)
row("Graph.aggregate/at-unknown", "equiops.Graph.aggregate", "option", "at='row'",
    "g.aggregate(torch.randn(3, 2), at='row')", ValueError, r"at must be 'dst' or 'src', got 'row'", GR)
row("Graph.aggregate/reduce-unknown", "equiops.Graph.aggregate", "option", "reduce='prod'",
    "g.aggregate(torch.randn(3, 2), 'prod')", ValueError, r"reduce must be 'sum', 'mean', 'max' or 'min', got 'prod'", GR)
row("Graph.aggregate/backend-unknown", "equiops.Graph.aggregate", "option", "backend='nope'",
    "g.aggregate(torch.randn(3, 2), backend='nope')", ValueError, r"backend must be one of .*got 'nope'", GR)
row("Graph.aggregate_arg/reduce-sum", "equiops.Graph.aggregate_arg", "option", "reduce='sum' (only max/min have an arg)",
    "g.aggregate_arg(torch.randn(3, 2), 'sum')", ValueError, r"reduce must be 'max' or 'min', got 'sum'", GR)
row("Graph.aggregate_arg/values-wrong-rows", "equiops.Graph.aggregate_arg", "shape", "values with a row count != E",
    "g.aggregate_arg(torch.randn(2, 2))", ValueError, r"values must have shape \(E=3, \.\.\.\), got \(2, 2\)", GR)

# --------------------------------------------------------------------------- irreps
row("Irreps/bad-term", "equiops.Irreps", "irreps", "an unparsable term", "equiops.Irreps('2x1o+3q')",
    ValueError, r'invalid term "3q" in irreps "2x1o\+3q"')
row("Irreps/negative-mul", "equiops.Irreps", "irreps", "negative multiplicity", "equiops.Irreps('-1x0e')",
    ValueError, r'invalid term "-1x0e" in irreps "-1x0e": expected "<mul>x<l><parity>"')
row("Irreps/bad-parity", "equiops.Irreps", "irreps", "parity letter other than e/o/y", "equiops.Irreps('1x1q')",
    ValueError, r'invalid term "1x1q" in irreps "1x1q": expected .*parity e, o or y')
row("Irreps/wrong-type", "equiops.Irreps", "type", "a float", "equiops.Irreps(3.5)",
    TypeError, r"unable to convert 3\.5 into an Irreps")
row("Irreps/tuple-negative-mul", "equiops.Irreps", "irreps", "(mul, ir) tuple with mul < 0",
    "equiops.Irreps([(-2, (1, 1))])", ValueError, r"multiplicity must be >= 0, got -2")
row("Irreps.lmax/empty", "equiops.Irreps.lmax", "irreps", "lmax of an empty Irreps", "equiops.Irreps('').lmax",
    ValueError, r"Cannot get lmax of empty Irreps")
row("Irreps.randn/no-minus-one", "equiops.Irreps.randn", "shape", "size without the -1 placeholder",
    "equiops.Irreps('1x1o').randn(2, 3)", ValueError, r"size must contain exactly one -1 .*got \(2, 3\)")
row("Irreps.randn/normalization", "equiops.Irreps.randn", "option", "normalization='integral'",
    "equiops.Irreps('1x1o').randn(2, -1, normalization='integral')", ValueError,
    r"normalization must be 'component' or 'norm', got 'integral'")
row("Irrep/no-parity", "equiops.Irrep", "irreps", "'1' without a parity", "equiops.Irrep('1')",
    ValueError, r'unable to convert string "1" into an Irrep: expected "<l><parity>"')
row("Irrep/negative-l", "equiops.Irrep", "irreps", "l = -1", "equiops.Irrep(-1, 1)",
    ValueError, r"l must be a non-negative integer, got -1")
row("Irrep/bad-parity", "equiops.Irrep", "irreps", "parity = 2", "equiops.Irrep(1, 2)",
    ValueError, r"parity must be one of \(-1, 1\), got 2")
row("Irrep/bad-string", "equiops.Irrep", "irreps", "'1z'", "equiops.Irrep('1z')", ValueError, r'unable to convert string "1z" into an Irrep: expected "<l><parity>"')
row("as_irreps/bad-string", "equiops.as_irreps", "irreps", "an unparsable string", "equiops.as_irreps('1x1o+banana')",
    ValueError, r'invalid term "banana" in irreps "1x1o\+banana"')
row("as_irreps/wrong-type", "equiops.as_irreps", "type", "an object that is no irreps", "equiops.as_irreps(object())",
    TypeError, r"unable to convert <object object at .*> into an Irreps")

# --------------------------------------------------------------- spherical harmonics
SH = "x = torch.randn(4, 3, dtype=torch.float64)\n"
E = "equiops.spherical_harmonics"
row("spherical_harmonics/x-last-dim-2", E, "shape", "x of shape (4, 2)", "equiops.spherical_harmonics(2, torch.randn(4, 2))",
    ValueError, r"x must have shape \(\.\.\., 3\), got \(4, 2\)", SH)
row("spherical_harmonics/x-scalar", E, "shape", "0-d x", "equiops.spherical_harmonics(2, torch.tensor(1.0))",
    ValueError, r"x must have shape \(\.\.\., 3\), got \(\)", SH)
row("spherical_harmonics/x-int", E, "dtype", "integer x", "equiops.spherical_harmonics(2, torch.ones(4, 3, dtype=torch.long))",
    TypeError, r"x must have a floating dtype, got torch.int64", SH)
row("spherical_harmonics/x-list", E, "type", "x is a list", "equiops.spherical_harmonics(2, [[1.0, 2.0, 3.0]])",
    TypeError, r"x must be a Tensor", SH)
row("spherical_harmonics/l-negative", E, "value", "l = -1", "equiops.spherical_harmonics(-1, x)",
    ValueError, r"degrees must be in 0\.\.\d+, got l = -1", SH)
row("spherical_harmonics/l-too-large", E, "value", "l = 40 (beyond the largest degree)",
    "equiops.spherical_harmonics([0, 1, 40], x)", ValueError, r"degrees must be in 0\.\.\d+, got l = 40", SH)
row("spherical_harmonics/l-bool", E, "type", "l = True", "equiops.spherical_harmonics(True, x)",
    TypeError, r"l must be an int", SH)
row("spherical_harmonics/l-empty", E, "value", "no degree", "equiops.spherical_harmonics([], x)",
    ValueError, r"at least one degree", SH)
row("spherical_harmonics/irreps-wrong-parity", E, "irreps", "'1e+2o' (parities not (-1)^l)",
    "equiops.spherical_harmonics('1e+2o', x)", ValueError, r"inconsistent with the input parity", SH)
row("spherical_harmonics/irreps-unparsable", E, "irreps", "an unparsable irreps string",
    "equiops.spherical_harmonics('1x1o+zz', x)", ValueError, r"l must be an int, a list of ints or irreps, got '1x1o\+zz' \(invalid term \"zz\"", SH)
row("spherical_harmonics/normalization", E, "option", "normalization='foo'",
    "equiops.spherical_harmonics(2, x, normalization='foo')", ValueError, r"normalization must be one of .*got 'foo'", SH)
row("spherical_harmonics/normalize-str", E, "type", "normalize='yes'",
    "equiops.spherical_harmonics(2, x, normalize='yes')", TypeError, r"normalize must be a bool", SH)
row("spherical_harmonics/backend-unknown", E, "option", "backend='nope'",
    "equiops.spherical_harmonics(2, x, backend='nope')", ValueError, r"backend must be one of .*got 'nope'", SH)
row("spherical_harmonics/backend-cpu-on-meta", E, "device", "backend='cpu' with x on meta",
    "equiops.spherical_harmonics(2, x.to('meta'), backend='cpu')", ValueError,
    r"backend 'cpu' runs on CPU tensors, but the inputs are on meta", SH)
row("spherical_harmonics/backend-triton-on-cpu", E, "device", "backend='triton' with x on cpu",
    "equiops.spherical_harmonics(2, x, backend='triton')", ValueError, r"backend 'triton' runs on CUDA tensors", SH)
E = "equiops.spherical_harmonics_with_gradients"
row("spherical_harmonics_with_gradients/x-last-dim-4", E, "shape", "x of shape (3, 4)",
    "equiops.spherical_harmonics_with_gradients(2, torch.randn(3, 4))", ValueError, r"x must have shape \(\.\.\., 3\), got \(3, 4\)")
row("spherical_harmonics_with_gradients/x-int", E, "dtype", "integer x",
    "equiops.spherical_harmonics_with_gradients(2, torch.ones(3, 3, dtype=torch.int32))", TypeError,
    r"x must have a floating dtype, got torch.int32")
row("spherical_harmonics_with_gradients/l-negative", E, "value", "l = -3",
    "equiops.spherical_harmonics_with_gradients(-3, torch.randn(3, 3))", ValueError, r"degrees must be in 0\.\.\d+, got l = -3")
row("spherical_harmonics_with_gradients/normalization", E, "option", "normalization='unit'",
    "equiops.spherical_harmonics_with_gradients(1, torch.randn(3, 3), normalization='unit')", ValueError,
    r"normalization must be one of .*got 'unit'")
row("spherical_harmonics_with_gradients/backend-cuda-on-cpu", E, "device", "backend='cuda' with x on cpu",
    "equiops.spherical_harmonics_with_gradients(1, torch.randn(3, 3), backend='cuda')", ValueError, r"backend 'cuda' runs on CUDA tensors, but the inputs are on cpu")
E = "equiops.SphericalHarmonics"
row("SphericalHarmonics/irreps-wrong-parity", E, "irreps", "'1e+2o'", "equiops.SphericalHarmonics('1e+2o')",
    ValueError, r"inconsistent with the input parity")
row("SphericalHarmonics/irreps-in", E, "irreps", "irreps_in='2x1o'", "equiops.SphericalHarmonics(2, irreps_in='2x1o')",
    ValueError, r"irreps_in must be 1x1o")
row("SphericalHarmonics/normalization", E, "option", "normalization='x'", "equiops.SphericalHarmonics(2, normalization='x')",
    ValueError, r"normalization must be one of .*got 'x'")
row("SphericalHarmonics/backend-unknown", E, "option", "backend='x'", "equiops.SphericalHarmonics(2, backend='x')",
    ValueError, r"backend must be one of .*got 'x'")
row("SphericalHarmonics/forward-x-shape", "equiops.SphericalHarmonics.forward", "shape", "x of shape (5, 2)",
    "equiops.SphericalHarmonics(2)(torch.randn(5, 2))", ValueError, r"x must have shape \(\.\.\., 3\), got \(5, 2\)")

# --------------------------------------------------------------------- tensor products
TP = """\
ins = [(0, 0, 0, "uvw", True), (1, 1, 2, "uvw", True), (1, 0, 1, "uvu", False)]
tp = equiops.TensorProduct("2x0e+1x1o", "1x0e+1x1o", "2x0e+1x1o+1x1e", ins, internal_weights=False).double()
x = torch.randn(3, 5, dtype=torch.float64)
y = torch.randn(3, 4, dtype=torch.float64)
w = torch.randn(tp.weight_numel, dtype=torch.float64)
"""
E = "equiops.TensorProduct"
row("TensorProduct/parity-violated", E, "irreps", "instruction 1o x 1o -> 1o",
    "equiops.TensorProduct('1x1o', '1x1o', '1x1o', [(0, 0, 0, 'uvw', True)])", ValueError,
    r"instruction 0: parity violated: 1o x 1o cannot give 1o")
row("TensorProduct/selection-rule", E, "irreps", "instruction 1o x 1o -> 3e",
    "equiops.TensorProduct('1x1o', '1x1o', '1x3e', [(0, 0, 0, 'uvw', True)])", ValueError,
    r"instruction 0: selection rule violated: 1o x 1o gives degrees 0\.\.2, not 3")
row("TensorProduct/i-in1-out-of-range", E, "index", "i_in1 beyond irreps_in1",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(1, 0, 0, 'uvw', True)])", ValueError,
    r"instruction 0: i_in1=1 is out of range for 1x0e \(1 irreps\)")
row("TensorProduct/i-out-negative", E, "index", "i_out = -1",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, -1, 'uvw', True)])", ValueError,
    r"instruction 0: i_out=-1 is out of range")
row("TensorProduct/i-in1-float", E, "type", "i_in1 = 0.0",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0.0, 0, 0, 'uvw', True)])", TypeError, r"instruction 0: i_in1 must be an int")
row("TensorProduct/mode-unknown", E, "option", "mode 'uvx'",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvx', True)])", ValueError,
    r"instruction 0: mode must be one of .*'uvx'")
row("TensorProduct/mul-mismatch", E, "irreps", "mode 'uvu' with mul_in1 != mul_out",
    "equiops.TensorProduct('2x0e', '3x0e', '3x0e', [(0, 0, 0, 'uvu', True)])", ValueError,
    r"mode 'uvu' needs mul_in1 == mul_out, got mul_in1=2, mul_in2=3, mul_out=3")
row("TensorProduct/instruction-short", E, "shape", "a 4-tuple instruction",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw')])", ValueError, r"instruction 0 must be \(i_in1, i_in2, i_out, mode")
row("TensorProduct/instructions-str", E, "type", "instructions given as a string",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', 'uvw')", TypeError, r"instructions must be a list of tuples, got str")
row("TensorProduct/irreps-unparsable", E, "irreps", "irreps_in1 unparsable",
    "equiops.TensorProduct('1x0q', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)])", ValueError, r'invalid term "1x0q" in irreps "1x0q"')
row("TensorProduct/irrep-normalization", E, "option", "irrep_normalization='integral'",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], irrep_normalization='integral')", ValueError,
    r"irrep_normalization must be 'component', 'norm' or 'none', got 'integral'")
row("TensorProduct/path-normalization", E, "option", "path_normalization='paths'",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], path_normalization='paths')", ValueError,
    r"path_normalization must be 'element', 'path' or 'none', got 'paths'")
row("TensorProduct/in1-var-length", E, "shape", "in1_var with the wrong length",
    "equiops.TensorProduct('1x0e+1x1o', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], in1_var=[1.0])", ValueError,
    r"in1_var must have one entry per irrep \(2\), got 1")
row("TensorProduct/internal-unshared", E, "option", "internal_weights=True with shared_weights=False",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], internal_weights=True, shared_weights=False)",
    ValueError, r"internal_weights=True needs shared_weights=True")
row("TensorProduct/backend-unknown", E, "option", "backend='gpu'",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], backend='gpu')", ValueError,
    r"backend must be one of .*got 'gpu'")
E = "equiops.TensorProduct.forward"
row("TensorProduct.forward/x-width", E, "shape", "x with the wrong last dimension", "tp(x[:, :4], y, w)", ValueError,
    r"TensorProduct: x must have shape \(\.\.\., 5\) for 2x0e\+1x1o, got \(3, 4\)", TP)
row("TensorProduct.forward/y-width", E, "shape", "y with the wrong last dimension", "tp(x, torch.cat([y, y[:, :1]], 1), w)",
    ValueError, r"TensorProduct: y must have shape \(\.\.\., 4\) for 1x0e\+1x1o, got \(3, 5\)", TP)
row("TensorProduct.forward/rows-not-broadcast", E, "shape", "x with 3 rows, y with 2", "tp(x, y[:2], w)", ValueError,
    r"leading dimensions do not broadcast: x \(3, 5\), y \(2, 4\)", TP)
row("TensorProduct.forward/weight-length", E, "shape", "shared weights one too short", "tp(x, y, w[:-1])", ValueError,
    r"TensorProduct: shared weights must have shape \(\d+,\), got \(\d+,\)", TP)
row("TensorProduct.forward/weight-missing", E, "value", "no weights to a product without internal weights", "tp(x, y)",
    ValueError, r"weights must be given: this product has no internal weights", TP)
row("TensorProduct.forward/weight-list-length", E, "shape", "a list of 1 weight tensor for 2 weighted paths", "tp(x, y, [w])",
    ValueError, r"expected 2 weight tensors \(one per weighted path\), got 1", TP)
row("TensorProduct.forward/weight-ndarray", E, "type", "weights as a numpy array", "tp(x, y, w.numpy())", TypeError,
    r"weight must be a tensor or a list of tensors, got ndarray", TP)
row("TensorProduct.forward/x-list", E, "type", "x is a list", "tp(x.tolist(), y, w)", TypeError,
    r"TensorProduct: x must be a tensor, got list", TP)
row("TensorProduct.forward/y-float32", E, "dtype", "y float32, x float64", "tp(x, y.float(), w)", TypeError,
    r"y must have dtype torch.float64 like x, got torch.float32", TP)
row("TensorProduct.forward/weight-float32", E, "dtype", "weight float32, x float64", "tp(x, y, w.float())", TypeError,
    r"weight must have dtype torch.float64 like x, got torch.float32", TP)
row("TensorProduct.forward/x-int", E, "dtype", "integer inputs", "tp(x.long(), y.long(), w)", TypeError,
    r"x must be a floating-point tensor, got torch.int64", TP)
row("TensorProduct.forward/y-meta", E, "device", "y on meta, x on cpu", "tp(x, y.to('meta'), w)", ValueError,
    r"y must be on cpu like x, got meta", TP)
row("TensorProduct.forward/weight-meta", E, "device", "weight on meta, x on cpu", "tp(x, y, w.to('meta'))", ValueError,
    r"weight must be on cpu like x, got meta", TP)
row("TensorProduct.forward/cpu-bfloat16", E, "dtype", "bfloat16 inputs with backend='cpu'",
    "tp2 = equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], backend='cpu').to(torch.bfloat16)\n"
    "tp2(torch.randn(2, 1, dtype=torch.bfloat16), torch.randn(2, 1, dtype=torch.bfloat16))", TypeError,
    r"the CPU kernels take float32 or float64, got torch.bfloat16")
row("TensorProduct.forward/backend-cuda-on-cpu", E, "device", "backend='cuda' with CPU tensors",
    "equiops.TensorProduct('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], backend='cuda').double()"
    "(torch.randn(2, 1, dtype=torch.float64), torch.randn(2, 1, dtype=torch.float64))", ValueError,
    r"backend 'cuda' runs on CUDA tensors, but the inputs are on cpu")
row("TensorProduct.forward/unshared-no-batch", E, "shape", "unshared weights without a batch dimension",
    "tu = equiops.TensorProduct('2x0e+1x1o', '1x0e+1x1o', '2x0e+1x1o+1x1e', ins, shared_weights=False).double()\n"
    "tu(x, y, torch.randn(tu.weight_numel, dtype=torch.float64))", ValueError,
    r"unshared weights must have shape \(\.\.\., \d+\) with a batch dimension, got \(\d+,\)", TP)
row("TensorProduct.weight_view_for_instruction/no-weights", "equiops.TensorProduct.weight_view_for_instruction", "index",
    "an instruction without weights", "tp.weight_view_for_instruction(2)", ValueError, r"Instruction 2 has no weights", TP)

E = "equiops.FullyConnectedTensorProduct"
row("FullyConnectedTensorProduct/irreps-unparsable", E, "irreps", "irreps_out unparsable",
    "equiops.FullyConnectedTensorProduct('1x0e', '1x0e', '1xfoo')", ValueError, r'invalid term "1xfoo" in irreps "1xfoo"')
row("FullyConnectedTensorProduct/backend-unknown", E, "option", "backend='fast'",
    "equiops.FullyConnectedTensorProduct('1x0e', '1x0e', '1x0e', backend='fast')", ValueError, r"backend must be one of .*'fast'")
row("FullyConnectedTensorProduct/forward-x-width", E, "shape", "x with the wrong last dimension",
    "fc = equiops.FullyConnectedTensorProduct('2x0e', '1x0e', '1x0e')\nfc(torch.randn(3, 3), torch.randn(3, 1))", ValueError,
    r"FullyConnectedTensorProduct: x must have shape \(\.\.\., 2\) for 2x0e, got \(3, 3\)")
row("FullyConnectedTensorProduct/forward-y-meta", E, "device", "y on meta, x on cpu",
    "fc = equiops.FullyConnectedTensorProduct('2x0e', '1x0e', '1x0e')\nfc(torch.randn(3, 2), torch.randn(3, 1, device='meta'))",
    ValueError, r"y must be on cpu like x, got meta")
E = "equiops.FullTensorProduct"
row("FullTensorProduct/filter-ir-out", E, "irreps", "filter_ir_out=['x']",
    "equiops.FullTensorProduct('1x0e', '1x1o', filter_ir_out=['x'])", ValueError, r"filter_ir_out .* must be an iterable of irreps")
row("FullTensorProduct/forward-y-width", E, "shape", "y with the wrong last dimension",
    "ft = equiops.FullTensorProduct('1x0e', '1x1o')\nft(torch.randn(2, 1), torch.randn(2, 2))", ValueError,
    r"FullTensorProduct: y must have shape \(\.\.\., 3\) for 1x1o, got \(2, 2\)")
E = "equiops.ElementwiseTensorProduct"
row("ElementwiseTensorProduct/irreps-count", E, "irreps", "inputs with different numbers of irreps",
    "equiops.ElementwiseTensorProduct('2x0e', '3x0e')", ValueError,
    r"ElementwiseTensorProduct: the inputs must have the same number of irreps")
row("ElementwiseTensorProduct/forward-x-dtype", E, "dtype", "x float64, y float32",
    "et = equiops.ElementwiseTensorProduct('2x0e', '2x0e')\net(torch.randn(2, 2, dtype=torch.float64), torch.randn(2, 2))",
    TypeError, r"y must have dtype torch.float64 like x, got torch.float32")
E = "equiops.ChannelWiseTensorProduct"
row("ChannelWiseTensorProduct/backend-unknown", E, "option", "backend='fast'",
    "equiops.ChannelWiseTensorProduct('2x0e', '1x0e', '2x0e', backend='fast')", ValueError, r"backend must be one of")
row("ChannelWiseTensorProduct/layout-unknown", E, "option", "layout='foo'",
    "equiops.ChannelWiseTensorProduct('2x0e', '1x0e', '2x0e', layout='foo')", ValueError, r"layout must be one of \('mace', 'nequip', 'creation'\), got 'foo'")
row("ChannelWiseTensorProduct/irreps-unparsable", E, "irreps", "irreps_in2 unparsable",
    "equiops.ChannelWiseTensorProduct('2x0e', '1x9', '2x0e')", ValueError, r'invalid term "1x9" in irreps "1x9"')
row("ChannelWiseTensorProduct/forward-weight-width", E, "shape", "per-edge weights with the wrong width",
    "cw = equiops.ChannelWiseTensorProduct('2x0e+1x1o', '0e+1o', '2x0e+1x1o')\n"
    "cw(torch.randn(4, 5), torch.randn(4, 4), torch.randn(4, cw.weight_numel + 1))", ValueError, r"unshared weights must have shape \(\.\.\., 6\) with a batch dimension, got \(4, 7\)")

E = "equiops.from_e3nn"
row("from_e3nn/not-e3nn", E, "type", "a torch.nn.Linear", "equiops.from_e3nn(torch.nn.Linear(2, 2))", TypeError,
    r"from_e3nn expects an e3nn.o3.TensorProduct, got Linear")
row("from_e3nn/backend-unknown", E, "option", "backend='nope'",
    "from e3nn import o3\nequiops.from_e3nn(o3.FullyConnectedTensorProduct('1x0e', '1x0e', '1x0e'), backend='nope')",
    ValueError, r"backend must be one of .*'nope'")
E = "equiops.replace_e3nn_tensor_products"
row("replace_e3nn_tensor_products/backend-unknown", E, "option", "backend='nope'",
    "from e3nn import o3\nm = torch.nn.Sequential(o3.FullyConnectedTensorProduct('1x0e', '1x0e', '1x0e'))\n"
    "equiops.replace_e3nn_tensor_products(m, backend='nope')", ValueError, r"backend must be one of .*'nope'")
row("replace_e3nn_tensor_products/not-a-module", E, "type", "a list instead of a module",
    "equiops.replace_e3nn_tensor_products([1, 2])", TypeError, r"model must be a torch.nn.Module, got list")

# ------------------------------------------------------------- fused convolution
CV = """\
ir_out, ins = equiops.nn.channelwise_instructions("2x0e+1x1o", "0e+1o", "2x0e+1x1o")
conv = equiops.TensorProductConv("2x0e+1x1o", "0e+1o", ir_out, ins, shared_weights=False, internal_weights=False).double()
n, E = 4, 6
x = torch.randn(n, 5, dtype=torch.float64)
attr = torch.randn(E, 4, dtype=torch.float64)
w = torch.randn(E, conv.weight_numel, dtype=torch.float64)
src = torch.tensor([0, 1, 2, 3, 0, 2])
dst = torch.tensor([1, 2, 3, 0, 0, 1])
"""
E = "equiops.TensorProductConv"
row("TensorProductConv/parity-violated", E, "irreps", "instruction 1o x 1o -> 1o",
    "equiops.TensorProductConv('1x1o', '1x1o', '1x1o', [(0, 0, 0, 'uvw', True)])", ValueError, r"parity violated")
row("TensorProductConv/backend-unknown", E, "option", "backend='nope'",
    "equiops.TensorProductConv('1x0e', '1x0e', '1x0e', [(0, 0, 0, 'uvw', True)], backend='nope')", ValueError,
    r"backend must be one of .*'nope'")
E = "equiops.TensorProductConv.forward"
row("TensorProductConv.forward/src-too-large", E, "index", "edge_src value >= num_nodes", "conv(x, attr, w, src + n, dst)",
    IndexError, r"edge_src holds 7, expected sender \(row of x\) ids in \[0, 4\)", CV)
row("TensorProductConv.forward/dst-negative", E, "index", "negative edge_dst value", "conv(x, attr, w, src, dst - n)",
    IndexError, r"edge_dst holds -4, expected receiver node ids in \[0, 4\)", CV)
row("TensorProductConv.forward/src-float", E, "dtype", "float edge_src", "conv(x, attr, w, src.float(), dst)",
    TypeError, r"edge_src must be an int64 \(or int32\) tensor, got torch.float32", CV)
row("TensorProductConv.forward/attr-rows", E, "shape", "edge_attr with E-1 rows", "conv(x, attr[:-1], w, src, dst)",
    ValueError, r"edge_attr must have one row per edge \(E = 6\) or a single row, got shape \(5, 4\)", CV)
row("TensorProductConv.forward/weight-rows", E, "shape", "edge weights with E-1 rows", "conv(x, attr, w[:-1], src, dst)",
    ValueError, r"weight must have one row per edge \(E = 6\) or a single row, got shape \(5, 6\)", CV)
row("TensorProductConv.forward/attr-float32", E, "dtype", "edge_attr float32, x float64", "conv(x, attr.float(), w, src, dst)",
    TypeError, r"edge_attr must have dtype torch.float64 like x, got torch.float32", CV)
row("TensorProductConv.forward/src-dst-length", E, "shape", "edge_src and edge_dst of different lengths",
    "conv(x, attr, w, src[:-1], dst)", ValueError, r"edge_src and edge_dst must have the same length, got 5 and 6", CV)
row("TensorProductConv.forward/x-width", E, "shape", "x with the wrong last dimension", "conv(x[:, :-1], attr, w, src, dst)",
    ValueError, r"x must have shape \(rows, 5\) for 2x0e\+1x1o, got \(4, 4\)", CV)
row("TensorProductConv.forward/no-edges", E, "value", "neither edges nor a graph", "conv(x, attr, w)",
    ValueError, r"give edge_src and edge_dst, or a graph", CV)
row("TensorProductConv.forward/graph-size", E, "shape", "a graph of n nodes with x of n-1 rows",
    "conv(x[:-1], attr, w, graph=equiops.Graph(src, dst, n))", ValueError, r"with a graph of 4 nodes, x must have 4 rows .*got x with 3 rows", CV)
row("TensorProductConv.forward/attr-meta", E, "device", "edge_attr on meta, x on cpu",
    "conv(x, attr.to('meta'), w, src, dst)", ValueError, r"edge_attr must be on cpu like x, got meta", CV)
row("TensorProductConv.forward/src-meta", E, "device", "edge_src on meta, x on cpu",
    "conv(x, attr, w, src.to('meta'), dst)", ValueError, r"edge_src must be on cpu like x, got meta", CV)
row("TensorProductConv.forward/x-list", E, "type", "x is a list", "conv(x.tolist(), attr, w, src, dst)",
    TypeError, r"x must be a tensor, got list", CV)
E = "equiops.tensor_product_conv"
row("tensor_product_conv/problem-malformed", E, "value", "a malformed problem string",
    "equiops.tensor_product_conv(x, attr, w, src, dst, 'hello', n)", ValueError, r"malformed problem string", CV)
row("tensor_product_conv/dst-too-large", E, "index", "edge_dst value >= num_nodes",
    "equiops.tensor_product_conv(x, attr, w, src, dst + n, conv.problem, n)", IndexError, r"edge_dst holds 7, expected receiver node ids in \[0, 4\)", CV)
row("tensor_product_conv/num-nodes-negative", E, "value", "num_nodes = -1",
    "equiops.tensor_product_conv(x, attr, w, src, dst, conv.problem, -1)", ValueError, r"num_nodes must be an int >= 0, got -1", CV)
row("tensor_product_conv/backend-unknown", E, "option", "backend='nope'",
    "equiops.tensor_product_conv(x, attr, w, src, dst, conv.problem, n, backend='nope')", ValueError,
    r"backend must be one of .*'nope'", CV)

# ------------------------------------------------------------ backends and switches
row("set_backend/unknown", "equiops.set_backend", "option", "'nope'", "equiops.set_backend('nope')", ValueError,
    r"backend must be one of \('auto', 'cpu', 'cuda', 'triton', 'torch'\), got 'nope'")
row("set_backend/not-a-string", "equiops.set_backend", "type", "an int", "equiops.set_backend(3)", ValueError,
    r"backend must be one of .*got 3")
row("use_backend/unknown", "equiops.use_backend", "option", "'nope'", "with equiops.use_backend('nope'):\n    pass",
    ValueError, r"backend must be one of .*got 'nope'")
row("set_deterministic/not-a-bool", "equiops.set_deterministic", "type", "the string 'false'",
    "equiops.set_deterministic('false')", TypeError, r"flag must be a bool, got str")
row("deterministic/not-a-bool", "equiops.deterministic", "type", "the string 'no'",
    "with equiops.deterministic('no'):\n    pass", TypeError, r"flag must be a bool, got str")
row("patch_e3nn/backend-unknown", "equiops.patch_e3nn", "option", "backend='nope'",
    "with equiops.patch_e3nn(backend='nope'):\n    pass", ValueError, r"backend must be one of .*'nope'")

# --------------------------------------------------------------------------- so3
row("so3.wigner_3j/selection-rule", "equiops.so3.wigner_3j", "value", "l3 > l1 + l2", "equiops.so3.wigner_3j(1, 1, 3)",
    ValueError, r"wigner_3j\(l1=1, l2=1, l3=3\)")
row("so3.wigner_3j/negative", "equiops.so3.wigner_3j", "value", "l1 = -1", "equiops.so3.wigner_3j(-1, 1, 1)",
    ValueError, r"l1 must be a non-negative integer, got -1")
row("so3.wigner_3j/float", "equiops.so3.wigner_3j", "type", "l2 = 1.5", "equiops.so3.wigner_3j(1, 1.5, 1)",
    ValueError, r"l2 must be a non-negative integer, got 1.5")
row("so3.wigner_D/negative", "equiops.so3.wigner_D", "value", "l = -1",
    "equiops.so3.wigner_D(-1, torch.zeros(()), torch.zeros(()), torch.zeros(()))", ValueError,
    r"l must be a non-negative integer, got -1")
row("so3.wigner_D/angles-not-broadcast", "equiops.so3.wigner_D", "shape", "alpha (2,) and beta (3,)",
    "equiops.so3.wigner_D(1, torch.zeros(2), torch.zeros(3), torch.zeros(()))", ValueError,
    r"wigner_D: alpha, beta and gamma must broadcast to one shape, got \(2,\), \(3,\) and \(\)")

# ------------------------------------------------ op-level functions: egnn, pointconv
EG = """\
from equiops.ops.egnn import egnn_message, MessageParams, MessageConfig
g = torch.Generator().manual_seed(0)
t = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
n, E, H1, M, Hc, D = 6, 10, 16, 12, 20, 2
ni, nj, coord, ea = t(n, H1), t(n, H1), t(n, 3), t(E, D)
src = torch.randint(0, n, (E,), generator=g)
dst = torch.randint(0, n, (E,), generator=g)
p = MessageParams(w_radial=t(H1), w_edge=t(H1, D), w2=t(M, H1), b2=t(M), w_att=t(M), b_att=t(1),
                  wc1=t(Hc, M), bc1=t(Hc), wc2=t(Hc), bc2=t(1))
import dataclasses
def call(**over):
    args = dict(node_i=ni, node_j=nj, coord=coord, edge_attr=ea, src=src, dst=dst)
    args.update({k: v for k, v in over.items() if k in args})
    q = dataclasses.replace(p, **{k: v for k, v in over.items() if k not in args and k not in ("config", "backend")})
    return egnn_message(*args.values(), q, over.get("config", MessageConfig()), backend=over.get("backend", "cpu"))
"""
E = "equiops.ops.egnn.egnn_message"
row("egnn_message/node-j-rows", E, "shape", "node_j with n-1 rows", "call(node_j=nj[:5])", ValueError,
    r"node_j must have shape \(6, 16\), got \(5, 16\)", EG)
row("egnn_message/coord-width", E, "shape", "coord of width 2", "call(coord=coord[:, :2])", ValueError,
    r"coord must have shape \(6, 3\), got \(6, 2\)", EG)
row("egnn_message/w2-width", E, "shape", "w2 with the wrong width", "call(w2=p.w2[:, :5])", ValueError,
    r"w2 must have shape \(M, 16\)", EG)
row("egnn_message/wc2-float32", E, "dtype", "wc2 float32, node_i float64", "call(wc2=p.wc2.float())", TypeError,
    r"wc2 must have node_i's dtype", EG)
row("egnn_message/src-int32", E, "dtype", "int32 src", "call(src=src.int())", ValueError, r"src must be a 1-D int64 tensor \(E,\), got torch.int32 of shape \(10,\)", EG)
row("egnn_message/src-too-large", E, "index", "src value = n", "s2 = src.clone(); s2[3] = n\ncall(src=s2)", IndexError,
    r"src\[3\] = 6 is not a node id in \[0, 6\)", EG)
row("egnn_message/dst-negative", E, "index", "dst value = -1", "d2 = dst.clone(); d2[0] = -1\ncall(dst=d2)", IndexError,
    r"dst\[0\] = -1", EG)
row("egnn_message/att-half-given", E, "value", "w_att without b_att", "call(b_att=None)", ValueError,
    r"w_att and b_att must be given together", EG)
row("egnn_message/coord-meta", E, "device", "coord on meta, node_i on cpu", "call(coord=coord.to('meta'))", ValueError,
    r"coord must be on node_i's device cpu, got meta", EG)
row("egnn_message/node-i-list", E, "type", "node_i is a list", "call(node_i=ni.tolist())", TypeError,
    r"node_i must be a torch.Tensor, got list", EG)
row("egnn_message/config-coord-norm", "equiops.ops.egnn.MessageConfig", "option", "coord_norm='unit'",
    "MessageConfig(coord_norm='unit')", ValueError, r"coord_norm: expected one of .*got 'unit'", EG)
row("egnn_message/act-callable-on-cpu", E, "option", "a callable act (no kernel) with backend='cpu'",
    "call(config=MessageConfig(act=torch.tanh))", ValueError, r"backend 'cpu' has no kernel for act=.*; use 'torch'", EG)
row("egnn_message/backend-unknown", E, "option", "backend='nope'", "call(backend='nope')", ValueError,
    r"backend must be one of .*'nope'", EG)

PC = """\
from equiops.ops.pointconv import pointconv
g = torch.Generator().manual_seed(0)
B, m, n, K, C, ci, co = 2, 6, 5, 3, 4, 3, 5
penult = torch.randn(B, m, K, C, generator=g, dtype=torch.float64)
values = torch.randn(B, n, ci, generator=g, dtype=torch.float64)
idx = torch.randint(0, n, (B, m, K), generator=g)
mask = torch.rand(B, m, K, generator=g) < 0.7
weight = torch.randn(co, C * ci, generator=g, dtype=torch.float64)
bias = torch.randn(co, generator=g, dtype=torch.float64)
"""
E = "equiops.ops.pointconv.pointconv"
row("pointconv/penult-3d", E, "shape", "3-D penult", "pointconv(penult[0], values, idx, mask, weight, bias, backend='cpu')",
    ValueError, r"penult must be 4-D", PC)
row("pointconv/values-batch", E, "shape", "values with batch 1 for B = 2",
    "pointconv(penult, values[:1], idx, mask, weight, bias, backend='cpu')", ValueError, r"values must have shape \(2, n, ci\)", PC)
row("pointconv/idx-shape", E, "shape", "nbhd_idx with K-1 neighbours",
    "pointconv(penult, values, idx[:, :, :2], mask, weight, bias, backend='cpu')", ValueError,
    r"nbhd_idx must have shape \(2, 6, 3\)", PC)
row("pointconv/weight-width", E, "shape", "weight with the wrong width",
    "pointconv(penult, values, idx, mask, weight[:, :11], bias, backend='cpu')", ValueError, r"weight must have shape \(co, 12\)", PC)
row("pointconv/mask-float", E, "dtype", "float nbhd_mask", "pointconv(penult, values, idx, mask.float(), weight, bias, backend='cpu')",
    TypeError, r"nbhd_mask must be torch.bool", PC)
row("pointconv/idx-int32", E, "dtype", "int32 nbhd_idx", "pointconv(penult, values, idx.int(), mask, weight, bias, backend='cpu')",
    TypeError, r"nbhd_idx must be torch.int64", PC)
row("pointconv/values-float32", E, "dtype", "values float32, penult float64",
    "pointconv(penult, values.float(), idx, mask, weight, bias, backend='cpu')", TypeError, r"values must have penult's dtype", PC)
row("pointconv/idx-too-large", E, "index", "a valid neighbour with id n",
    "i2 = idx.clone(); m2 = mask.clone(); i2[1, 2, 0] = n; m2[1, 2, 0] = True\n"
    "pointconv(penult, values, i2, m2, weight, bias, backend='cpu')", IndexError,
    r"nbhd_idx\[1, 2, 0\] = 5 is not a point id in \[0, 5\)", PC)
row("pointconv/idx-negative", E, "index", "a valid neighbour with id -1",
    "i2 = idx.clone(); m2 = mask.clone(); i2[1, 2, 0] = -1; m2[1, 2, 0] = True\n"
    "pointconv(penult, values, i2, m2, weight, bias, backend='cpu')", IndexError, r"nbhd_idx\[1, 2, 0\] = -1", PC)
row("pointconv/mean-int", E, "type", "mean = 1", "pointconv(penult, values, idx, mask, weight, bias, 1, backend='cpu')",
    TypeError, r"mean must be a bool", PC)
row("pointconv/values-meta", E, "device", "values on meta, penult on cpu",
    "pointconv(penult, values.to('meta'), idx, mask, weight, bias, backend='cpu')", ValueError, r"values must be on penult's device cpu, got meta", PC)
row("pointconv/backend-cuda-on-cpu", E, "device", "backend='cuda' with CPU tensors",
    "pointconv(penult, values, idx, mask, weight, bias, backend='cuda')", ValueError, r"backend 'cuda' runs on CUDA tensors, but the inputs are on cpu", PC)

# ------------------------------------------------------------------- raw operators
OPS = "ops = torch.ops.equiops\n"
RS = OPS + "src = torch.randn(1, 5, 2)\nindptr = torch.tensor([[0, 2, 5]])\nindex = torch.zeros(1, 5, 2, dtype=torch.long)\n"
E = "torch.ops.equiops.segment_sum"
row("op.segment_sum/perm-too-large", E, "index", "perm value >= N",
    "ops.segment_sum(src, indptr, torch.tensor([0, 1, 2, 3, 9]), 'cpu')", IndexError, r"perm holds 9", RS)
row("op.segment_sum/indptr-beyond-rows", E, "index", "indptr[-1] > N", "ops.segment_sum(src, torch.tensor([[0, 2, 7]]), None, 'cpu')",
    IndexError, r"indptr\[0, -1\] = 7 exceeds the number of rows N = 5", RS)
row("op.segment_sum/indptr-decreasing", E, "index", "decreasing indptr",
    "ops.segment_sum(src, torch.tensor([[0, 4, 2, 5]]), None, 'cpu')", ValueError, r"indptr must be non-decreasing, got indptr\[0, 1\] = 4 > indptr\[0, 2\] = 2", RS)
row("op.segment_sum/indptr-batch", E, "shape", "indptr batch 2 for B = 1",
    "ops.segment_sum(src, torch.tensor([[0, 5], [0, 5]]), None, 'cpu')", ValueError,
    r"indptr's batch size must be 1 or B = 1, got 2", RS)
row("op.segment_sum/src-2d", E, "shape", "2-D src (the op takes (B, N, C))", "ops.segment_sum(src[0], indptr, None, 'cpu')",
    ValueError, r"src must have shape \(B, N, C\), got \[5, 2\]", RS)
row("op.segment_sum/indptr-float", E, "dtype", "float indptr", "ops.segment_sum(src, indptr.float(), None, 'cpu')",
    TypeError, r"indptr must be int64, got Float", RS)
row("op.segment_sum/perm-length", E, "shape", "perm shorter than N",
    "ops.segment_sum(src, indptr, torch.tensor([0, 1, 2]), 'cpu')", IndexError,
    r"indptr\[0, -1\] = 5 exceeds the length of perm = 3", RS)
row("op.segment_sum/perm-int32", E, "dtype", "int32 perm",
    "ops.segment_sum(src, indptr, torch.arange(5, dtype=torch.int32), 'cpu')", TypeError, r"perm must be int64, got Int", RS)
row("op.segment_sum/indptr-meta", E, "device", "indptr on meta, src on cpu",
    "ops.segment_sum(src, indptr.to('meta'), None, 'cpu')", ValueError, r"indptr must be on cpu like src, got meta", RS)
row("op.segment_sum/backend-cuda-on-cpu", E, "device", "backend 'cuda' with CPU tensors",
    "ops.segment_sum(src, indptr, None, 'cuda')", ValueError, r"backend 'cuda' cannot run on CPU tensors", RS)
row("op.segment_sum/backend-unknown", E, "option", "backend 'nope'", "ops.segment_sum(src, indptr, None, 'nope')",
    ValueError, r"backend 'nope' cannot run on CPU tensors", RS)
E = "torch.ops.equiops.segment_minmax"
row("op.segment_minmax/reduce-mean", E, "option", "reduce 'mean'", "ops.segment_minmax(src, indptr, None, 'mean', 'cpu')",
    ValueError, r"reduce must be 'max' or 'min'", RS)
row("op.segment_minmax/indptr-beyond-rows", E, "index", "indptr[-1] > N",
    "ops.segment_minmax(src, torch.tensor([[0, 9]]), None, 'max', 'cpu')", IndexError, r"indptr\[0, -1\] = 9 exceeds the number of rows N = 5", RS)
row("op.segment_minmax/perm-negative", E, "index", "negative perm value",
    "ops.segment_minmax(src, indptr, torch.tensor([0, 1, -2, 3, 4]), 'min', 'cpu')", IndexError, r"perm holds -2", RS)
row("op.segment_minmax/src-int", E, "dtype", "integer src", "ops.segment_minmax(index, indptr, None, 'max', 'cpu')",
    TypeError, r"src must be float16, bfloat16, float32 or float64, got Long", RS)
E = "torch.ops.equiops.segment_gather"
row("op.segment_gather/indptr-beyond-rows", E, "index", "indptr[-1] > num_rows",
    "ops.segment_gather(src[:, :2], torch.tensor([[0, 3, 9]]), None, 5, 'cpu')", IndexError, r"indptr\[0, -1\] = 9 exceeds num_rows = 5", RS)
row("op.segment_gather/indptr-segments", E, "shape", "indptr with a segment count != src rows",
    "ops.segment_gather(src, torch.tensor([[0, 3, 5]]), None, 5, 'cpu')", ValueError,
    r"src must hold one row per segment \(2\), got 5", RS)
row("op.segment_gather/perm-too-large", E, "index", "perm value >= num_rows",
    "ops.segment_gather(src[:, :2], torch.tensor([[0, 2, 5]]), torch.tensor([0, 1, 2, 3, 5]), 5, 'cpu')", IndexError,
    r"perm holds 5", RS)
row("op.segment_gather/num-rows-negative", E, "value", "num_rows = -1",
    "ops.segment_gather(src[:, :2], torch.tensor([[0, 0, 0]]), None, -1, 'cpu')", ValueError,
    r"num_rows must be >= 0, got -1", RS)
E = "torch.ops.equiops.scatter_sum"
row("op.scatter_sum/index-too-large", E, "index", "index value >= dim_size",
    "ops.scatter_sum(src, torch.full((1, 5, 2), 3), 3, 'cpu')", IndexError, r"index holds 3", RS)
row("op.scatter_sum/index-negative", E, "index", "negative index value",
    "ops.scatter_sum(src, torch.full((1, 5, 2), -1), 3, 'cpu')", IndexError, r"index holds -1", RS)
row("op.scatter_sum/index-shape", E, "shape", "index with a different shape than src",
    "ops.scatter_sum(src, torch.zeros(1, 4, 2, dtype=torch.long), 3, 'cpu')", ValueError, r"index must have src's shape", RS)
row("op.scatter_sum/index-float", E, "dtype", "float index", "ops.scatter_sum(src, index.float(), 3, 'cpu')",
    TypeError, r"index must be int64, got Float", RS)
row("op.scatter_sum/index-int32", E, "dtype", "int32 index (the op takes int64; the API converts)",
    "ops.scatter_sum(src, index.int(), 3, 'cpu')", TypeError, r"index must be int64, got Int", RS)
row("op.scatter_sum/dim-size-negative", E, "value", "dim_size = -1", "ops.scatter_sum(src, index, -1, 'cpu')",
    ValueError, r"dim_size must be >= 0, got -1", RS)
row("op.scatter_sum/index-meta", E, "device", "index on meta, src on cpu", "ops.scatter_sum(src, index.to('meta'), 3, 'cpu')",
    ValueError, r"index must be on cpu like src, got meta", RS)
E = "torch.ops.equiops.scatter_minmax"
row("op.scatter_minmax/reduce-sum", E, "option", "reduce 'sum'", "ops.scatter_minmax(src, index, 3, 'sum', 'cpu')",
    ValueError, r"reduce must be 'max' or 'min'", RS)
row("op.scatter_minmax/index-too-large", E, "index", "index value >= dim_size",
    "ops.scatter_minmax(src, index + 3, 3, 'max', 'cpu')", IndexError, r"index holds 3", RS)
row("op.scatter_minmax/index-shape", E, "shape", "index with a different shape than src",
    "ops.scatter_minmax(src, index[:, :3], 3, 'min', 'cpu')", ValueError, r"index must have src's shape", RS)

RSH = OPS + """\
from equiops.ops import spherical_harmonics as sho
x = torch.randn(4, 3, dtype=torch.float64)
C = sho.coupling_table(3)
args = (True, "integral", "cpu")
"""
E = "torch.ops.equiops.spherical_harmonics"
row("op.spherical_harmonics/x-width", E, "shape", "x of shape (4, 2)",
    "ops.spherical_harmonics(torch.randn(4, 2, dtype=torch.float64), C, [0, 1], *args)", ValueError, r"x must have shape \(N, 3\)", RSH)
row("op.spherical_harmonics/x-half", E, "dtype", "float16 x", "ops.spherical_harmonics(x.half(), C, [0, 1], *args)",
    TypeError, r"x must be float32 or float64", RSH)
row("op.spherical_harmonics/coupling-float32", E, "dtype", "float32 coupling", "ops.spherical_harmonics(x, C.float(), [0, 1], *args)",
    TypeError, r"coupling must be float64", RSH)
row("op.spherical_harmonics/coupling-huge", E, "index", "coupling entries with huge indices",
    "ops.spherical_harmonics(x, torch.full((5, 4), 1e9, dtype=torch.float64), [0, 1], *args)", ValueError,
    r"not a valid \(i, j, k, c\) entry", RSH)
row("op.spherical_harmonics/coupling-nan", E, "value", "NaN coupling entries",
    "ops.spherical_harmonics(x, torch.full((5, 4), float('nan'), dtype=torch.float64), [0, 1], *args)", ValueError,
    r"not a valid \(i, j, k, c\) entry", RSH)
row("op.spherical_harmonics/coupling-order", E, "value", "coupling rows reversed",
    "ops.spherical_harmonics(x, C.flip(0).contiguous(), [0, 1], *args)", ValueError,
    r"out of order or couples the wrong degrees", RSH)
row("op.spherical_harmonics/l-beyond-table", E, "index", "ls entry beyond the coupling table",
    "ops.spherical_harmonics(x, C, [0, 4], *args)", ValueError, r"ls\[1\] = 4 is outside the coupling table's degrees 0\.\.3", RSH)
row("op.spherical_harmonics/l-negative", E, "index", "ls entry -1", "ops.spherical_harmonics(x, C, [0, -1], *args)",
    ValueError, r"ls\[1\] = -1", RSH)
row("op.spherical_harmonics/normalization", E, "option", "normalization 'bogus'",
    "ops.spherical_harmonics(x, C, [1], True, 'bogus', 'cpu')", ValueError, r"normalization must be", RSH)
row("op.spherical_harmonics/backend-unknown", E, "option", "backend 'nope'",
    "ops.spherical_harmonics(x, C, [1], True, 'integral', 'nope')", ValueError, r"backend 'nope' cannot run on CPU tensors", RSH)
row("op.spherical_harmonics/coupling-meta", E, "device", "coupling on meta, x on cpu",
    "ops.spherical_harmonics(x, C.to('meta'), [0, 1], *args)", ValueError, r"coupling must be on cpu like x, got meta", RSH)
E = "torch.ops.equiops.spherical_harmonics_backward"
row("op.spherical_harmonics_backward/grad-width", E, "shape", "grad of the wrong width",
    "ops.spherical_harmonics_backward(torch.randn(4, 5, dtype=torch.float64), x, C, [0, 1], *args)", ValueError,
    r"grad must have shape \(4, 4\), got \[4, 5\]", RSH)
row("op.spherical_harmonics_backward/grad-float32", E, "dtype", "float32 grad, float64 x",
    "ops.spherical_harmonics_backward(torch.randn(4, 4), x, C, [0, 1], *args)", TypeError, r"grad must have dtype Double like x", RSH)
row("op.spherical_harmonics_backward/grad-meta", E, "device", "grad on meta, x on cpu",
    "ops.spherical_harmonics_backward(torch.randn(4, 4, dtype=torch.float64, device='meta'), x, C, [0, 1], *args)", ValueError,
    r"grad must be on cpu like x, got meta", RSH)
E = "torch.ops.equiops.spherical_harmonics_double_backward"
row("op.spherical_harmonics_double_backward/ggx-width", E, "shape", "grad_grad_x of width 2",
    "ops.spherical_harmonics_double_backward(torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64), "
    "x, C, [0, 1], *args)", ValueError, r"grad_grad_x must have shape \(4, 3\)", RSH)
row("op.spherical_harmonics_double_backward/l-beyond-table", E, "index", "ls entry beyond the coupling table",
    "ops.spherical_harmonics_double_backward(torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 26, dtype=torch.float64), "
    "x, C, [0, 5], *args)", ValueError, r"ls\[1\] = 5", RSH)
E = "torch.ops.equiops.spherical_harmonics_jacobian"
row("op.spherical_harmonics_jacobian/x-width", E, "shape", "x of shape (4, 4)",
    "ops.spherical_harmonics_jacobian(torch.randn(4, 4, dtype=torch.float64), C, [0, 1], *args)", ValueError,
    r"x must have shape \(N, 3\)", RSH)
row("op.spherical_harmonics_jacobian/coupling-float32", E, "dtype", "float32 coupling",
    "ops.spherical_harmonics_jacobian(x, C.float(), [0, 1], *args)", TypeError, r"coupling must be float64", RSH)

RTP = OPS + """\
from equiops.tp_problem import build_problem
p = build_problem("2x0e+1x1o", "1x0e+1x1o", "2x0e+1x1o+1x1e",
                  [(0, 0, 0, "uvw", True), (1, 1, 2, "uvw", True), (1, 0, 1, "uvu", False)])
s = p.encode()
x1 = torch.randn(3, p.dim1, dtype=torch.float64)
x2 = torch.randn(3, p.dim2, dtype=torch.float64)
w = torch.randn(1, p.dim_w, dtype=torch.float64)
go = torch.randn(3, p.dim_out, dtype=torch.float64)
"""
E = "torch.ops.equiops.tensor_product"
row("op.tensor_product/problem-garbage", E, "value", "problem 'hello'", "ops.tensor_product(x1, x2, w, 'hello', 'cpu')",
    ValueError, r"malformed problem string", RTP)
row("op.tensor_product/problem-mode", E, "value", "an unknown connection mode in the problem",
    "ops.tensor_product(x1, x2, w, s.replace('uvu', 'uvz'), 'cpu')", ValueError, r"malformed problem string.*uvz", RTP)
row("op.tensor_product/problem-truncated", E, "value", "a truncated problem string",
    "ops.tensor_product(x1, x2, w, s[:len(s) - 30], 'cpu')", ValueError, r"malformed problem string", RTP)
row("op.tensor_product/problem-negative-width", E, "value", "a negative width in the problem header",
    "h = s.split(chr(10)); t = h[0].split(); t[1] = '-5'; h[0] = ' '.join(t)\n"
    "ops.tensor_product(x1, x2, w, chr(10).join(h), 'cpu')", ValueError,
    r"malformed problem string \(negative width or path count in the problem string\)", RTP)
row("op.tensor_product/x1-width", E, "shape", "x1 with the wrong width", "ops.tensor_product(x1[:, :4], x2, w, s, 'cpu')",
    ValueError, r"equiops.tensor_product: x1 must have shape \(rows, 5\), got \[3, 4\]", RTP)
row("op.tensor_product/x1-1d", E, "shape", "1-D x1", "ops.tensor_product(x1.reshape(-1), x2, w, s, 'cpu')",
    ValueError, r"x1 must have shape", RTP)
row("op.tensor_product/rows", E, "shape", "x2 with 2 rows, x1 with 3", "ops.tensor_product(x1, x2[:2], w, s, 'cpu')",
    ValueError, r"x2 has 2 rows but x1 has 3; every input must have 1 or N rows", RTP)
row("op.tensor_product/weight-width", E, "shape", "weight with the wrong width", "ops.tensor_product(x1, x2, w[:, 1:], s, 'cpu')",
    ValueError, r"weight must have shape \(rows, \d+\)", RTP)
row("op.tensor_product/x2-float32", E, "dtype", "x2 float32, x1 float64", "ops.tensor_product(x1, x2.float(), w, s, 'cpu')",
    TypeError, r"x2 must have dtype Double like x1, got Float", RTP)
row("op.tensor_product/half", E, "dtype", "float16 inputs on the CPU", "ops.tensor_product(x1.half(), x2.half(), w.half(), s, 'cpu')",
    TypeError, r"the CPU kernels take float32 or float64, got x1 of dtype Half", RTP)
row("op.tensor_product/backend-torch", E, "option", "backend 'torch' (no op-level reference)",
    "ops.tensor_product(x1, x2, w, s, 'torch')", ValueError, r"backend 'torch' cannot run on CPU tensors", RTP)
row("op.tensor_product/x2-meta", E, "device", "x2 on meta, x1 on cpu", "ops.tensor_product(x1, x2.to('meta'), w, s, 'cpu')",
    ValueError, r"x2 must be on cpu like x1, got meta", RTP)
row("op.tensor_product/x1-meta", E, "device", "x1 on meta, x2 on cpu", "ops.tensor_product(x1.to('meta'), x2, w, s, 'cpu')",
    ValueError, r"x2 must be on meta like x1, got cpu", RTP)
E = "torch.ops.equiops.tensor_product_backward"
row("op.tensor_product_backward/grad-width", E, "shape", "grad_out with the wrong width",
    "ops.tensor_product_backward(go[:, 1:], x1, x2, w, s, [True, True, True], 'cpu')", ValueError,
    r"grad_out must have shape \(rows, \d+\)", RTP)
row("op.tensor_product_backward/grad-rows", E, "shape", "grad_out with 1 row for N = 3",
    "ops.tensor_product_backward(go[:1], x1, x2, w, s, [True, True, True], 'cpu')", ValueError, r"grad_out must have N = 3 rows, got 1", RTP)
row("op.tensor_product_backward/grad-float32", E, "dtype", "grad_out float32",
    "ops.tensor_product_backward(go.float(), x1, x2, w, s, [True, True, True], 'cpu')", TypeError,
    r"grad_out must have dtype Double like x1", RTP)
row("op.tensor_product_backward/problem-garbage", E, "value", "problem ''",
    "ops.tensor_product_backward(go, x1, x2, w, '', [True, True, True], 'cpu')", ValueError, r"malformed problem string", RTP)
row("op.tensor_product_backward/grad-meta", E, "device", "grad_out on meta, x1 on cpu",
    "ops.tensor_product_backward(go.to('meta'), x1, x2, w, s, [True, True, True], 'cpu')", ValueError, r"grad_out must be on cpu like x1, got meta", RTP)
E = "torch.ops.equiops.tensor_product_double_backward"
row("op.tensor_product_double_backward/gg-x1-rows", E, "shape", "gg_x1 with 2 rows for N = 3",
    "ops.tensor_product_double_backward(x1[:2], None, None, go, x1, x2, w, s, 'cpu')", ValueError,
    r"gg_x1 must have 3 rows like its input, got 2", RTP)
row("op.tensor_product_double_backward/gg-x2-width", E, "shape", "gg_x2 with x1's width",
    "ops.tensor_product_double_backward(None, x1, None, go, x1, x2, w, s, 'cpu')", ValueError, r"gg_x2 must have shape \(rows, 4\)", RTP)
row("op.tensor_product_double_backward/gg-x1-float32", E, "dtype", "gg_x1 float32",
    "ops.tensor_product_double_backward(x1.float(), None, None, go, x1, x2, w, s, 'cpu')", TypeError,
    r"gg_x1 must have dtype Double like x1", RTP)
row("op.tensor_product_double_backward/problem-garbage", E, "value", "problem 'hello'",
    "ops.tensor_product_double_backward(None, None, None, go, x1, x2, w, 'hello', 'cpu')", ValueError, r"malformed problem string", RTP)
row("op.tensor_product_double_backward/gg-meta", E, "device", "gg_x1 on meta, x1 on cpu",
    "ops.tensor_product_double_backward(x1.to('meta'), None, None, go, x1, x2, w, s, 'cpu')", ValueError, r"gg_x1 must be on cpu like x1, got meta", RTP)

RCV = CV + OPS + "gr = equiops.Graph(src, dst, n)\nviews = (gr.dst_perm, gr.dst_indptr, gr.src_perm, gr.src_indptr)\n"
E = "torch.ops.equiops.tp_conv"
row("op.tp_conv/dst-too-large", E, "index", "dst value >= num_nodes",
    "ops.tp_conv(x, attr, w, src, dst + n, None, None, None, None, n, conv.problem, 'cpu')", IndexError, r"dst\[0\] = 5 is not a node id in \[0, 4\)", RCV)
row("op.tp_conv/src-negative", E, "index", "negative src value",
    "ops.tp_conv(x, attr, w, src - n, dst, None, None, None, None, n, conv.problem, 'cpu')", IndexError, r"src\[0\] = -4 is not a node id in \[0, 4\)", RCV)
row("op.tp_conv/stale-view", E, "index", "CSR views of another dst",
    "ops.tp_conv(x, attr, w, src, dst.roll(1), *views, n, conv.problem, 'cpu')", ValueError, r"does not match dst", RCV)
row("op.tp_conv/perm-too-large", E, "index", "dst_perm value >= E",
    "bp = gr.dst_perm.clone(); bp[0] = E + 5\n"
    "ops.tp_conv(x, attr, w, src, dst, bp, gr.dst_indptr, None, None, n, conv.problem, 'cpu')", IndexError, r"perm must be a permutation of the 6 edges \(entry 0 = 11\)", RCV)
row("op.tp_conv/perm-without-indptr", E, "value", "dst_perm given without dst_indptr",
    "ops.tp_conv(x, attr, w, src, dst, gr.dst_perm, None, None, None, n, conv.problem, 'cpu')", ValueError,
    r"perm was given without indptr", RCV)
row("op.tp_conv/num-nodes-negative", E, "value", "num_nodes = -3",
    "ops.tp_conv(x, attr, w, src, dst, None, None, None, None, -3, conv.problem, 'cpu')", ValueError,
    r"num_nodes must be >= 0, got -3", RCV)
row("op.tp_conv/src-int32", E, "dtype", "int32 src",
    "ops.tp_conv(x, attr, w, src.int(), dst, None, None, None, None, n, conv.problem, 'cpu')", TypeError,
    r"src must be int64, got Int", RCV)
row("op.tp_conv/indptr-short", E, "shape", "dst_indptr one entry short",
    "ops.tp_conv(x, attr, w, src, dst, gr.dst_perm, gr.dst_indptr[:-1], None, None, n, conv.problem, 'cpu')", ValueError,
    r"indptr must have shape \(5,\) \(num_nodes \+ 1\), got \[4\]", RCV)
row("op.tp_conv/attr-rows", E, "shape", "edge_attr with E-1 rows",
    "ops.tp_conv(x, attr[:-1], w, src, dst, None, None, None, None, n, conv.problem, 'cpu')", ValueError, r"edge_attr must have shape \(E, 4\) or \(1, 4\) with E = 6 edges, got \[5, 4\]", RCV)
row("op.tp_conv/x-float32", E, "dtype", "x float32, edge_attr float64",
    "ops.tp_conv(x.float(), attr, w, src, dst, None, None, None, None, n, conv.problem, 'cpu')", TypeError, r"edge_attr must have x's dtype Float, got Double", RCV)
row("op.tp_conv/problem-garbage", E, "value", "problem 'hello'",
    "ops.tp_conv(x, attr, w, src, dst, None, None, None, None, n, 'hello', 'cpu')", ValueError, r"malformed problem string", RCV)
row("op.tp_conv/attr-meta", E, "device", "edge_attr on meta, x on cpu",
    "ops.tp_conv(x, attr.to('meta'), w, src, dst, None, None, None, None, n, conv.problem, 'cpu')", ValueError, r"edge_attr must be on cpu like x, got meta", RCV)
E = "torch.ops.equiops.tp_conv_backward"
row("op.tp_conv_backward/grad-width", E, "shape", "grad_out with the wrong width",
    "ops.tp_conv_backward(torch.randn(n, conv.irreps_out.dim + 1, dtype=torch.float64), x, attr, w, src, dst, *views, "
    "[True, True, True], conv.problem, 'cpu')", ValueError, r"grad_out must have 12 columns, got shape \[4, 13\]", RCV)
row("op.tp_conv_backward/src-too-large", E, "index", "src value >= num_nodes",
    "ops.tp_conv_backward(torch.randn(n, conv.irreps_out.dim, dtype=torch.float64), x, attr, w, src + n, dst, "
    "None, None, None, None, [True, True, True], conv.problem, 'cpu')", IndexError, r"src\[0\] = 4 is not a node id in \[0, 4\)", RCV)

REG = EG + OPS + "args = (ni, nj, coord, ea, src, dst, None, None, None, None)\n"
E = "torch.ops.equiops.egnn_message"
row("op.egnn_message/act-unknown", E, "option", "act 'gelu'",
    "ops.egnn_message(*args, *p.tensors(), 'gelu', 'none', False, 0.0, 0.0, 'cpu')", ValueError, r"act must be 'silu' or 'relu'", REG)
row("op.egnn_message/bc1-shape", E, "shape", "bc1 of the wrong length",
    "q = list(p.tensors()); q[7] = q[7][:3]\n"
    "ops.egnn_message(*args, *q, 'silu', 'none', False, 0.0, 0.0, 'cpu')", ValueError, r"bc1 must have shape \[20\]", REG)
row("op.egnn_message/src-too-large", E, "index", "src value = n",
    "s2 = src.clone(); s2[0] = n\n"
    "ops.egnn_message(ni, nj, coord, ea, s2, dst, None, None, None, None, *p.tensors(), 'silu', 'none', False, 0.0, 0.0, 'cpu')",
    IndexError, r"src\[0\] = 6 is not a node id in \[0, 6\)", REG)
row("op.egnn_message/coord-float32", E, "dtype", "coord float32",
    "ops.egnn_message(ni, nj, coord.float(), ea, src, dst, None, None, None, None, *p.tensors(), 'silu', 'none', False, 0.0, "
    "0.0, 'cpu')", TypeError, r"coord must have node_i's dtype Double, got Float", REG)
row("op.egnn_message/coord-norm-unknown", E, "option", "coord_norm 'unit'",
    "ops.egnn_message(*args, *p.tensors(), 'silu', 'unit', False, 0.0, 0.0, 'cpu')", ValueError, r"coord_norm must be 'none', 'detached', 'plus_one' or 'clamped', got 'unit'", REG)
row("op.egnn_message/coord-meta", E, "device", "coord on meta, node_i on cpu",
    "ops.egnn_message(ni, nj, coord.to('meta'), ea, src, dst, None, None, None, None, *p.tensors(), 'silu', 'none', False, "
    "0.0, 0.0, 'cpu')", ValueError, r"coord must be on cpu like node_i, got meta", REG)
E = "torch.ops.equiops.egnn_message_backward"
row("op.egnn_message_backward/grad-m-shape", E, "shape", "grad_m of the wrong width",
    "ops.egnn_message_backward(torch.randn(n, M + 1, dtype=torch.float64), torch.randn(n, 3, dtype=torch.float64), *args, "
    "*p.tensors(), 'silu', 'none', False, 0.0, 0.0, 'cpu')", ValueError, r"grad_m must have shape \[6, 12\], got \[6, 13\]", REG)
row("op.egnn_message_backward/dst-negative", E, "index", "dst value -1",
    "d2 = dst.clone(); d2[0] = -1\n"
    "ops.egnn_message_backward(torch.randn(n, M, dtype=torch.float64), torch.randn(n, 3, dtype=torch.float64), ni, nj, coord, "
    "ea, src, d2, None, None, None, None, *p.tensors(), 'silu', 'none', False, 0.0, 0.0, 'cpu')", IndexError, r"dst\[0\] = -1 is not a node id in \[0, 6\)", REG)

RPC = PC + OPS
E = "torch.ops.equiops.pointconv"
row("op.pointconv/idx-too-large", E, "index", "a valid neighbour with id n",
    "i2 = idx.clone(); m2 = mask.clone(); i2[1, 2, 0] = n; m2[1, 2, 0] = True\n"
    "ops.pointconv(penult, values, i2, m2, weight, bias, False, 'cpu')", IndexError, r"nbhd_idx\[1, 2, 0\] = 5 is not a point id in \[0, 5\)", RPC)
row("op.pointconv/mask-uint8", E, "dtype", "uint8 nbhd_mask",
    "ops.pointconv(penult, values, idx, mask.to(torch.uint8), weight, bias, False, 'cpu')", TypeError, r"nbhd_mask must be bool", RPC)
row("op.pointconv/idx-int32", E, "dtype", "int32 nbhd_idx",
    "ops.pointconv(penult, values, idx.int(), mask, weight, bias, False, 'cpu')", TypeError, r"nbhd_idx must be int64, got Int", RPC)
row("op.pointconv/weight-width", E, "shape", "weight with the wrong width",
    "ops.pointconv(penult, values, idx, mask, weight[:, :10], bias, False, 'cpu')", ValueError, r"weight must have shape \[5, 12\]", RPC)
row("op.pointconv/bias-length", E, "shape", "bias of length 2",
    "ops.pointconv(penult, values, idx, mask, weight, bias[:2], False, 'cpu')", ValueError, r"bias must have shape \[5\]", RPC)
row("op.pointconv/values-float32", E, "dtype", "values float32", "ops.pointconv(penult, values.float(), idx, mask, weight, bias, False, 'cpu')",
    TypeError, r"values must have dtype Double, got Float", RPC)
row("op.pointconv/idx-batch", E, "shape", "nbhd_idx with batch 1",
    "ops.pointconv(penult, values, idx[:1], mask, weight, bias, False, 'cpu')", ValueError, r"nbhd_idx must have shape \[2, 6, 3\]", RPC)
row("op.pointconv/backend-triton-on-cpu", E, "device", "backend 'triton' with CPU tensors",
    "ops.pointconv(penult, values, idx, mask, weight, bias, False, 'triton')", ValueError,
    r"backend 'triton' cannot run on CPU tensors", RPC)
row("op.pointconv/values-meta", E, "device", "values on meta, penult on cpu",
    "ops.pointconv(penult, values.to('meta'), idx, mask, weight, bias, False, 'cpu')", ValueError, r"values must be on cpu like penult, got meta", RPC)
E = "torch.ops.equiops.pointconv_backward"
row("op.pointconv_backward/grad-shape", E, "shape", "grad_out of the wrong width",
    "ops.pointconv_backward(torch.zeros(2, 6, 4, dtype=torch.float64), penult, values, idx, mask, weight, bias, False, 'cpu')",
    ValueError, r"grad_out must have shape \[2, 6, 5\]", RPC)
row("op.pointconv_backward/idx-negative", E, "index", "a valid neighbour with id -1",
    "i2 = idx.clone(); m2 = mask.clone(); i2[0, 1, 1] = -1; m2[0, 1, 1] = True\n"
    "ops.pointconv_backward(torch.zeros(2, 6, 5, dtype=torch.float64), penult, values, i2, m2, weight, bias, False, 'cpu')",
    IndexError, r"nbhd_idx\[0, 1, 1\] = -1 is not a point id in \[0, 5\)", RPC)
