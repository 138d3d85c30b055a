"""Lie groups for LieConv (Finzi et al., ICML 2020), as ``equiops.lie``.

A re-implementation of the groups of the reference code (``mfinzi/LieConv``,
``lie_conv/lieGroups.py``, final version): :class:`T`, :class:`Trivial`,
:class:`SO2`, :class:`SE2`, :class:`SO3`, :class:`SE3`, their base class
:class:`LieGroup` and the scalar helpers.  Names, constructor arguments, class
attributes (``rep_dim``, ``lie_dim``, ``q_dim``) and method signatures are those of
the original, and for ``exp``, ``log``, ``elems2pairs``, ``lifted_elems`` and ``lift``
the values are the original's bit for bit (float32 and float64, same random draws
under the same seed), except where listed under *Deviations* below.  Everything
takes arbitrary leading batch dimensions and is differentiable (also twice).

Conventions
-----------
* ``exp(a)`` maps algebra coefficients ``(*, lie_dim)`` to matrices
  ``(*, r, r)``; ``log`` is its principal inverse (rotation angles in ``[-pi, pi]``
  for SO(2)/SE(2), ``[0, pi]`` for SO(3)/SE(3)).  SE(2) coefficients are
  ``[theta, u_x, u_y]``, SE(3) coefficients ``[w (rotation, 3), u (translation, 3)]``:
  rotation part first.  ``u`` is the algebra translation, i.e. the translation of
  ``exp(a)`` is ``V(theta) u``, not ``u``.
* ``elems2pairs(a)[..., i, j, :] = log(exp(-a_j) exp(a_i))`` = ``log(v^-1 u)`` with
  ``u = exp(a_i)``, ``v = exp(a_j)``; for ``T`` it is ``a_i - a_j``.
* ``lifted_elems(pt, nsamples) -> (a, q)``: ``a (*, n * nsamples, lie_dim)`` with the
  ``nsamples`` lifts of a point consecutive, ``q (*, n * nsamples, q_dim)`` the orbit
  identifiers (``None`` for ``q_dim == 0``).  The final original has no mask argument
  here (older versions had ``lifted_elems(pt, mask, nsamples)``); extra keyword
  arguments (e.g. ``mask=``) are accepted and ignored.
* ``lift((coords, values, mask), nsamples) -> (abq_pairs, values, mask)`` with
  ``abq_pairs (*, N, N, lie_dim + 2 q_dim)`` = ``[log(v^-1 u), q_i, q_j]``,
  values / mask repeated to ``N = n * nsamples``.
* ``distance(abq_pairs)``: ``alpha * |a| + (1 - alpha) * |q_i - q_j|`` by default
  (``alpha = 0.2``), overridden by SO2 (``|ra - rb| / (ra + rb + 1e-3)`` for the
  orbit part), SE2 and SE3 (``alpha * |rotation| + (1 - alpha) * |translation|``).
  Note that ``T(k).distance`` is therefore ``0.2 * |a_i - a_j|`` and
  ``Trivial(d).distance`` is ``0.8 * |p_i - p_j|``, as in the original.
* ``str(SE3())`` is ``"SE3"``, ``str(SE3(alpha=0.5))`` is ``"SE3(0.5)"``.
* The small-angle branches (``sinc``, ``sincc``, ``cosc``, ``coscc``, ``sinc_inv``)
  switch to their Taylor polynomials below ``|x| < 7e-2`` (``thresh``), with the
  original's polynomials; ``coscc`` clamps ``2 (1 - cos x)`` at ``1e-6``.

Quirks of the original that are reproduced
------------------------------------------
* Lift sampling and its RNG use: SE2 draws one ``torch.rand(*pt.shape[:-1], 1)``
  per call on the *CPU* generator in the default dtype (angles
  ``-pi + 2 pi s / nsamples + 2 pi U``, ``s = 1..nsamples``); SO3 draws
  ``torch.randn(*pt.shape[:-1], nsamples, 4)`` and SE3 ``torch.randn(*lead, n, nsamples, 4)``
  (``(*lead, 1, nsamples, 4)`` with ``per_point=False``) on pt's device and dtype.
  So under the same seed the lifts are the original's.
* SO3 lifts rotate about the *x* axis (the original's ``zhat`` is ``[1, 0, 0]``) by
  the angle of a Haar-random rotation (``2 atan2(|q_v|, q_0)`` of a random
  quaternion; density ``~ sin^2(phi / 2)``, not uniform), then by the minimal
  rotation taking ``e_x`` to ``p / |p|``; the invariant is
  ``|p| exp(a) @ e_x = p`` (``q = |p|``).  For points on the negative x axis that
  minimal rotation degenerates (to the identity) and the invariant fails, as in the
  original.  SE3 lifts are ``log([[R, p], [0, 1]])`` with Haar-random ``R``, so
  ``exp(a) @ [0, 0, 0, 1] = [p, 1]``; SE2 likewise with ``[0, 0, 1]``; SO2 lifts are
  the polar angle with ``q = |p|`` (``|p| exp(a) @ e_x = p``).
* SE2 lifts (and the values, mask) ignore the mask.  SO3.log loses accuracy within
  ~``sqrt(eps)`` of angle ``pi`` (``theta / sin(theta)`` there).  Random SE3/SO3
  sample angles are in ``[0, 2 pi]``; ``log`` folds them back to ``[0, pi]``.
* ``T``, ``SO2`` and ``Trivial`` only accept ``nsamples == 1`` (the original asserted).
* Accuracy of the original's formulas, kept as is: ``sinc_inv``'s polynomial stops
  at ``x^4`` (relative error up to ~2.4e-10 just below the threshold, so the SO3/SE3
  ``log(exp(a))`` round trip is off by ~2e-11 at angle 0.07), and ``log`` near angle
  ``pi`` is off by ~``eps / (pi - theta)^2`` (2e-7 at ``pi - 1e-4``).

Deviations (all outside what LieConv uses, or strict improvements)
------------------------------------------------------------------
* Gradients: the original gets NaN gradients at zero angles (the unused
  ``sin(x) / x`` branch and ``|w|`` at ``w = 0`` in ``torch.where``, ``acos`` at
  ``cos = 1`` in SO3/SE3 ``log``).  Here the closed-form branches are evaluated on
  inputs kept away from 0 and the Taylor branches get the gradient of ``|w|^2`` (and
  of the series of ``acos(1 - u)^2``) while keeping the original forward values
  exactly; ``norm`` has gradient 0 at 0.
* SE2 lifts compute in ``pt``'s dtype/device (the original silently computed and
  returned float32, the default dtype); the random angles are the same (formed in the
  default dtype, as the original) so float32 results are identical and float64
  results agree to float32 precision (angles at ``+-pi`` can come out at the other
  end of the branch cut).
* SO3 lifts use ``torch.cross(..., dim=-1)``: the original called ``torch.cross``
  without ``dim``, which (torch's deprecated default) picks the *first* dimension of size 3, e.g. a
  batch of 3 clouds: wrong results there.
* ``SE2.components2matrix`` returns ``[[theta K, u], [0, 0]]`` (whose matrix
  exponential is ``SE2.exp``); the original put ``u`` in the bottom row and used the
  opposite sign for ``theta``, so it was inconsistent with ``exp`` and with its own
  ``matrix2components`` (and ``bracket`` / ``BCH`` were wrong for SE2).
  ``SO2.matrix2components`` returns ``(*, 1)`` (the original returned ``(*, 2, 1)``).
* ``T`` and ``Trivial`` additionally get ``exp`` / ``log`` / ``components2matrix`` /
  ``matrix2components`` (homogeneous ``(k + 1) x (k + 1)`` translations; identity for
  Trivial) and ``Trivial.lifted_elems`` (empty ``a``, ``q = pt``); the original left
  them unimplemented.  ``SO3.sample`` defaults to torch's default device and dtype
  (original: ``cuda``, float32).
* Bad input raises ``ValueError`` (wrong point dimension, naming the argument and the
  expected dimension; ``nsamples`` not a positive int or ``!= 1`` where the lift is
  single valued; malformed ``(coords, values, mask)``) instead of ``assert``.  The
  original's ``assert`` on non-finite inputs (SO3 lifts, ``sinc_inv``) is dropped
  (it cost a device synchronisation per call).
* Not provided: ``LieSubGroup``, ``RxSO2``, ``RxSQ``, ``Rx``, ``SQ``, ``Tx``, ``Ty``,
  ``FakeSchGroup`` and the unused ``farthest_lift``.
"""

from . import groups as _groups
from .groups import *  # noqa: F401,F403  (the public names: groups.__all__)

__all__ = list(_groups.__all__)
