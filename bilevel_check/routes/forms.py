"""One call, three ways to the hyper-gradient: the closed forms and unrolled autodiff.

:func:`hypergradient` takes ``form='adjoint'`` (formula (9) with one S x S solve),
``form='sa'`` (the SA x SA implicit derivatives) or ``form='unrolled'`` (torch autodiff
through ``K`` soft value-iteration sweeps, :mod:`bilevel_check.routes.unrolled`) and returns
one result type, :class:`bilevel_check.hypergrad.HypergradResult`, whichever form ran. The
closed forms are :func:`bilevel_check.hypergrad.hypergradient` itself (with its a-priori
error estimate); the unrolled form fills ``grad``, ``phi`` and ``K`` and leaves
``solution`` and ``error`` empty (its error is ``~gamma^K``, docs/math.md section 7).

May import the core modules and :mod:`.unrolled` (torch, imported only for that form).
"""

from __future__ import annotations

from .._validation import InvalidInputError
from ..hypergrad import HypergradResult
from ..hypergrad import hypergradient as _closed_form

__all__ = ["FORMS", "hypergradient"]

#: The swappable forms of :func:`hypergradient`.
FORMS = ("adjoint", "sa", "unrolled")


def hypergradient(
    mdp, reward, upper, x, *, form: str = "adjoint", K: int | None = None, **kwargs
) -> HypergradResult:
    """The hyper-gradient of ``phi(x) = f(x, pi*_x)`` by the chosen ``form``.

    Args:
        mdp, reward, upper, x: as in :func:`bilevel_check.hypergrad.hypergradient`.
        form: ``'adjoint'``, ``'sa'`` or ``'unrolled'`` (module docstring).
        K: sweeps of the unrolled form (required there, rejected by the closed forms).
        **kwargs: passed on: ``solution``, ``tol``, ``method``, ``allow_inaccurate`` to the
            closed forms; ``device``, ``V0``, ``reward_torch``, ``upper_torch`` to
            :func:`bilevel_check.routes.unrolled.unrolled_hypergradient`.

    Raises:
        InvalidInputError: an unknown ``form``, ``K`` missing for ``'unrolled'`` or given
            for a closed form.
    """
    if form not in FORMS:
        raise InvalidInputError("form", f"one of {FORMS}", repr(form))
    if form != "unrolled":
        if K is not None:
            raise InvalidInputError("K", f"None for form={form!r} (sweeps of 'unrolled')", repr(K))
        return _closed_form(mdp, reward, upper, x, form=form, **kwargs)
    if K is None:
        raise InvalidInputError("K", "the number of sweeps for form='unrolled'", "None")
    from .unrolled import unrolled_hypergradient

    res = unrolled_hypergradient(mdp, reward, upper, x, K=K, **kwargs)
    return HypergradResult(res.grad, res.phi, None, "unrolled", K=res.K)
