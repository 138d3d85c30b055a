"""Bad-input rows for the Lie groups of equiops.lie (T, Trivial, SO2, SE2, SO3, SE3 and
their base class): constructor arguments, and for every group ``exp``, ``log``,
``elems2pairs``, ``distance``, ``lift`` / ``lifted_elems`` and the algebra maps with a
wrong trailing shape, an integer dtype, a mismatched device (``meta`` next to CPU
tensors) or a wrong ``nsamples``. Before the audit, ``exp``/``log``/``distance`` of a
wrong width silently sliced their input (e.g. ``SO3().exp`` of a ``(*, 4)`` tensor used its
first 3 entries) and ``lift`` of integer or mixed-device points returned a result.
"""

from __future__ import annotations

from .case import Case

CASES = []


def row(id, entry, kind, what, code, raises, match, setup="", xfail=""):
    CASES.append(Case(id=id, entry=entry, kind=kind, what=what, code=code, raises=raises, match=match,
                      setup=setup, xfail=xfail))


S = "from equiops import lie\n"

# ------------------------------------------------------------------ constructors
row("lie.LieGroup/alpha-out-of-range", "equiops.lie.LieGroup", "value", "alpha=2 (the distance weights alpha and 1 - alpha)",
    "lie.LieGroup(alpha=2.0)", ValueError, r"LieGroup: `alpha` must be a number in \[0, 1\] .*got 2.0", S)
row("lie.LieGroup/exp-abstract", "equiops.lie.LieGroup.exp", "type", "exp of the abstract base class",
    "lie.LieGroup().exp(torch.zeros(3))", NotImplementedError, r"LieGroup.exp is not implemented", S)
row("lie.T/k-zero", "equiops.lie.T", "value", "k=0", "lie.T(0)", ValueError, r"T: `k` must be a positive int, got 0", S)
row("lie.T/k-float", "equiops.lie.T", "type", "k=2.0", "lie.T(2.0)", ValueError, r"T: `k` must be a positive int, got 2.0", S)
row("lie.Trivial/dim-zero", "equiops.lie.Trivial", "value", "dim=0", "lie.Trivial(0)", ValueError,
    r"Trivial: `dim` must be a positive int, got 0", S)
row("lie.SO3/alpha-string", "equiops.lie.SO3", "type", "alpha='x'", "lie.SO3(alpha='x')", ValueError,
    r"SO3: `alpha` must be a number in \[0, 1\] .*got 'x'", S)
row("lie.SE3/alpha-nan", "equiops.lie.SE3", "value", "alpha=nan", "lie.SE3(alpha=float('nan'))", ValueError,
    r"SE3: `alpha` must be a number in \[0, 1\] .*got nan", S)
row("lie.SE3/unknown-option", "equiops.lie.SE3", "option", "an unknown keyword foo=1", "lie.SE3(foo=1)", TypeError,
    r"unexpected keyword argument 'foo'", S)
row("lie.SE2/alpha-negative", "equiops.lie.SE2", "value", "alpha=-0.1", "lie.SE2(alpha=-0.1)", ValueError,
    r"SE2: `alpha` must be a number in \[0, 1\] .*got -0.1", S)
row("lie.SE3.sample/no-haar-measure", "equiops.lie.SE3.sample", "option", "SE3().sample (no Haar probability measure)",
    "lie.SE3().sample(3)", NotImplementedError, r"SE3.sample: the translations have no Haar probability measure", S)

# ------------------------------------------------------- per group: maps and lifts
# (name, constructor, lie_dim, matrix size, point dim, pairs width, exp's and log's argument names)
GROUPS = [
    ("T", "lie.T(3)", 3, 4, 3, 3, "a", "u"),
    ("Trivial", "lie.Trivial(2)", 0, 2, 2, 4, "a", "u"),
    ("SO2", "lie.SO2()", 1, 2, 2, 3, "a", "R"),
    ("SE2", "lie.SE2()", 3, 3, 2, 3, "a", "g"),
    ("SO3", "lie.SO3()", 3, 3, 3, 5, "w", "R"),
    ("SE3", "lie.SE3()", 6, 4, 3, 6, "w", "U"),
]

for name, ctor, ld, r, pd, pw, ea, la in GROUPS:
    G = f"equiops.lie.{name}"
    s = S + f"g = {ctor}\npts = torch.randn(1, 4, {pd})\nvals = torch.randn(1, 4, 2)\nmask = torch.ones(1, 4, dtype=torch.bool)\n"
    row(f"lie.{name}.exp/wrong-width", f"{G}.exp", "shape", f"coefficients (5, {ld + 1}) for lie_dim {ld}",
        f"g.exp(torch.randn(5, {ld + 1}))", ValueError,
        rf"{name}.exp: `{ea}` must have shape \(\*, {ld}\) of Lie algebra coefficients \(lie_dim={ld}\); got shape \(5, {ld + 1}\)", s)
    row(f"lie.{name}.exp/int", f"{G}.exp", "dtype", "int64 coefficients", f"g.exp(torch.zeros(5, {ld}, dtype=torch.long))",
        TypeError, rf"{name}.exp: `{ea}` must be a floating-point tensor, got torch.int64", s)
    row(f"lie.{name}.log/wrong-size", f"{G}.log", "shape", f"matrices (5, {r + 1}, {r + 1}) for {r}x{r}",
        f"g.log(torch.randn(5, {r + 1}, {r + 1}))", ValueError,
        rf"{name}.log: `{la}` must have shape \(\*, {r}, {r}\) of {r}x{r} group matrices; got shape \(5, {r + 1}, {r + 1}\)", s)
    row(f"lie.{name}.elems2pairs/no-point-axis", f"{G}.elems2pairs", "shape", f"a 1-D ({ld},) tensor (no point axis)",
        f"g.elems2pairs(torch.randn({ld}))", ValueError,
        rf"{name}.elems2pairs: `a` must have shape \(\*, n, {ld}\) \(n lifted elements\), got shape \({ld},\)", s)
    row(f"lie.{name}.distance/wrong-width", f"{G}.distance", "shape", f"pairs (4, {pw + 1}) for width {pw}",
        f"g.distance(torch.randn(4, {pw + 1}))", ValueError,
        rf"{name}.distance: `abq_pairs` must have shape \(\*, {pw}\) .*got shape \(4, {pw + 1}\)", s)
    row(f"lie.{name}.lift/mask-wrong-shape", f"{G}.lift", "shape", "mask (1, 3) for 4 points",
        "g.lift((pts, vals, mask[:, :3]))", ValueError,
        rf"{name}.lift: `x\[2\]` \(mask\) must have shape \(1, 4\) to match coords \(1, 4, {pd}\), got \(1, 3\)", s)
    row(f"lie.{name}.lift/coords-wrong-dim", f"{G}.lift", "shape", f"points of dimension {pd + 1} for {pd}",
        f"g.lift((torch.randn(1, 4, {pd + 1}), vals, mask))", ValueError,
        rf"{name}.lift: `x\[0\] \(coords\)` must have shape \(\*, n, {pd}\).*got shape \(1, 4, {pd + 1}\)", s)
    row(f"lie.{name}.lift/coords-int", f"{G}.lift", "dtype", "int64 points (was accepted)",
        "g.lift((pts.long(), vals, mask))", TypeError,
        rf"{name}.lift: `x\[0\] \(coords\)` must be a floating-point tensor, got torch.int64", s)
    row(f"lie.{name}.lift/values-other-device", f"{G}.lift", "device", "points on meta, values and mask on cpu",
        "g.lift((pts.to('meta'), vals, mask))", ValueError,
        rf"{name}.lift: `x\[1\] \(values\)` must be on the device of coords \(meta\), got cpu", s)
    where = "lift" if name == "Trivial" else "lifted_elems"
    row(f"lie.{name}.lift/nsamples-zero", f"{G}.lift", "value", "nsamples=0", "g.lift((pts, vals, mask), 0)", ValueError,
        rf"{name}.{where}: `nsamples` must be a positive int, got 0", s)

for name, ctor in (("T", "lie.T(3)"), ("Trivial", "lie.Trivial(2)"), ("SO2", "lie.SO2()")):
    where = "lift" if name == "Trivial" else "lifted_elems"
    row(f"lie.{name}.lift/nsamples-two", f"equiops.lie.{name}.lift", "value", "nsamples=2 for a single-valued lift",
        f"g = {ctor}\nd = g.point_dim\ng.lift((torch.randn(1, 4, d), torch.randn(1, 4, 2), torch.ones(1, 4, dtype=torch.bool)), 2)",
        ValueError, rf"{name}.{where}: the lift to {name} is single valued, so `nsamples` must be 1 \(got 2\)", S)

row("lie.SE3.BCH/order-five", "equiops.lie.SE3.BCH", "value", "order=5", "lie.SE3().BCH(torch.zeros(6), torch.zeros(6), order=5)",
    ValueError, r"SE3.BCH: `order` must be 1, 2, 3 or 4, got 5", S)
row("lie.SO3.lifted_elems/nsamples-float", "equiops.lie.SO3.lifted_elems", "type", "nsamples=1.0",
    "lie.SO3().lifted_elems(torch.randn(4, 3), 1.0)", ValueError, r"SO3.lifted_elems: `nsamples` must be a positive int, got 1.0", S)
row("lie.cross_matrix/wrong-width", "equiops.lie.cross_matrix", "shape", "vectors (4, 2)", "lie.cross_matrix(torch.ones(4, 2))",
    ValueError, r"cross_matrix: `k` must have shape \(\*, 3\) of vectors; got shape \(4, 2\)", S)
row("lie.uncross_matrix/wrong-size", "equiops.lie.uncross_matrix", "shape", "matrices (4, 2, 2)",
    "lie.uncross_matrix(torch.ones(4, 2, 2))", ValueError,
    r"uncross_matrix: `K` must have shape \(\*, 3, 3\) of 3x3 matrices; got shape \(4, 2, 2\)", S)
row("lie.SO3.log/int", "equiops.lie.SO3.log", "dtype", "int64 matrices", "lie.SO3().log(torch.eye(3, dtype=torch.long))",
    TypeError, r"SO3.log: `R` must be a floating-point tensor, got torch.int64", S)
row("lie.T.lift/not-a-triple", "equiops.lie.T.lift", "type", "a (coords, values) pair",
    "lie.T(3).lift((torch.randn(1, 4, 3), torch.randn(1, 4, 2)))", ValueError,
    r"T.lift: `x` must be a tuple \(coords, values, mask\), got tuple of length 2", S)
row("lie.SE2.lifted_elems/points-1d", "equiops.lie.SE2.lifted_elems", "shape", "a single point (2,) (no point axis)",
    "lie.SE2().lifted_elems(torch.randn(2))", ValueError, r"SE2.lifted_elems: `pt` must have shape \(\*, n, 2\).*got shape \(2,\)", S)
row("lie.SE3.components2matrix/wrong-width", "equiops.lie.SE3.components2matrix", "shape", "coefficients (4, 7) for lie_dim 6",
    "lie.SE3().components2matrix(torch.randn(4, 7))", ValueError,
    r"SE3.components2matrix: `a` must have shape \(\*, 6\) of Lie algebra coefficients \(lie_dim=6\); got shape \(4, 7\)", S)
row("lie.SO2.matrix2components/wrong-size", "equiops.lie.SO2.matrix2components", "shape", "matrices (4, 3, 3) for 2x2",
    "lie.SO2().matrix2components(torch.randn(4, 3, 3))", ValueError,
    r"SO2.matrix2components: `A` must have shape \(\*, 2, 2\) of 2x2 group matrices; got shape \(4, 3, 3\)", S)
