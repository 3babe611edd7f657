"""Taylor-mode differentiation of ODE solutions: ``taylor_coefficients(func, t, y, order)``.

The normalised Taylor coefficients ``y_k = y^(k)(t) / k!`` of the solution of ``dy/dt = func(t, y)``
through ``(t, y)`` obey the classical recursion (Griewank & Walther, *Evaluating Derivatives*, 2nd ed.,
SIAM 2008, Sec. 13.5; Bettencourt, Johnson & Duvenaud 2019, "Taylor-mode automatic differentiation for
higher-order derivatives in JAX", Sec. 4)::

    y_{k+1} = g_k / (k + 1),     g(s) = func(t + s, y_0 + y_1 s + ... + y_k s^k),     g_k = [s^k] g(s)

Nesting ``jvp`` k times to get ``g_k`` costs O(2^k): every level doubles the number of streams it
carries, while only k + 1 of them are distinct. Here ``func`` is instead traced once into an aten graph
(``torch.fx`` via ``make_fx``) and that graph is re-evaluated on truncated power series, one order per
round, with a propagation rule per operation (univariate Taylor arithmetic, Griewank & Walther ch. 13):

- ops linear in their series inputs (matmul against weights, views, sums, ``cat``, adds) cost one
  evaluation per order;
- products of two series and the elementwise nonlinearities (``tanh``, ``sigmoid``, ``exp``, ``sin``,
  ``log``, ``softplus``, ...) cost k + 1 elementwise multiply-adds at order k, through the recurrences
  their derivatives satisfy (e.g. ``tanh' = 1 - tanh^2``).

So coefficients up to order K cost K evaluations of each linear op (for an MLP: K times the matmuls of
one field evaluation) plus O(K^2) elementwise work: polynomial in the order. Order 1 is a plain call to
``func``. Everything is ordinary torch arithmetic, so gradients reach ``y``, ``t`` and the parameters of
``func`` by the usual backpropagation.

Requirements on ``func``: it must be traceable, i.e. no Python branching on tensor values (a
``TypeError`` says so), and use ops with a rule below (a ``TypeError`` names the op otherwise). It is
traced once per (func, shapes, dtypes, Python state); an ``nn.Module``'s parameters and buffers are graph
inputs, so training it needs no re-trace. The Python state a trace freezes (numbers and flags the field
reads from its attributes, closure, defaults or globals, which tensor a closure refers to, each submodule's
``train()``/``eval()`` mode) is part of the cache key (:mod:`pyjode.trace_key`), so changing it re-traces.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import get_proxy_mode, make_fx
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from torch.func import functional_call

from .trace_key import python_state_key

__all__ = ["taylor_coefficients", "taylor_series"]

aten = torch.ops.aten
Series = list  # coefficients z_0, z_1, ... of one graph value, one appended per round


def taylor_coefficients(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    t: Union[float, torch.Tensor],
    y: torch.Tensor,
    order: int,
) -> torch.Tensor:
    """Normalised Taylor coefficients ``[y, y', y''/2!, ..., y^(order)/order!]`` of the solution of
    ``dy/dt = func(t, y)`` through ``(t, y)``, stacked into a tensor of shape ``(order + 1, *y.shape)``.

    Works for autonomous and time-dependent fields (``t`` enters as the series ``t + s``). The cost is
    polynomial in ``order``: ``order`` evaluations of each linear op of ``func`` plus O(order^2)
    elementwise work (see the module docstring); order 1 is one call to ``func``.
    """
    return torch.stack(taylor_series(func, t, y, order))


def taylor_series(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    t: Union[float, torch.Tensor],
    y: torch.Tensor,
    order: int,
) -> list[torch.Tensor]:
    """:func:`taylor_coefficients` as a list of ``order + 1`` tensors shaped like ``y``.

    Callers that combine the coefficients (a Taylor step) should use this form: it saves the stacking
    copy and, under autograd, the scatter of each indexed coefficient's gradient into a stacked buffer.
    """
    y, t = _check_inputs(y, t, order)
    if order == 0:
        return [y]
    if order == 1:
        return [y, _checked_field(func(t, y), y)]
    graph, consts = _traced(func, t, y)
    return _propagate(graph, consts, t, y, order)


def _check_inputs(y, t, order):
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"y must have a floating dtype, got {y.dtype}; use y.double() or y.float()")
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be a non-negative int, got {order!r}")
    if isinstance(t, torch.Tensor):
        if t.dim() != 0:
            raise ValueError(f"t must be a 0-dim tensor or a number, got shape {tuple(t.shape)}")
        t = t if t.is_floating_point() else t.to(y.dtype)
    elif isinstance(t, (int, float)):
        t = torch.tensor(float(t), dtype=y.dtype, device=y.device)
    else:
        raise TypeError(f"t must be a number or a 0-dim tensor, got {type(t).__name__}")
    return y, t


def _checked_field(dy, y):
    if not isinstance(dy, torch.Tensor) or dy.shape != y.shape:
        shape = tuple(dy.shape) if isinstance(dy, torch.Tensor) else type(dy).__name__
        raise ValueError(f"func(t, y) must return a tensor shaped like y {tuple(y.shape)}, got {shape}")
    return dy


# ----------------------------------------------------------------------------------------------
# Tracing


@dataclass
class _Graph:
    nodes: list  # call_function nodes in topological order
    inputs: list  # placeholders: the constants' slots first, then t, then y
    output: Any  # the fx argument of the output node
    names: tuple  # parameter and buffer names of an nn.Module func, fed as the first inputs


_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _module_tensors(func) -> dict:
    if not isinstance(func, nn.Module):
        return {}
    return {**dict(func.named_parameters()), **dict(func.named_buffers())}


def _traced(func, t, y) -> tuple[_Graph, list]:
    tensors = _module_tensors(func)
    key = (tuple(t.shape), t.dtype, tuple(y.shape), y.dtype, y.device,
           tuple((n, tuple(v.shape), v.dtype) for n, v in tensors.items()), python_state_key(func))
    try:
        # inside an enclosing trace (e.g. TaylorLagrange's fixed graph) the tensors are the tracer's: a
        # graph traced there must not be cached for later calls on real tensors
        per_func = _CACHE.setdefault(func, {}) if get_proxy_mode() is None else {}
    except TypeError:  # not weak-referenceable: trace every call
        per_func = {}
    if key not in per_func:
        per_func[key] = _trace(func, tuple(tensors), list(tensors.values()), t, y)
    return per_func[key], list(tensors.values())


def _trace(func, names, values, t, y) -> _Graph:
    if names:
        def call(flat, t_, y_):
            return functional_call(func, dict(zip(names, flat)), (t_, y_))
        example = (values, t, y)
    else:
        def call(t_, y_):
            return func(t_, y_)
        example = (t, y)
    try:
        # Fake tensors keep tracing cheap and turn data-dependent control flow into an error instead of a
        # silently frozen branch; tensors that func closes over stay real and keep their autograd history.
        # functionalize turns in-place arithmetic in func into out-of-place ops with rules
        gm = make_fx(torch.func.functionalize(call, remove="mutations"), tracing_mode="fake",
                     _allow_non_fake_inputs=True)(*example)
    except GuardOnDataDependentSymNode as e:
        raise TypeError(
            "taylor_coefficients traces func once, so func must not branch on tensor values (if/while on "
            "t or y, .item()); express the branch with torch.where"
        ) from e
    gm.graph.eliminate_dead_code()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    nodes = [n for n in gm.graph.nodes if n.op in ("call_function", "get_attr")]
    for n in nodes:
        if n.op == "get_attr":
            n.meta["pyjode_value"] = getattr(gm, n.target)
            continue
        if _packet(n.target) in _INPLACE_VIEWS:  # e.g. squeeze_ from nn.Linear on a 1-D input
            n.target = getattr(_INPLACE_VIEWS[_packet(n.target)], n.target._overloadname)
        n.meta["pyjode_rule"] = _rule(n.target)
        n.meta["pyjode_constant_valued"] = _packet(n.target) in _CONSTANT_VALUED
    (output,) = [n.args[0] for n in gm.graph.nodes if n.op == "output"]
    return _Graph(nodes=nodes, inputs=placeholders, output=output, names=names)


# ----------------------------------------------------------------------------------------------
# Series propagation


class _Jet:
    """A graph value that depends on (t, y): its Taylor coefficients so far and its rule's state."""

    __slots__ = ("c", "state")

    def __init__(self, c=None):
        self.c = [] if c is None else c
        self.state = {}


def _propagate(graph: _Graph, consts: list, t, y, order: int) -> list[torch.Tensor]:
    t_jet, y_jet = _Jet([t]), _Jet([y])
    env: dict = dict(zip(graph.inputs, [*consts, t_jet, y_jet]))
    out_leaves = fx.node.map_aggregate(graph.output, lambda a: a)
    # Round 0 evaluates every node. The nodes that depend on (t, y) are recorded with their rule and their
    # resolved arguments, which later rounds reuse as they are: an argument is either a constant or a _Jet,
    # and a _Jet is the same object in every round, growing one coefficient per round.
    plan = [step for step in (_eval_node(node, env) for node in graph.nodes) if step is not None]
    y_jet.c.append(_output_coeff(out_leaves, env, 0, y))
    for k in range(1, order):
        t_jet.c.append(torch.ones_like(t) if k == 1 else torch.zeros_like(t))
        for rule, args, kwargs, jet, op in plan:
            jet.c.append(rule(k, args, kwargs, jet, op))
        y_jet.c.append(_output_coeff(out_leaves, env, k, y) / (k + 1))
    return y_jet.c


def _output_coeff(out, env, k, y):
    if isinstance(out, (list, tuple)):
        if len(out) != 1:
            raise ValueError(f"func(t, y) must return one tensor, got {len(out)} outputs")
        out = out[0]
    v = env[out] if isinstance(out, fx.Node) else out
    if isinstance(v, _Jet):
        g = v.c[k]
    else:  # a field independent of t and y
        g = v if k == 0 else torch.zeros_like(v)
    return _checked_field(g, y) if k == 0 else g


def _eval_node(node: fx.Node, env: dict):
    """Round 0 of one node: its value, or for a node that depends on (t, y) its coefficient 0 and the
    ``(rule, args, kwargs, jet, op)`` with which later rounds extend it."""
    if node.op == "get_attr":
        env[node] = node.meta["pyjode_value"]
        return None
    args = fx.node.map_arg(node.args, env.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
    op = node.target
    if node.meta["pyjode_constant_valued"] or not any(isinstance(a, _Jet) for a in _leaves((args, kwargs))):
        env[node] = op(*_at0(args), **_at0(kwargs))
        return None
    rule = node.meta["pyjode_rule"]
    if rule is None:
        raise TypeError(
            f"taylor_coefficients: func uses {op}, which has no Taylor-mode rule. Supported: "
            f"{', '.join(sorted(_supported_names()))}. Rewrite func with these ops"
        )
    jet = env[node] = _Jet()
    jet.c.append(rule(0, args, kwargs, jet, op))
    return rule, args, kwargs, jet, op


def _leaves(tree):
    out = []
    fx.node.map_aggregate(tree, lambda a: out.append(a) or a)
    return out


def _at0(tree):
    return fx.node.map_aggregate(tree, lambda a: a.c[0] if isinstance(a, _Jet) else a)


def _packet(op):
    return getattr(op, "overloadpacket", op)


def _rule(op):
    return _RULES.get(_packet(op))


def _supported_names():
    return {str(getattr(p, "__name__", p)) for p in (*_RULES, *_CONSTANT_VALUED)}


# ---- linear and affine ops -------------------------------------------------------------------


def _linear(k, args, kwargs, out, op=None):
    """An op linear in its one series argument: apply it to coefficient k."""
    pick = lambda a: a.c[k] if isinstance(a, _Jet) else a  # noqa: E731
    return op(*fx.node.map_aggregate(args, pick), **fx.node.map_aggregate(kwargs, pick))


def _affine(k, args, kwargs, out, op=None):
    """Sums and concatenations: a constant operand only enters coefficient 0."""
    def pick(a):
        if isinstance(a, _Jet):
            return a.c[k]
        if k > 0 and isinstance(a, torch.Tensor) and a.is_floating_point():
            return torch.zeros_like(a)
        return a
    values = fx.node.map_aggregate(args, pick)
    if k > 0 and _packet(op) in _NUMBER_OPERANDS:
        values = tuple(0 if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values)
    return op(*values, **kwargs)


def _product(k, args, kwargs, out, op=None):
    """A bilinear op (mul, mm, ...): linear when one factor is constant, a Cauchy product otherwise."""
    a, b = args[0], args[1]
    if not (isinstance(a, _Jet) and isinstance(b, _Jet)):
        return _linear(k, args, kwargs, out, op)
    acc = op(a.c[0], b.c[k], *args[2:], **kwargs)
    for i in range(1, k + 1):
        acc = acc + op(a.c[i], b.c[k - i], *args[2:], **kwargs)
    return acc


def _addmm_like(mat_op):
    def rule(k, args, kwargs, out, op=None):
        if k == 0:
            return op(*_at0(args), **_at0(kwargs))
        bias, m1, m2 = args[:3]
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        if isinstance(m1, _Jet) or isinstance(m2, _Jet):
            prod = _product(k, (m1, m2), {}, out, mat_op)
        else:  # a constant product only enters coefficient 0
            prod = mat_op(m1, m2) if k == 0 else torch.zeros_like(bias.c[k])
        if alpha != 1:
            prod = prod * alpha
        b = bias.c[k] if isinstance(bias, _Jet) else (bias if k == 0 else None)
        return prod if b is None else prod + (b if beta == 1 else beta * b)
    return rule


def _div(k, args, kwargs, out, op=None):
    num, den = args[0], args[1]
    if kwargs.get("rounding_mode") is not None:
        raise TypeError("taylor_coefficients: div with rounding_mode is piecewise constant; it has no Taylor rule")
    if not isinstance(den, _Jet):
        return _linear(k, args, kwargs, out, op)
    # z = num / den  =>  den z = num  =>  z_k = (num_k - sum_{j>=1} den_j z_{k-j}) / den_0
    num_k = num.c[k] if isinstance(num, _Jet) else (num if k == 0 else 0.0)
    if k == 0:
        return num_k / den.c[0]
    return (num_k - _conv(den.c, out.c, k, 1)) / den.c[0]


# ---- elementwise nonlinear ops ---------------------------------------------------------------


def _conv(a: Series, b: Series, k: int, lo: int = 0, hi: int | None = None):
    """sum_{i=lo}^{hi} a_i b_{k-i}: coefficient k of a product of series, restricted to i in [lo, hi]."""
    hi = k if hi is None else hi
    acc = a[lo] * b[k - lo]
    for i in range(lo + 1, hi + 1):
        acc = acc + a[i] * b[k - i]
    return acc


def _chain(k: int, x: Series, w: Series):
    """z_k for z' = w x' (z = phi(x), w = phi'(x)): z_k = (1/k) sum_{j=1}^k j x_j w_{k-j}."""
    acc = x[1] * w[k - 1]
    for j in range(2, k + 1):
        acc = acc + j * x[j] * w[k - j]
    return acc if k == 1 else acc / k  # no division by 1: under autograd every op costs a node


def _unary(fn):
    """Adapt fn(k, x_series, z_series, state) to the node-rule signature."""
    def rule(k, args, kwargs, out, op=None):
        x = args[0]
        if any(isinstance(a, _Jet) for a in _leaves((args[1:], kwargs))):
            raise TypeError(f"taylor_coefficients: {op} is supported with a series in its first argument only")
        return fn(k, x.c, out.c, out.state, op, args[1:], kwargs)
    rule.__name__ = fn.__name__
    return rule


def _exp(k, x, z, st, op, rest, kw):
    return torch.exp(x[0]) if k == 0 else _chain(k, x, z)


def _logistic_like(derivative, first_order):
    """tanh and sigmoid: phi' is a polynomial in phi, so w = phi'(x) follows from z itself. Coefficient 1,
    z_1 = phi'(x_0) x_1, is the op's own backward kernel (``first_order(x_1, z_0)``): one fused op, where
    the series of w is only built when a higher coefficient needs it."""
    def fn(k, x, z, st, op, rest, kw):
        if k == 0:
            st["w"] = []
            return op(x[0])
        if k == 1:
            return first_order(x[1], z[0])
        w = st["w"]
        for m in range(len(w), k):
            w.append(derivative(z[m], _conv(z, z, m), m))
        return _chain(k, x, w)
    return fn


_tanh = _logistic_like(lambda z_m, zz_m, m: (1.0 - zz_m) if m == 0 else -zz_m, aten.tanh_backward.default)
_sigmoid = _logistic_like(lambda z_m, zz_m, m: z_m - zz_m, aten.sigmoid_backward.default)


def _sin_cos(sign_of_partner):
    """sin' = cos, cos' = -sin: carry the partner series alongside."""
    def fn(k, x, z, st, op, rest, kw):
        if k == 0:
            st["p"] = [torch.cos(x[0]) if op is aten.sin.default else torch.sin(x[0])]
            return op(x[0])
        p = st["p"]
        zk = sign_of_partner * _chain(k, x, p)
        p.append(-sign_of_partner * _chain(k, x, z))
        return zk
    return fn


def _log(k, x, z, st, op, rest, kw):
    if k == 0:
        return torch.log(x[0])
    # x z' = x'  =>  z_k = (x_k - (1/k) sum_{j=1}^{k-1} j z_j x_{k-j}) / x_0
    acc = x[k]
    for j in range(1, k):
        acc = acc - (j / k) * z[j] * x[k - j]
    return acc / x[0]


def _reciprocal(k, x, z, st, op, rest, kw):
    return torch.reciprocal(x[0]) if k == 0 else -_conv(x, z, k, 1) / x[0]


def _sqrt(k, x, z, st, op, rest, kw):
    if k == 0:
        return torch.sqrt(x[0])
    acc = x[k] if k == 1 else x[k] - _conv(z, z, k, 1, k - 1)
    return acc / (2 * z[0])


def _pow(k, x, z, st, op, rest, kw):
    p = rest[0] if rest else kw["exponent"]
    if isinstance(p, torch.Tensor):
        raise TypeError("taylor_coefficients: pow with a tensor exponent has no Taylor rule; use exp(p * log(x))")
    if float(p).is_integer() and p >= 0:
        p = int(p)
        if p == 0:
            return torch.ones_like(x[0]) if k == 0 else torch.zeros_like(x[0])
        # repeated Cauchy products stay exact at x_0 = 0, unlike the recurrence below
        powers = st.setdefault("powers", [[] for _ in range(p + 1)])
        powers[1].append(x[k])
        for m in range(2, p + 1):
            powers[m].append(x[0] ** m if k == 0 else _conv(x, powers[m - 1], k))
        return powers[p][k]
    if k == 0:
        return x[0] ** p
    # z = x^p  =>  x z' = p x' z  =>  z_k = sum_{j=1}^k (p j - (k - j)) x_j z_{k-j} / (k x_0)
    acc = (p * k) * x[k] * z[0]
    for j in range(1, k):
        acc = acc + (p * j - (k - j)) * x[j] * z[k - j]
    return acc / (k * x[0])


def _piecewise_linear(slope_of):
    """relu, abs, leaky_relu: linear with the slope fixed by the sign of x_0."""
    def fn(k, x, z, st, op, rest, kw):
        if k == 0:
            st["slope"] = slope_of(x[0], rest, kw)
            return op(x[0], *rest, **kw)
        return st["slope"] * x[k]
    return fn


_relu = _piecewise_linear(lambda x0, rest, kw: (x0 > 0).to(x0.dtype))
_abs = _piecewise_linear(lambda x0, rest, kw: torch.sign(x0))
_leaky_relu = _piecewise_linear(
    lambda x0, rest, kw: torch.where(x0 > 0, 1.0, rest[0] if rest else kw.get("negative_slope", 0.01)).to(x0.dtype)
)


def _sigmoid_series(k, u: Series, st: dict) -> Series:
    """Extend the sigmoid series of u (already known to order k) to order k; st holds its state."""
    w = st.setdefault("sig", [])
    sub = st.setdefault("sig_state", {})
    w.append(_sigmoid(k, u, w, sub, aten.sigmoid.default, (), {}))
    return w


def _softplus(k, x, z, st, op, rest, kw):
    beta = rest[0] if rest else kw.get("beta", 1)
    if k == 0:
        st["u"] = [beta * x[0]]
        _sigmoid_series(0, st["u"], st)
        return op(x[0], *rest, **kw)
    # softplus' = sigmoid(beta x); its series is needed to order k - 1
    if k > 1:
        st["u"].append(beta * x[k - 1])
        _sigmoid_series(k - 1, st["u"], st)
    return _chain(k, x, st["sig"])


def _silu(k, x, z, st, op, rest, kw):
    w = _sigmoid_series(k, x, st)  # silu = x * sigmoid(x)
    return _conv(x, w, k)


# ---- rule table ------------------------------------------------------------------------------

_LINEAR = [
    aten.view, aten._unsafe_view, aten.reshape, aten.t, aten.transpose, aten.permute, aten.expand,
    aten.unsqueeze, aten.squeeze, aten.slice, aten.select, aten.clone, aten.detach, aten.alias, aten.neg,
    aten.sum, aten.mean, aten.index_select, aten.index, aten._to_copy, aten.repeat, aten.split,
    aten.split_with_sizes, aten.unbind, aten.narrow, aten.diagonal, aten.flip, aten.roll, aten.cumsum,
    aten.lift_fresh_copy, aten.view_copy, aten.expand_copy, aten.permute_copy, aten.t_copy,
    aten.transpose_copy, aten.unsqueeze_copy, aten.squeeze_copy, aten.slice_copy, aten.select_copy,
    aten.contiguous, aten.flatten, aten.movedim, operator.getitem,
]
_INPLACE_VIEWS = {aten.squeeze_: aten.squeeze, aten.unsqueeze_: aten.unsqueeze, aten.t_: aten.t,
                  aten.transpose_: aten.transpose}
_AFFINE = [aten.add, aten.sub, aten.rsub, aten.where, aten.cat, aten.stack]
_NUMBER_OPERANDS = {aten.add, aten.sub, aten.rsub, aten.where}  # their Python numbers are constants
_PRODUCTS = [aten.mul, aten.mm, aten.mv, aten.bmm, aten.matmul, aten.dot, aten.outer]
_UNARY = {
    aten.exp: _exp, aten.tanh: _tanh, aten.sigmoid: _sigmoid, aten.sin: _sin_cos(1.0),
    aten.cos: _sin_cos(-1.0), aten.log: _log, aten.reciprocal: _reciprocal, aten.sqrt: _sqrt,
    aten.pow: _pow, aten.relu: _relu, aten.abs: _abs, aten.leaky_relu: _leaky_relu,
    aten.softplus: _softplus, aten.silu: _silu,
}
# Ops whose value does not vary to first order with a series input (comparisons, *_like constructors):
# evaluated once on coefficient 0 and treated as constants.
_CONSTANT_VALUED = {
    aten.ones_like, aten.zeros_like, aten.full_like, aten.empty_like, aten.new_zeros, aten.new_ones,
    aten.new_full, aten.new_empty, aten.gt, aten.lt, aten.ge, aten.le, aten.eq, aten.ne, aten.sign,
    aten.floor, aten.ceil, aten.round, aten.trunc, aten.logical_not, aten.logical_and, aten.logical_or,
    aten.isnan, aten.isinf, aten.isfinite, aten.argmax, aten.argmin,
}

# op packet -> rule(k, args, kwargs, out_jet, op) returning coefficient k of the op's output
_RULES: dict = {
    **{p: _linear for p in _LINEAR},
    **{p: _affine for p in _AFFINE},
    **{p: _product for p in _PRODUCTS},
    **{p: _unary(fn) for p, fn in _UNARY.items()},
    aten.div: _div,
    aten.addmm: _addmm_like(aten.mm.default),
    aten.addmv: _addmm_like(aten.mv.default),
    aten.baddbmm: _addmm_like(aten.bmm.default),
}
