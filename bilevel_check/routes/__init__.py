"""Independent routes to the quantities of the float64 reference: mpmath at N digits
(:mod:`.precise`, :mod:`.precise_traj`), finite differences (:mod:`.finite_diff`),
autodiff through unrolled soft VI (:mod:`.unrolled`, torch), implicit differentiation
in sympy (:mod:`.symbolic`), the occupancy-measure program (:mod:`.convex`, cvxpy), and
the table that compares them (:mod:`.crosscheck`).

A route may import the core modules (``mdp``, ``case``, ``soft``, ...) but never
``oracle``, ``golden`` or ``cli``.
"""
