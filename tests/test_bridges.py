"""Bridges for autodiff clients: torch tensors and a differentiable reward, the JAX twin,
the upper objective's spec. Checked against the reward Jacobian evaluated directly and
against central differences of the reward, and through the oracle with a torch client."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bilevel_check.golden.store import load_golden
from bilevel_check.oracle import check as oracle
from bilevel_check.oracle.check import _oracle_input
from bilevel_check.oracle.reference import generated_cases, resolve_cases

CASES = generated_cases(6, seed=4)  # linear, tabular and quadratic rewards


def _inputs(cases):
    return [_oracle_input(r) for r in resolve_cases(cases, need="hypergradient")]


def test_torch_reward_matches_value_and_its_backward_is_the_jacobian():
    for inp in _inputs(CASES):
        tv = inp.torch()
        assert tv.P.dtype == torch.float64 and tv.P.shape == (inp.S, inp.A, inp.S)
        np.testing.assert_array_equal(tv.mu.numpy(), inp.mu)
        x = tv.x.clone().requires_grad_(True)
        r = tv.reward(x)
        np.testing.assert_array_equal(r.detach().numpy(), inp.reward(inp.x))  # same values
        g = torch.tensor(np.random.default_rng(0).normal(size=(inp.S, inp.A)))
        (r * g).sum().backward()
        want = np.einsum("sa,sad->d", g.numpy(), inp.reward_jacobian(inp.x))
        # the backward is that einsum in torch: summation order only (a few ulps of the terms)
        np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-13, atol=1e-13)


def test_torch_reward_gradient_agrees_with_central_differences():
    inp = _inputs(CASES[3:4])[0]
    x = torch.tensor(inp.x, requires_grad=True)
    loss = (inp.torch().reward(x) ** 2).sum()
    loss.backward()
    h = 1e-6
    fd = []
    for i in range(inp.d):
        e = np.zeros(inp.d)
        e[i] = h
        fd.append(
            ((inp.reward(inp.x + e) ** 2).sum() - (inp.reward(inp.x - e) ** 2).sum()) / (2 * h)
        )
    # central differences of a smooth (at most quadratic x quadratic) loss: truncation
    # ~h^2 |f'''| ~ 1e-12, rounding eps |f| / h ~ 1e-10
    np.testing.assert_allclose(x.grad.numpy(), fd, rtol=0, atol=1e-7)


def torch_client(p):
    """A torch client written against the bridge: Newton lower level in torch, the
    hyper-gradient by autograd through the implicit function theorem (adjoint solve)."""
    tv = p.torch()
    x = tv.x.clone().requires_grad_(True)
    r = tv.reward(x)
    S = p.S
    V = torch.zeros(S, dtype=torch.float64)
    for _ in range(100):  # soft policy iteration on detached r, to the float64 floor
        Q = r.detach() + tv.gamma * tv.P @ V
        logpi = torch.log_softmax(Q / tv.tau, dim=1)
        pi = logpi.exp()
        Ppi = torch.einsum("sa,sat->st", pi, tv.P)
        c = (pi * (r.detach() - tv.tau * logpi)).sum(1)
        V_new = torch.linalg.solve(torch.eye(S, dtype=torch.float64) - tv.gamma * Ppi, c)
        if torch.equal(V_new, V):
            break
        V = V_new
    pi0 = torch.softmax((r.detach() + tv.gamma * tv.P @ V) / tv.tau, dim=1)
    # IFT: dV = (I - gamma P_pi)^{-1} Phi, Phi = sum_a pi dr; one differentiable Newton step
    M = torch.eye(S, dtype=torch.float64) - tv.gamma * torch.einsum("sa,sat->st", pi0, tv.P)
    Vx = V + torch.linalg.solve(M, (pi0 * (r - r.detach())).sum(1))
    pi = torch.softmax((r + tv.gamma * tv.P @ Vx) / tv.tau, dim=1)
    gpi = torch.tensor(p.upper_grad_pi(p.x, pi0.numpy()))
    gx = torch.tensor(p.upper_grad_x(p.x, pi0.numpy()))
    ((gpi * pi).sum() + (gx * x).sum()).backward()
    return x.grad


def test_a_torch_client_on_the_bridge_passes_the_oracle():
    rep = oracle.check_hypergradient(torch_client, CASES)
    assert rep.passed, rep.to_text()


def test_upper_spec_exposes_kind_parameters_discount_and_start():
    golden = {g.id: g for g in load_golden()}
    for cid in ("quad-S4A3", "shaping-S3A2-H3", "gridworld-N3-seed0"):
        g = golden[cid]
        inp = _inputs([g])[0]
        spec = inp.upper_spec
        raw = g.case["upper"]
        assert spec["kind"] == raw["kind"]
        assert set(spec["params"]) == set(raw) - {"kind"}
        own = {"shaping": ("gamma_u", "mu_u"), "target_occupancy": ("g", "mu_u")}
        if raw["kind"] in own:
            dk, sk = own[raw["kind"]]
            assert spec["discount"] == pytest.approx(float(raw[dk]), rel=1e-15)
            np.testing.assert_allclose(spec["start"], np.array(raw[sk], dtype=float), rtol=1e-15)
        else:  # a quadratic upper has no discount or start distribution of its own
            assert spec["discount"] is None and spec["start"] is None


def test_jax_bridge():
    """JAX is not a dependency; this runs only where it is installed."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    inp = _inputs(CASES[3:4])[0]
    jv = inp.jax()
    g = jax.grad(lambda x: (jv.reward(x) ** 2).sum())(jv.x)
    want = 2 * np.einsum("sa,sad->d", inp.reward(inp.x), inp.reward_jacobian(inp.x))
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-12, atol=1e-12)


def test_jax_bridge_without_jax_names_the_package(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_jax(name, *a, **k):
        if name == "jax" or name.startswith("jax."):
            raise ImportError("No module named 'jax'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    with pytest.raises(ImportError, match="JAX bridge needs jax"):
        _inputs(CASES[:1])[0].jax()
