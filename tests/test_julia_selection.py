"""Backend selection and the errors of the Julia backend where Julia is absent (every machine here)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import pyjode
from pyjode._julia import probe
from pyjode._julia.backend import resolve_backend
from pyjode._julia.plan import JuliaUnsupportedError, make_plan, unsupported_reason
from pyjode._julia.probe import JuliaUnavailableError


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYJODE_", "PYTHON_JULIA"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=full_env)


def test_import_pyjode_does_not_import_juliacall():
    out = _run("""
        import sys, pyjode, pyjode._julia
        assert pyjode._julia.julia_available() in (True, False)
        print("juliacall" in sys.modules, "juliapkg" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_backend_julia_fails_fast_without_network():
    """backend="julia" raises the documented error, opens no socket and imports no juliacall."""
    out = _run("""
        import sys, time
        def no_network(event, args):
            if event.startswith(("socket.", "urllib.")):
                raise AssertionError(f"network access attempted: {event}")
        sys.addaudithook(no_network)
        import torch, pyjode
        from pyjode._julia import JuliaUnavailableError
        start = time.perf_counter()
        try:
            pyjode.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), backend="julia")
        except JuliaUnavailableError as exc:
            assert isinstance(exc, RuntimeError)
            print(time.perf_counter() - start)
            print(exc)
        assert "juliacall" not in sys.modules
    """, PATH="/usr/bin:/bin")
    assert out.returncode == 0, out.stderr
    elapsed, message = out.stdout.split("\n", 1)
    assert float(elapsed) < 2.0
    assert 'pip install "pyjode[julia]"' in message
    assert "PYTHON_JULIACALL_EXE" in message and "PYTHON_JULIAPKG_EXE" in message


def test_auto_falls_back_to_torch_and_matches_it():
    y0, t = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64)
    if pyjode._julia.julia_available():
        pytest.skip("Julia is available here, so auto picks it")
    ys = pyjode.odeint(lambda t, y: -y, y0, t, backend="auto")
    torch.testing.assert_close(ys, pyjode.odeint(lambda t, y: -y, y0, t), rtol=0, atol=0)


def test_resolve_backend_rules(monkeypatch):
    monkeypatch.delenv("PYJODE_BACKEND", raising=False)
    monkeypatch.setattr(probe, "unavailable_reason", lambda: "no julia in this test")
    import pyjode._julia.backend as backend

    monkeypatch.setattr(backend, "unavailable_reason", probe.unavailable_reason)
    monkeypatch.setattr(backend, "julia_available", lambda: False)
    assert resolve_backend("torch") == "torch"
    assert resolve_backend("auto") == "torch"
    with pytest.raises(JuliaUnavailableError, match="no julia in this test"):
        resolve_backend("julia")
    monkeypatch.setenv("PYJODE_BACKEND", "julia")
    with pytest.raises(JuliaUnavailableError):
        resolve_backend("auto")
    assert resolve_backend("torch") == "torch"  # an explicit choice beats the environment
    monkeypatch.setenv("PYJODE_BACKEND", "fortran")
    with pytest.raises(ValueError, match="PYJODE_BACKEND"):
        resolve_backend("auto")
    monkeypatch.setenv("PYJODE_BACKEND", "auto")
    monkeypatch.setattr(backend, "julia_available", lambda: True)
    assert resolve_backend("auto") == "julia"
    assert resolve_backend("auto", "dopri5", "direct") == "torch"  # direct gradients exist only on torch
    assert resolve_backend("auto", "dopri5", "quadrature") == "julia"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("jax")


def test_probe_finds_julia_without_importing_it(tmp_path, monkeypatch):
    """With juliacall installed (faked: found, never imported) and a julia on PATH, Julia is available."""
    julia = tmp_path / "julia"
    julia.write_text("#!/bin/sh\nexit 1\n")
    julia.chmod(0o755)
    for var in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIACALL_PROJECT", "PYTHON_JULIAPKG_EXE", "PYTHON_JULIAPKG_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(probe, "_juliapkg_recorded_executables", lambda: [])
    real_find_spec = probe.importlib.util.find_spec
    fake = importlib.machinery.ModuleSpec("juliacall", None)
    monkeypatch.setattr(probe.importlib.util, "find_spec",
                        lambda name, *a: fake if name == "juliacall" else real_find_spec(name, *a))
    assert not probe.julia_available()
    assert "no Julia executable" in probe.unavailable_reason()
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert probe.julia_available()
    assert probe.find_julia_executable() == str(julia)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(julia))
    assert "PYTHON_JULIACALL_PROJECT" in probe.unavailable_reason()
    monkeypatch.setenv("PYTHON_JULIACALL_PROJECT", str(tmp_path))
    assert probe.julia_available()
    assert "juliacall" not in sys.modules


def test_juliacall_missing_is_the_reason_here():
    if importlib.util.find_spec("juliacall") is not None:
        pytest.skip("juliacall is installed here")
    assert not pyjode._julia.julia_available()
    assert "juliacall is not installed" in probe.unavailable_reason()


def _plan(method="dopri5", adjoint="quadrature", step_size=None, needs_grad=True):
    return make_plan(method, adjoint, rtol=1e-7, atol=1e-9, step_size=step_size, max_steps=None,
                     needs_grad=needs_grad)


def test_unsupported_combinations_say_what_to_do():
    with pytest.raises(JuliaUnsupportedError, match='adjoint="quadrature" or "backsolve"'):
        _plan(adjoint="direct")
    assert _plan(adjoint="direct", needs_grad=False).gradient == "none"
    custom = pyjode.ButcherTableau("mine", c=[0.0], a=[[]], b=[1.0], order=1)
    with pytest.raises(JuliaUnsupportedError, match="custom tableaus"):
        _plan(method=custom, step_size=0.1)
    with pytest.raises(ValueError, match="pyjode.Reversible"):
        _plan(adjoint="reversible")
    with pytest.raises(ValueError, match="step_size"):
        _plan(method="rk4")
    with pytest.raises(ValueError, match="not known"):
        _plan(adjoint="magic")
    with pytest.raises(ValueError, match="not known"):
        _plan(method="rk45")
    assert unsupported_reason("dopri5", pyjode.Backsolve(norm="rms")) is None
    assert _plan(adjoint=pyjode.Quadrature(nodes_per_step=5)).nodes == 5
    assert _plan(adjoint="quadrature").nodes == 2  # ceil(4 / 2) for dopri5's 4th-order error control


def test_reversible_plans():
    from pyjode.reversible import Reversible

    plan = _plan(method=Reversible("rk4", coupling=0.99), adjoint="reversible", step_size=0.1)
    assert plan.tableau.name == "rk4" and plan.coupling == 0.99 and plan.max_nodes(6) == 4
    with pytest.raises(JuliaUnsupportedError, match="steps adaptively"):
        _plan(method=Reversible("dopri5"), adjoint="reversible", step_size=0.1)
    # The PyTorch backend's own check, with its message: continuous adjoints need a tableau.
    with pytest.raises(ValueError, match="adjoint='reversible'"):
        _plan(method=Reversible("rk4"), adjoint="quadrature", step_size=0.1)


def test_plan_reads_the_resolved_gradient_method():
    """A string means the same object as on the PyTorch backend, and every setting comes off that object."""
    from pyjode.adjoints import resolve_adjoint

    assert _plan(adjoint="quadrature").state == resolve_adjoint("quadrature").state == "resolve"
    assert _plan(adjoint=pyjode.Quadrature(state="stored")).state == "stored"
    assert _plan(adjoint=pyjode.Quadrature(state="resolve")).state == "resolve"
    assert _plan(adjoint="backsolve").norm == "seminorm"
    assert _plan(adjoint=pyjode.Backsolve(norm="rms")).norm == "rms"
    # An explicit 0.0 is a tolerance, not "unset".
    plan = _plan(adjoint=pyjode.Backsolve(rtol=0.0, atol=1e-12))
    assert (plan.adjoint_rtol, plan.adjoint_atol) == (0.0, 1e-12)
    plan = _plan(adjoint=pyjode.Quadrature(rtol=0.0))
    assert (plan.adjoint_rtol, plan.adjoint_atol) == (0.0, 1e-9)
    assert _plan(adjoint=pyjode.Quadrature(method="tsit5")).adjoint_method == "tsit5"
    with pytest.raises(TypeError, match="instance"):
        _plan(adjoint=pyjode.Quadrature)

    class Impostor:  # duck-typed look-alikes are not gradient methods
        name, state, rtol = "quadrature", "stored", 1e-3

    with pytest.raises(TypeError):
        _plan(adjoint=Impostor())


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5"])
def test_default_quadrature_nodes_are_the_torch_backends(method):
    from pyjode.adjoints.quadrature import default_nodes_per_step
    from pyjode.tableau import get_tableau

    plan = _plan(method=method, step_size=0.1)
    assert plan.nodes == default_nodes_per_step(get_tableau(method)) == pyjode.Quadrature()._nodes(get_tableau(method))


def test_quadrature_nodes_are_batched_like_the_torch_backend():
    plan = _plan(adjoint="quadrature")  # dopri5: 2 nodes per step
    assert plan.max_nodes(3) == 2 ** 14 // 3 // 2 * 2  # whole steps, up to 2**14 state elements
    assert plan.max_nodes(10 ** 6) == 2  # at least one step's nodes
    assert _plan(adjoint=pyjode.Quadrature(max_nodes_per_call=7)).max_nodes(3) == 6


def test_reversible_refuses_time_gradients():
    from pyjode.reversible import Reversible

    with pytest.raises(JuliaUnsupportedError, match="t.detach"):
        make_plan(Reversible("rk4"), "reversible", rtol=1e-7, atol=1e-9, step_size=0.1, max_steps=None,
                  needs_grad=True, t_requires_grad=True)
    assert _plan(adjoint="backsolve").time_gradients


def test_julia_backend_imports_juliacall_before_torch(tmp_path):
    """With PYJODE_BACKEND=julia and Julia present, `import pyjode` imports juliacall first (a fake one here)."""
    (tmp_path / "juliacall.py").write_text(textwrap.dedent("""
        import sys
        TORCH_FIRST = "torch" in sys.modules
        def newmodule(name):
            raise RuntimeError("this fake juliacall cannot start Julia")
    """))
    julia = tmp_path / "julia"
    julia.write_text("#!/bin/sh\nexit 1\n")
    julia.chmod(0o755)
    out = _run("""
        import sys
        import pyjode
        import juliacall
        print(juliacall.TORCH_FIRST, pyjode.julia_available())
        try:
            pyjode.odeint(lambda t, y: -y, __import__("torch").ones(1), [0.0, 1.0], backend="julia")
        except pyjode.JuliaUnavailableError as exc:
            print("failed to start earlier" in str(exc))
    """, PYJODE_BACKEND="julia", PYTHONPATH=str(tmp_path), PATH=f"{tmp_path}:/usr/bin:/bin")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]
