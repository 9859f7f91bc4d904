"""Independent routes to the quantities of the float64 reference: mpmath at N digits
(:mod:`.precise`, :mod:`.precise_traj`), finite differences (:mod:`.finite_diff`),
autodiff through unrolled soft VI (:mod:`.unrolled`, torch), implicit differentiation
in sympy (:mod:`.symbolic`), the occupancy-measure program (:mod:`.convex`, cvxpy), and
the table that compares them (:mod:`.crosscheck`).

Every route reaches the table through one interface (:mod:`.base`: ``Route`` and its
``RouteResult``); :func:`hypergradient` (:mod:`.forms`) swaps the closed forms and the
unrolled autodiff in one call with one result type.

A route may import the core modules (``mdp``, ``case``, ``soft``, ...) but never
``oracle``, ``golden`` or ``cli``. This package module imports only :mod:`.base` and
:mod:`.forms` (no torch, mpmath or cvxpy at import).
"""

from .base import Route, RouteInput, RouteResult
from .forms import FORMS, hypergradient

__all__ = ["FORMS", "Route", "RouteInput", "RouteResult", "hypergradient"]
