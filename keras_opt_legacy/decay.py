"""Decoupled weight decay (Loshchilov & Hutter), the one home of its arithmetic and of choosing
parameters by name: `WeightDecay` wraps any optimizer with it, and `AdamW`, `SGDW` and `NadamW`
are Adam, SGD and Nadam with it built in (the same ops, so the same results bitwise).

After each real update, every decayed parameter is `inner_step(p) - f * rate * p`, with `p` its
value before the step and `f` the update's learning rate (`scale_by_lr=True`: PyTorch's AdamW,
bert4keras) or 1 (`scale_by_lr=False`: tf.contrib's AdamWOptimizer).
"""
import re

import tensorflow as tf
from keras import backend as K

from . import checks, ops
from .base import (PreparedStep, deserialize_schedule, is_schedule, resolve_gradients,
                   serialize_schedule)

# ---- choosing parameters by name ---------------------------------------------------------


def patterns(name, value):
    """A tuple of compiled regular expressions from a string or a sequence of strings."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    compiled = []
    for pattern in value:
        if not isinstance(pattern, str):
            raise TypeError('%s must hold regular expressions (strings), got %r' % (name, pattern))
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError('%s: %r is not a regular expression (%s)' % (name, pattern, error))
    return tuple(compiled)


def check_all_match(name, compiled, params):
    """Raise a ValueError naming each pattern of `compiled` that no parameter's name matches: a
    pattern that matches nothing is a typo, or a model other than the one it was written for."""
    unmatched = [c.pattern for c in compiled if not any(c.search(p.name) for p in params)]
    if unmatched:
        raise ValueError(
            '%s: the pattern%s %s match%s no parameter of the model (its parameters: %s); nothing '
            'was built' % (name, 's' if len(unmatched) > 1 else '', ', '.join(map(repr, unmatched)),
                           '' if len(unmatched) > 1 else 'es', ', '.join(p.name for p in params)))


def selected(params, include, exclude):
    """The parameters whose name matches a pattern of `include` (None: all) and none of
    `exclude`; every pattern must match some parameter."""
    check_all_match('include', include or (), params)
    check_all_match('exclude', exclude, params)
    return [p for p in params
            if (include is None or any(c.search(p.name) for c in include))
            and not any(c.search(p.name) for c in exclude)]


# ---- the decay ---------------------------------------------------------------------------


class DecoupledDecay(object):
    """The decay term: `rate` (a number >= 0 or a schedule of the update count), `exclude` and
    `include` patterns, `scale_by_lr`; `build` puts its ops around an inner step."""

    def __init__(self, rate, exclude=(), include=None, scale_by_lr=True, name='rate'):
        if not is_schedule(rate):
            rate = checks.checked_number(name, rate, checks.NON_NEGATIVE, K.floatx())
        self.rate = rate
        self.exclude = patterns('exclude', exclude) or ()
        self.include = patterns('include', include)
        self.scale_by_lr = checks.flag('scale_by_lr', scale_by_lr)
        self.params = []  # the decayed parameters, once the step is prepared

    def select(self, params):
        self.params = selected(params, self.include, self.exclude)
        return self.params

    def coefficient(self, step, lr):
        """`f * rate` of the update number `step` (0-based), `lr` its learning rate."""
        rate = K.cast(self.rate(step), K.floatx()) if is_schedule(self.rate) else \
            tf.constant(self.rate, K.floatx())
        return lr * rate if self.scale_by_lr else rate

    def prepare(self, prepare_inner, grads, step, lr, rate_factors=None,
                reads_parameters=False, fused=True, folds=None):
        """The `PreparedStep` of the inner step with the decay of the selected parameters:
        `prepare_inner(gradients)` prepares the inner step, given a function returning `grads`
        (resolved once, where first needed: the decay waits for the gradients, which read the
        parameters). `step`: the count of updates before this one (for a schedule `rate`);
        `lr`: the update's learning rate, times each parameter's factor in `rate_factors`;
        `reads_parameters`: whether the inner step reads the parameters (see `build`); `fused`:
        whether the decay may use a kernel (else `assign_sub`); `folds`: see `build`."""
        resolved = []

        def gradients():
            if not resolved:
                resolved.append(resolve_gradients(grads))
            return resolved[0]
        inner = prepare_inner(gradients)
        factors = rate_factors or {}
        coefficients, by_factor = {}, {}
        for p in self.params:
            factor = factors.get(p, 1.)
            if factor not in by_factor:
                by_factor[factor] = self.coefficient(step, lr if factor == 1 else lr * factor)
            coefficients[p] = by_factor[factor]
        exact = [p for p in self.params
                 if reads_parameters or getattr(p, 'constraint', None) is not None]

        def build():
            with tf.control_dependencies([getattr(g, 'values', g) for g in gradients()]):
                return self.build(inner, coefficients, inner.applies, exact, fused, folds)
        return PreparedStep(build, applies=inner.applies)

    def build(self, inner, coefficients, applies, exact, fused=True, folds=None):
        """The ops of one step: `inner()` (the inner step's ops) with the decay of `self.params`
        by `coefficients[p]`, on the steps where `applies` (None: all).

        A parameter decays first, in place and in one pass (`p -= c * p`: the kernel library's
        `decay`, or TF's gradient-descent kernel reading `p` as its own delta), and then the
        inner step runs: equal, up to float rounding, to decaying its result by `c * p_old`,
        since the inner step only subtracts from `p`. `folds` (a rule with the decay built in:
        AdamW), called with `{p: c}` of those parameters when every step applies, returns the
        ids of the ones whose decay the inner step takes into its own kernel pass, the same
        arithmetic in one pass (AdamW: decay and ApplyAdam's step); none is built here for them.
        For the parameters in `exact` (constrained, or read by the step: Ftrl) the formula's
        order: `c * p_old` computed before the step, subtracted after it."""
        exact_ids = set(id(p) for p in exact)
        first = [p for p in self.params if id(p) not in exact_ids]
        if folds is not None and first and applies is None:
            folded = folds({p: coefficients[p] for p in first})
            first = [p for p in first if id(p) not in folded]

        def conditionally(build):
            if applies is None:
                return build()
            return [tf.cond(applies, lambda: tf.group(*build()), tf.no_op)]

        decay_first = conditionally(
            lambda: [_decay_in_place(p, coefficients[p], fused) for p in first]) if first else []
        amounts = ops.after_all([coefficients[p] * p for p in exact], also=decay_first)
        with tf.control_dependencies(decay_first + amounts):
            inner_ops = inner()
        if not exact:
            return decay_first + inner_ops
        with tf.control_dependencies(ops.graph_elements(inner_ops)):
            decay_after = conditionally(lambda: ops.assign_all(
                [(p, ops.minus(amount)) for p, amount in zip(exact, amounts)]))
        return decay_first + inner_ops + decay_after

    def get_config(self):
        return {'rate': serialize_schedule(self.rate) if is_schedule(self.rate) else self.rate,
                'exclude': [c.pattern for c in self.exclude],
                'include': None if self.include is None else [c.pattern for c in self.include],
                'scale_by_lr': self.scale_by_lr}


class Decays(object):
    """What an optimizer with a `decay_term` (DecoupledDecay) shows of it, once its train
    function is built: the decayed parameters and their names."""

    @property
    def decayed_params(self):
        return list(self.decay_term.params)

    @property
    def decayed_names(self):
        return [p.name for p in self.decay_term.params]


def deserialize_rate(rate):
    return deserialize_schedule(rate) if isinstance(rate, dict) else rate


def _decay_in_place(p, coefficient, fused=True):
    """The op `p <- p - coefficient * p`: with `fused`, in one pass -- the kernel library's
    `decay`, else TF's gradient-descent kernel with `p` its own delta (the same arithmetic;
    element-wise, so reading and writing the same buffer is safe) -- else `assign_sub` (a
    temporary of p's size)."""
    coefficient = K.cast(coefficient, p.dtype.base_dtype)
    if fused and not ops.keras_update_patched():
        op = ops.kernel_or(lambda k: k.decay(p, coefficient),
                           lambda: ops.descend(p, coefficient, p))
        if op is not None:
            return op
    return ops.assign_all([(p, ops.minus(coefficient * p))])[0]
