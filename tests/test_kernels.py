"""The kernel library (keras_opt_legacy.kernels, issue 20), op by op.

Each op runs several steps on ref variables (Keras 2.2) and on resource variables (Keras 2.3),
in float32 and float64, and is compared with (a) a NumPy computation of the same formula in the
same dtype (the formula path's tolerances), (b) the rule's formula as a TF graph (the code of the
rule's `_apply`, built with the package's own `ops.assign_all`), bitwise where the operations
are the same, and (c) itself on the other kind of variable, bitwise. Then: determinism across
processes (the sums of LAMB, KolNorms and Adafactor too), TF's copy-on-write of resource
variables, the fallback cases where `ops()` returns None (library disabled, missing, failing to
load, mixed variable kinds, a GPU), and errors.

`make test` sets REQUIRE_KERNELS=1: then a library that cannot be used fails these tests instead
of skipping them -- unless it is known not to work with this TensorFlow (built with GCC 4: TF
1.14's Python 3.6 wheel), which skips them saying so; KERAS_OPT_LEGACY_KERNELS=0 (the suite
without the library) skips the op tests and runs the fallback ones.
"""
import collections
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from keras import backend as K

from keras_opt_legacy import kernels
from keras_opt_legacy import ops as kops

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = (129, 130)  # 16770 elements: 17 chunks of float32, a scalar tail of 2 (16770 % 8)
STEPS = 8  # RAdam/AdaBelief's rectification switches on at step 6 (beta_2 = 0.999)
TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12),
             np.float16: dict(rtol=1e-2, atol=1e-3)}


def library_or_skip():
    if kernels.library() is not None:
        return
    if kernels.disabled():
        pytest.skip('the kernel library is disabled (KERAS_OPT_LEGACY_KERNELS=0)')
    if kernels.incompatible():  # a known limitation (a TensorFlow built with GCC 4), not a bug
        pytest.skip('the kernel library cannot be used here: %s' % kernels.why_not())
    if os.environ.get('REQUIRE_KERNELS'):
        pytest.fail('REQUIRE_KERNELS is set but the kernel library is not usable: %s'
                    % kernels.why_not())
    pytest.skip('the kernel library is not usable: %s' % kernels.why_not())


# ---- the cases ---------------------------------------------------------------------------------
#
# A case: its slots (name, initial value); `scalars(t)`, the step's scalar inputs by name (floats
# or bools, the same values for every path); `call(k, p, slots, s, g)`, the op(s) through
# `kernels.ops()`; `numpy(p, slots, s, g)`, one step in NumPy in the arrays' dtype, returning the
# new (p, slots); `formula(p, slots, s, g)`, the rule's `_apply` as `[(variable, new value or
# ops.minus(...))]`; `bitwise`: whether the op equals the formula graph bit for bit.

Case = collections.namedtuple('Case', 'slots scalars call numpy formula bitwise')
# A slot: (name, initial value), or (name, initial value, its shape as a function of p's).


def slot_arrays(case, shape, dtype):
    return collections.OrderedDict(
        (slot[0], np.full(slot[2](shape) if len(slot) > 2 else shape, slot[1], dtype))
        for slot in case.slots)


def sqrt(x):
    return np.sqrt(x)


def rectification(beta_2, t):
    """RAdam's (rectified, r_t), rules._rectification in NumPy (float64)."""
    beta_2_power = beta_2 ** t
    rho_inf = 2. / (1. - beta_2) - 1.
    rho_t = rho_inf - 2. * t * beta_2_power / (1. - beta_2_power)
    r_t = np.sqrt(max((rho_t - 4.) * (rho_t - 2.) * rho_inf /
                      ((rho_inf - 4.) * (rho_inf - 2.) * rho_t), 0.))
    return bool(rho_t >= 5.), r_t


def adam_scalars(t, lr=0.001, b1=0.9, b2=0.999, **extra):
    values = dict(lr=lr, beta_1=b1, beta_2=b2, beta_1_power=b1 ** t, beta_2_power=b2 ** t,
                  lr_t=lr * np.sqrt(1. - b2 ** t) / (1. - b1 ** t))
    values.update(extra)
    return values


def ema(x, beta, g, complement=None):
    """beta*x + (1-beta)*g, the complement computed in the dtype (as the graph does for a
    variable beta) unless given."""
    one = np.ones((), x.dtype)
    return beta * x + ((one - beta) if complement is None else complement) * g


def momentum_case(nesterov):
    def numpy(p, sl, s, g):
        v = s['momentum'] * sl['accum'] - s['lr'] * g
        return (p + s['momentum'] * v - s['lr'] * g if nesterov else p + v), dict(accum=v)

    def formula(p, sl, s, g):  # optimizers.SGD._apply
        m = sl['accum']
        v = s['momentum'] * m - s['lr'] * g
        return [(m, v), (p, p + s['momentum'] * v - s['lr'] * g if nesterov else kops.plus(v))]
    return Case([('accum', 0.)], lambda t: dict(lr=0.1, momentum=0.9),
                lambda k, p, sl, s, g: k.keras_momentum(p, sl['accum'], s['lr'], g,
                                                        s['momentum'], use_nesterov=nesterov),
                numpy, formula, True)


def rmsprop_numpy(p, sl, s, g):
    a = ema(sl['ms'], s['rho'], np.square(g))
    return p - s['lr'] * g / (sqrt(a) + s['epsilon']), dict(ms=a)


def rmsprop_formula(p, sl, s, g):  # optimizers.RMSprop._apply
    a = sl['ms']
    new_a = s['rho'] * a + (1. - s['rho']) * K.square(g)
    return [(a, new_a), (p, kops.minus(s['lr'] * g / (K.sqrt(new_a) + s['epsilon'])))]


def nadam_scalars(t, b1=0.9, schedule_decay=0.004):
    schedule = 1.
    for i in range(1, t + 1):
        cache = b1 * (1. - 0.5 * 0.96 ** (i * schedule_decay))
        schedule *= cache
    cache_1 = b1 * (1. - 0.5 * 0.96 ** ((t + 1) * schedule_decay))
    return adam_scalars(t, lr=0.002, momentum_cache_t=cache, momentum_cache_t_1=cache_1,
                        m_schedule_new=schedule, m_schedule_next=schedule * cache_1,
                        epsilon=1e-7)


def nadam_numpy(p, sl, s, g):
    one = np.ones((), p.dtype)
    m = ema(sl['m'], s['beta_1'], g)
    v = ema(sl['v'], s['beta_2'], np.square(g))
    g_prime = g / (one - s['m_schedule_new'])
    m_prime = m / (one - s['m_schedule_next'])
    v_prime = v / (one - s['beta_2_power'])
    m_bar = (one - s['momentum_cache_t']) * g_prime + s['momentum_cache_t_1'] * m_prime
    return p - s['lr'] * m_bar / (sqrt(v_prime) + s['epsilon']), dict(m=m, v=v)


def nadam_formula(p, sl, s, g):  # optimizers.Nadam._apply and _step
    m, v = sl['m'], sl['v']
    m_t = s['beta_1'] * m + (1. - s['beta_1']) * g
    v_t = s['beta_2'] * v + (1. - s['beta_2']) * K.square(g)
    g_prime = g / (1. - s['m_schedule_new'])
    m_t_prime = m_t / (1. - s['m_schedule_next'])
    v_t_prime = v_t / (1. - s['beta_2_power'])
    m_t_bar = (1. - s['momentum_cache_t']) * g_prime + s['momentum_cache_t_1'] * m_t_prime
    step = s['lr'] * m_t_bar / (K.sqrt(v_t_prime) + 1e-7)
    return [(m, m_t), (v, v_t), (p, kops.minus(step))]


def adam_formula_moments(sl, s, g, v_name='v'):
    m, v = sl['m'], sl[v_name]
    m_t = s['beta_1'] * m + (1. - s['beta_1']) * g
    v_t = s['beta_2'] * v + (1. - s['beta_2']) * K.square(g)
    return m, v, m_t, v_t


def amsgrad_numpy(p, sl, s, g):
    m = ema(sl['m'], s['beta_1'], g)
    v = ema(sl['v'], s['beta_2'], np.square(g))
    vhat = np.maximum(sl['vhat'], v)
    return p - s['lr_t'] * m / (sqrt(vhat) + s['epsilon']), dict(m=m, v=v, vhat=vhat)


def amsgrad_formula(p, sl, s, g):  # optimizers.Adam._apply, amsgrad
    m, v, m_t, v_t = adam_formula_moments(sl, s, g)
    updates = [(m, m_t), (v, v_t)]
    v_t = K.maximum(sl['vhat'], v_t)
    updates.append((sl['vhat'], v_t))
    return updates + [(p, kops.minus(s['lr_t'] * m_t / (K.sqrt(v_t) + 1e-7)))]


def rectified_scalars(t, **extra):
    rectified, r_t = rectification(0.999, t)
    values = adam_scalars(t, rectified=rectified, **extra)
    values.update(adaptive_rate=values['lr_t'] * r_t,
                  momentum_rate=values['lr'] / (1. - values['beta_1_power']))
    return values


def radam_numpy(p, sl, s, g):
    m = ema(sl['m'], s['beta_1'], g)
    v = ema(sl['v'], s['beta_2'], np.square(g))
    update = (s['adaptive_rate'] * m / (sqrt(v) + s['epsilon']) if s['rectified']
              else s['momentum_rate'] * m)
    return p - update, dict(m=m, v=v)


def radam_formula(p, sl, s, g):  # rules.RAdam._apply
    m, v, m_t, v_t = adam_formula_moments(sl, s, g)
    update = tf.cond(s['rectified'],
                     lambda: s['adaptive_rate'] * m_t / (K.sqrt(v_t) + 1e-7),
                     lambda: s['momentum_rate'] * m_t)
    return [(m, m_t), (v, v_t), (p, kops.minus(update))]


def bound_scalars(t, gamma=0.5, final_lr=0.1):
    # gamma 0.5 and a rate of 0.01: both bounds clip some elements of a N(0, 1) gradient
    return adam_scalars(t, lr=0.01, lower=final_lr * (1. - 1. / (gamma * t + 1.)),
                        upper=final_lr * (1. + 1. / (gamma * t)), epsilon=1e-7)


def bound_numpy(amsbound):
    def numpy(p, sl, s, g):
        m = ema(sl['m'], s['beta_1'], g)
        v = ema(sl['v'], s['beta_2'], np.square(g))
        slots = dict(m=m, v=v)
        if amsbound:
            v = slots['vhat'] = np.maximum(sl['vhat'], v)
        size = np.maximum(np.minimum(s['lr_t'] / (sqrt(v) + s['epsilon']), s['upper']),
                          s['lower'])
        return p - size * m, slots
    return numpy


def bound_formula(amsbound):
    def formula(p, sl, s, g):  # rules.AdaBound._apply
        m, v, m_t, v_t = adam_formula_moments(sl, s, g)
        updates = [(m, m_t), (v, v_t)]
        if amsbound:
            v_t = K.maximum(sl['vhat'], v_t)
            updates.append((sl['vhat'], v_t))
        size = tf.clip_by_value(s['lr_t'] / (K.sqrt(v_t) + 1e-7), s['lower'], s['upper'])
        return updates + [(p, kops.minus(size * m_t))]
    return formula


def yogi_numpy(with_m):
    def numpy(p, sl, s, g):
        one = np.ones((), p.dtype)
        g2 = np.square(g)
        v = sl['v'] - (one - s['beta_2']) * np.sign(sl['v'] - g2) * g2
        slots = dict(v=v)
        m = g
        if with_m:
            m = slots['m'] = ema(sl['m'], s['beta_1'], g)
        return p - s['lr_t'] * m / (sqrt(v) + s['epsilon']), slots
    return numpy


def yogi_formula(with_m):
    def formula(p, sl, s, g):  # rules.Yogi._apply
        v = sl['v']
        g2 = K.square(g)
        v_t = v - (1. - s['beta_2']) * K.sign(v - g2) * g2
        updates = [(v, v_t)]
        m_t = g
        if with_m:
            m_t = s['beta_1'] * sl['m'] + (1. - s['beta_1']) * g
            updates.insert(0, (sl['m'], m_t))
        return updates + [(p, kops.minus(s['lr_t'] * m_t / (K.sqrt(v_t) + 1e-3)))]
    return formula


def belief_scalars(t, rectify):
    values = rectified_scalars(t, epsilon=1e-16) if rectify else \
        adam_scalars(t, epsilon=1e-16)
    values['momentum_rate'] = values['lr'] / (1. - values['beta_1_power'])
    values['bias_correction_2'] = np.sqrt(1. - values['beta_2_power'])
    return values


def belief_numpy(rectify):
    def numpy(p, sl, s, g):
        m = ema(sl['m'], s['beta_1'], g)
        belief = ema(sl['s'], s['beta_2'], np.square(g - m)) + s['epsilon']
        if not rectify:
            denominator = sqrt(belief) / s['bias_correction_2'] + s['epsilon']
            update = s['momentum_rate'] * m / denominator
        elif s['rectified']:
            update = s['adaptive_rate'] * m / (sqrt(belief) + s['epsilon'])
        else:
            update = s['momentum_rate'] * m
        return p - update, dict(m=m, s=belief)
    return numpy


def belief_formula(rectify):
    def formula(p, sl, s, g):  # rules.AdaBelief._apply
        m, belief = sl['m'], sl['s']
        m_t = s['beta_1'] * m + (1. - s['beta_1']) * g
        s_t = s['beta_2'] * belief + (1. - s['beta_2']) * K.square(g - m_t) + 1e-16
        if not rectify:
            denominator = K.sqrt(s_t) / s['bias_correction_2'] + 1e-16
            return [(m, m_t), (belief, s_t),
                    (p, kops.minus(s['momentum_rate'] * m_t / denominator))]
        update = tf.cond(s['rectified'],
                         lambda: s['adaptive_rate'] * m_t / (K.sqrt(s_t) + 1e-16),
                         lambda: s['momentum_rate'] * m_t)
        return [(m, m_t), (belief, s_t), (p, kops.minus(update))]
    return formula


LION = dict(lr=1e-4, beta_1=0.9, beta_2=0.99)


def lion_case(weight_decay):
    def scalars(t):
        return dict(LION, one_minus_beta_1=1. - LION['beta_1'],
                    one_minus_beta_2=1. - LION['beta_2'], weight_decay=weight_decay)

    def numpy(p, sl, s, g):
        direction = np.sign(ema(sl['m'], s['beta_1'], g, s['one_minus_beta_1']))
        if weight_decay > 0:
            direction = direction + s['weight_decay'] * p
        return (p - s['lr'] * direction,
                dict(m=ema(sl['m'], s['beta_2'], g, s['one_minus_beta_2'])))

    def formula(p, sl, s, g):  # rules.Lion._apply: Python floats for its hyperparameters
        m = sl['m']
        direction = K.sign(LION['beta_1'] * m + (1. - LION['beta_1']) * g)
        if weight_decay > 0:
            direction = direction + weight_decay * p
        return [(m, LION['beta_2'] * m + (1. - LION['beta_2']) * g),
                (p, kops.minus(s['lr'] * direction))]
    return Case([('m', 0.)], scalars,
                lambda k, p, sl, s, g: k.lion(p, sl['m'], s['lr'], s['beta_1'],
                                              s['one_minus_beta_1'], s['beta_2'],
                                              s['one_minus_beta_2'], s['weight_decay'], g),
                numpy, formula, True)


def lamb_case(weight_decay):
    def call(k, p, sl, s, g):
        w_norm, r_norm, r = k.lamb_moments(p, sl['m'], sl['v'], s['beta_1_power'],
                                           s['beta_2_power'], s['beta_1'], s['beta_2'], 1e-6,
                                           weight_decay, g)
        ratio = tf.where(tf.logical_and(w_norm > 0., r_norm > 0.), w_norm / r_norm,
                         tf.ones_like(w_norm))
        return k.lamb_update(p, s['lr'], ratio, r)

    def numpy(p, sl, s, g):
        one = np.ones((), p.dtype)
        m = ema(sl['m'], s['beta_1'], g)
        v = ema(sl['v'], s['beta_2'], np.square(g))
        r = (m / (one - s['beta_1_power'])) / (sqrt(v / (one - s['beta_2_power'])) +
                                               p.dtype.type(1e-6))
        if weight_decay > 0:
            r = r + p.dtype.type(weight_decay) * p
        w_norm = np.sqrt(np.sum(np.square(p.astype(np.float64))))
        r_norm = np.sqrt(np.sum(np.square(r.astype(np.float64))))
        ratio = p.dtype.type(w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.)
        return p - s['lr'] * ratio * r, dict(m=m, v=v)

    def formula(p, sl, s, g):  # rules.LAMB._apply, nothing excluded
        m, v, m_t, v_t = adam_formula_moments(sl, s, g)
        r = (m_t / (1. - s['beta_1_power'])) / (K.sqrt(v_t / (1. - s['beta_2_power'])) + 1e-6)
        if weight_decay > 0:
            r += weight_decay * p
        w_norm, r_norm = K.sqrt(K.sum(K.square(p))), K.sqrt(K.sum(K.square(r)))
        ratio = tf.where(tf.logical_and(w_norm > 0., r_norm > 0.), w_norm / r_norm,
                         tf.ones_like(w_norm))
        return [(m, m_t), (v, v_t), (p, kops.minus(s['lr'] * ratio * r))]
    return Case([('m', 0.), ('v', 0.)], adam_scalars, call, numpy, formula, False)


LARS = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, eeta=1e-3, epsilon=0.)


def lars_case(nesterov):
    def trust(w_norm, g_norm, where=np.where):
        return where(w_norm > 0., where(g_norm > 0., LARS['eeta'] * w_norm / (
            g_norm + LARS['weight_decay'] * w_norm + LARS['epsilon']), 1.), 1.)

    def call(k, p, sl, s, g):
        w_norm, g_norm = k.norms(p, g)
        rate = s['lr'] * tf.cast(trust(w_norm, g_norm, tf.where), p.dtype.base_dtype)
        return k.lars_momentum(p, sl['momentum'], rate, g, LARS['momentum'],
                               LARS['weight_decay'], use_nesterov=nesterov)

    def numpy(p, sl, s, g):
        wd, mu = p.dtype.type(LARS['weight_decay']), p.dtype.type(LARS['momentum'])
        w_norm = np.sqrt(np.sum(np.square(p.astype(np.float64))))
        g_norm = np.sqrt(np.sum(np.square(g.astype(np.float64))))
        rate = s['lr'] * p.dtype.type(trust(w_norm, g_norm))
        scaled = (g + wd * p) * rate
        mom = sl['momentum'] * mu + scaled
        return p - (scaled + mom * mu if nesterov else mom), dict(momentum=mom)

    def formula(p, sl, s, g):  # rules.LARS._apply
        w_norm, g_norm = K.sqrt(K.sum(K.square(p))), K.sqrt(K.sum(K.square(g)))
        rate = s['lr'] * trust(w_norm, g_norm, tf.where)
        g = g + LARS['weight_decay'] * p
        mom = sl['momentum']
        scaled = g * rate
        mom_t = mom * LARS['momentum'] + scaled
        update = scaled + mom_t * LARS['momentum'] if nesterov else mom_t
        return [(mom, mom_t), (p, kops.minus(update))]
    return Case([('momentum', 0.)], lambda t: dict(lr=LARS['lr']), call, numpy, formula, False)


def ema_case():
    def scalars(t):  # ExponentialMovingAverage(dynamic_decay=True)'s decay
        return dict(decay=min(0.999, (1. + t) / (10. + t)))

    def formula(p, sl, s, g):  # the average of g (any tensor), as ops.average_in_place
        return [(p, s['decay'] * p + (1. - s['decay']) * g)]
    return Case([], scalars, lambda k, p, sl, s, g: k.ema(p, s['decay'], g),
                lambda p, sl, s, g: (ema(p, s['decay'], g), {}), formula, True)


def decay_case():
    return Case([], lambda t: dict(coefficient=1e-3 * t),
                lambda k, p, sl, s, g: k.decay(p, s['coefficient']),
                lambda p, sl, s, g: (p - s['coefficient'] * p, {}),
                lambda p, sl, s, g: [(p, kops.minus(s['coefficient'] * p))], True)


def adam_w_case():
    def scalars(t):
        return adam_scalars(t, epsilon=1e-7, coefficient=1e-3 * 0.01 * t)

    def call(k, p, sl, s, g):
        return k.adam_w(p, sl['m'], sl['v'], s['beta_1_power'], s['beta_2_power'], s['lr'],
                        s['beta_1'], s['beta_2'], s['epsilon'], g, s['coefficient'])

    def numpy(p, sl, s, g):  # ApplyAdam's arithmetic after the decay
        one = np.ones((), p.dtype)
        p = p - p * s['coefficient']
        m = sl['m'] + (g - sl['m']) * (one - s['beta_1'])
        v = sl['v'] + (np.square(g) - sl['v']) * (one - s['beta_2'])
        alpha = s['lr'] * np.sqrt(one - s['beta_2_power']) / (one - s['beta_1_power'])
        return p - (m * alpha) / (sqrt(v) + s['epsilon']), dict(m=m, v=v)

    def formula(p, sl, s, g):  # WeightDecay(Adam)'s fused path: decay in place, then ApplyAdam
        from tensorflow.python.training import training_ops
        args = (s['beta_1_power'], s['beta_2_power'], s['lr'], s['beta_1'], s['beta_2'],
                s['epsilon'], g)
        if kernels._is_resource(p):
            with tf.control_dependencies([training_ops.resource_apply_gradient_descent(
                    p.handle, s['coefficient'], p)]):
                return [training_ops.resource_apply_adam(p.handle, sl['m'].handle,
                                                         sl['v'].handle, *args)]
        with tf.control_dependencies([training_ops.apply_gradient_descent(
                p, s['coefficient'], p)]):
            return [training_ops.apply_adam(p, sl['m'], sl['v'], *args)]
    return Case([('m', 0.), ('v', 0.)], scalars, call, numpy, formula, True)


def adafactor_case(factored, clipping_threshold, parameter_scale, beta_1):
    """Adafactor's passes (rules.Adafactor._passes: the ops and the small graph between them)
    against its `_apply` and a NumPy step from the formula. `p` is 2-D: factored or not."""
    options = dict(beta_1=beta_1, clipping_threshold=clipping_threshold, factored=factored,
                   multiply_by_parameter_scale=parameter_scale)
    rows, columns = (lambda shape: shape[:-1]), (lambda shape: shape[:-2] + shape[-1:])
    slots = [('vr', 0., rows), ('vc', 0., columns)] if factored else [('v', 0.)]
    slots += [('m', 0.)] if beta_1 else []

    def scalars(t):
        return dict(lr=0.01, decay=1. - t ** -0.8)

    def rule_and_step(s):
        from keras_opt_legacy.base import Step
        from keras_opt_legacy.rules import Adafactor
        return Adafactor(lr=0.01, **options), Step(lr=s['lr'], decay=s['decay'])

    def call(k, p, sl, s, g):
        rule, step = rule_and_step(s)
        return rule._passes(k, p, g, dict(sl), step)

    def formula(p, sl, s, g):
        rule, step = rule_and_step(s)
        return rule._apply(p, g, dict(sl), step)

    def numpy(p, sl, s, g):
        one, d = np.ones((), p.dtype), s['decay']
        rms = lambda x: np.sqrt(np.mean(np.square(x)))
        g2 = np.square(g) + p.dtype.type(1e-30)
        if factored:
            vr = d * sl['vr'] + (one - d) * g2.mean(-1)
            vc = d * sl['vc'] + (one - d) * g2.mean(-2)
            x = g * (one / np.sqrt(vr / vr.mean(-1, keepdims=True)))[..., None] * \
                (one / np.sqrt(vc))[..., None, :]
            new = dict(vr=vr, vc=vc)
        else:
            v = d * sl['v'] + (one - d) * g2
            x, new = g / np.sqrt(v), dict(v=v)
        if clipping_threshold is not None:
            x = x / max(one, rms(x) / p.dtype.type(clipping_threshold))
        update = s['lr'] * (max(rms(p), p.dtype.type(1e-3)) if parameter_scale else one) * x
        if beta_1:
            update = new['m'] = \
                p.dtype.type(beta_1) * sl['m'] + p.dtype.type(1. - beta_1) * update
        return p - update, new
    return Case(slots, scalars, call, numpy, formula, False)


CASES = {
    'keras_momentum': momentum_case(False),
    'keras_momentum-nesterov': momentum_case(True),
    'keras_rms_prop': Case(
        [('ms', 0.)], lambda t: dict(lr=0.01, rho=0.9, epsilon=1e-7),
        lambda k, p, sl, s, g: k.keras_rms_prop(p, sl['ms'], s['lr'], s['rho'], s['epsilon'],
                                                g),
        rmsprop_numpy, rmsprop_formula, True),
    'nadam': Case(
        [('m', 0.), ('v', 0.)], nadam_scalars,
        lambda k, p, sl, s, g: k.nadam(
            p, sl['m'], sl['v'], s['momentum_cache_t'], s['momentum_cache_t_1'],
            s['m_schedule_new'], s['m_schedule_next'], s['beta_2_power'], s['lr'],
            s['beta_1'], s['beta_2'], s['epsilon'], g),
        nadam_numpy, nadam_formula, True),
    'adam_amsgrad': Case(
        [('m', 0.), ('v', 0.), ('vhat', 0.)], lambda t: adam_scalars(t, epsilon=1e-7),
        lambda k, p, sl, s, g: k.adam_amsgrad(p, sl['m'], sl['v'], sl['vhat'], s['lr_t'],
                                              s['beta_1'], s['beta_2'], s['epsilon'], g),
        amsgrad_numpy, amsgrad_formula, True),
    'radam': Case(
        [('m', 0.), ('v', 0.)], lambda t: rectified_scalars(t, epsilon=1e-7),
        lambda k, p, sl, s, g: k.radam(p, sl['m'], sl['v'], s['adaptive_rate'],
                                       s['momentum_rate'], s['rectified'], s['beta_1'],
                                       s['beta_2'], s['epsilon'], g),
        radam_numpy, radam_formula, True),
    'ada_bound': Case(
        [('m', 0.), ('v', 0.)], bound_scalars,
        lambda k, p, sl, s, g: k.ada_bound(p, sl['m'], sl['v'], s['lr_t'], s['lower'],
                                           s['upper'], s['beta_1'], s['beta_2'], s['epsilon'],
                                           g),
        bound_numpy(False), bound_formula(False), True),
    'ams_bound': Case(
        [('m', 0.), ('v', 0.), ('vhat', 0.)], bound_scalars,
        lambda k, p, sl, s, g: k.ams_bound(p, sl['m'], sl['v'], sl['vhat'], s['lr_t'],
                                           s['lower'], s['upper'], s['beta_1'], s['beta_2'],
                                           s['epsilon'], g),
        bound_numpy(True), bound_formula(True), True),
    'yogi': Case(
        [('m', 0.), ('v', 1e-6)], lambda t: adam_scalars(t, lr=0.01, epsilon=1e-3),
        lambda k, p, sl, s, g: k.yogi(p, sl['m'], sl['v'], s['lr_t'], s['beta_1'], s['beta_2'],
                                      s['epsilon'], g),
        yogi_numpy(True), yogi_formula(True), True),
    'yogi_no_momentum': Case(
        [('v', 1e-6)], lambda t: adam_scalars(t, lr=0.01, epsilon=1e-3),
        lambda k, p, sl, s, g: k.yogi_no_momentum(p, sl['v'], s['lr_t'], s['beta_2'],
                                                  s['epsilon'], g),
        yogi_numpy(False), yogi_formula(False), True),
    'ada_belief': Case(
        [('m', 0.), ('s', 0.)], lambda t: belief_scalars(t, False),
        lambda k, p, sl, s, g: k.ada_belief(p, sl['m'], sl['s'], s['momentum_rate'],
                                            s['bias_correction_2'], s['beta_1'], s['beta_2'],
                                            s['epsilon'], g),
        belief_numpy(False), belief_formula(False), True),
    'ada_belief_rectified': Case(
        [('m', 0.), ('s', 0.)], lambda t: belief_scalars(t, True),
        lambda k, p, sl, s, g: k.ada_belief_rectified(
            p, sl['m'], sl['s'], s['adaptive_rate'], s['momentum_rate'], s['rectified'],
            s['beta_1'], s['beta_2'], s['epsilon'], g),
        belief_numpy(True), belief_formula(True), True),
    'lion': lion_case(0.),
    'lion-decay': lion_case(0.1),
    'lamb': lamb_case(0.),
    'lamb-decay': lamb_case(0.01),
    'lars': lars_case(False),
    'lars-nesterov': lars_case(True),
    'ema': ema_case(),
    'decay': decay_case(),
    'adam_w': adam_w_case(),
    'adafactor_factored': adafactor_case(True, 1., True, 0.),
    'adafactor_factored-momentum': adafactor_case(True, None, False, 0.9),
    'adafactor': adafactor_case(False, 1., True, 0.),
    'adafactor-momentum': adafactor_case(False, 2., False, 0.5),
}


# ---- running a case --------------------------------------------------------------------------

def gradients(dtype, shape=SHAPE, steps=STEPS, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randn(*shape).astype(dtype),
            [rng.randn(*shape).astype(dtype) for _ in range(steps)])


def feed_values(case, t, dtype):
    return {name: (value if isinstance(value, bool) else np.asarray(value, dtype))
            for name, value in case.scalars(t).items()}


def run_graph(case, path, resource, dtype, shape=SHAPE, steps=STEPS, config=None):
    """The trajectory [(p, slot values...) after each step] of `case` along `path` ('op' or
    'formula') on ref or resource variables of `dtype`."""
    p0, grads = gradients(dtype, shape, steps)
    graph = tf.Graph()
    with graph.as_default():
        p = tf.Variable(p0, use_resource=resource, name='p')
        slots = collections.OrderedDict(
            (name, tf.Variable(value, use_resource=resource, name=name))
            for name, value in slot_arrays(case, shape, dtype).items())
        g = tf.placeholder(dtype, shape, name='g')
        s = {name: tf.placeholder(tf.bool if isinstance(value, bool) else dtype, (), name=name)
             for name, value in case.scalars(1).items()}
        if path == 'op':
            update = case.call(kernels.ops(), p, slots, s, g)
            assert update is not None, kernels.why_not()
        else:
            formula = case.formula(p, slots, s, g)
            update = kops.assign_all(formula) if isinstance(formula[0], tuple) else formula
        with tf.Session(graph=graph, config=config) as session:
            session.run(tf.global_variables_initializer())
            trajectory = []
            for t in range(1, steps + 1):
                feed = {g: grads[t - 1]}
                feed.update((s[name], value) for name, value in feed_values(case, t, dtype).items())
                session.run(update, feed)
                trajectory.append(session.run([p] + list(slots.values())))
    return trajectory


def run_numpy(case, dtype, shape=SHAPE, steps=STEPS):
    p, grads = gradients(dtype, shape, steps)
    slots = slot_arrays(case, shape, dtype)
    trajectory = []
    for t in range(1, steps + 1):
        p, new = case.numpy(p, slots, feed_values(case, t, dtype), grads[t - 1])
        slots.update(new)
        trajectory.append([p] + list(slots.values()))
    return trajectory


def assert_trajectories(actual, expected, bitwise, dtype, what):
    for t, (a_step, e_step) in enumerate(zip(actual, expected), 1):
        for i, (a, e) in enumerate(zip(a_step, e_step)):
            message = '%s, step %d, %s' % (what, t, 'p' if i == 0 else 'slot %d' % i)
            assert a.dtype == e.dtype, message
            if bitwise:
                np.testing.assert_array_equal(a, e, err_msg=message)
            else:
                np.testing.assert_allclose(a, e, err_msg=message, **TOLERANCE[dtype])


# ---- the tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', [np.float32, np.float64], ids=['float32', 'float64'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_op_against_numpy_formula_graph_and_other_variable_kind(name, dtype):
    library_or_skip()
    case = CASES[name]
    ref = run_graph(case, 'op', False, dtype)
    resource = run_graph(case, 'op', True, dtype)
    assert_trajectories(resource, ref, True, dtype, 'resource vs ref variables')
    assert_trajectories(ref, run_numpy(case, dtype), False, dtype, 'op vs NumPy')
    formula = run_graph(case, 'formula', False, dtype)
    assert_trajectories(ref, formula, case.bitwise, dtype, 'op vs formula graph')
    # the trajectory moved (the comparisons are not of constant arrays)
    assert not np.array_equal(ref[-1][0], gradients(dtype)[0])


@pytest.mark.parametrize('name', ['keras_momentum-nesterov', 'keras_rms_prop', 'adam_w'])
def test_float16_equals_the_formula_graph(name):
    """float16 (TF's training kernels have it): bitwise the formula graph in float16."""
    library_or_skip()
    case = CASES[name]
    op = run_graph(case, 'op', False, np.float16, steps=3)
    assert_trajectories(op, run_graph(case, 'formula', False, np.float16, steps=3), True,
                        np.float16, 'op vs formula graph')
    assert_trajectories(run_graph(case, 'op', True, np.float16, steps=3), op, True, np.float16,
                        'resource vs ref')


@pytest.mark.parametrize('shape', [(1,), (7,), (8,), (1023,), (2048, 3), (4100, 129)])
def test_sizes_chunks_and_scalar_tails(shape):
    """Fewer elements than a packet, exact packets, one chunk, several, many (thread pool):
    bitwise the formula graph, whose own packets and scalar tail are those of the op."""
    library_or_skip()
    for name in ('keras_rms_prop', 'adam_w', 'radam'):
        case = CASES[name]
        assert_trajectories(run_graph(case, 'op', False, np.float32, shape, steps=6),
                            run_graph(case, 'formula', False, np.float32, shape, steps=6),
                            True, np.float32, '%s %s' % (name, shape))


@pytest.mark.parametrize('shape', [(2048, 1), (1, 300), (3, 3, 16, 32), (3, 70000), (5000, 20)])
def test_adafactor_factored_shapes_and_blocks(shape):
    """A factored parameter of one column, one row, a convolution kernel (moments per slice of
    the last two dimensions), rows longer than a block, many blocks: the NumPy step."""
    library_or_skip()
    for name in ('adafactor_factored', 'adafactor_factored-momentum'):
        case = CASES[name]
        assert_trajectories(run_graph(case, 'op', False, np.float32, shape, steps=3),
                            run_numpy(case, np.float32, shape, steps=3), False, np.float32,
                            '%s %s' % (name, shape))


def test_adafactor_shapes_are_checked():
    """Moments of the wrong shape for the parameter: a clear error, nothing written."""
    library_or_skip()
    k = kernels.ops()
    with tf.Graph().as_default(), tf.Session() as session:
        p = tf.Variable(np.ones((4, 5), 'float32'), use_resource=True)
        vr = tf.Variable(np.ones(5, 'float32'), use_resource=True)  # should be (4,)
        vc = tf.Variable(np.ones(5, 'float32'), use_resource=True)
        session.run(tf.global_variables_initializer())
        with pytest.raises(tf.errors.InvalidArgumentError, match=r'vr is \[5\], not \[4\]'):
            session.run(k.adafactor_factored_moments(p, vr, vc, 0.5, tf.ones((4, 5))))
        np.testing.assert_array_equal(session.run(vc), np.ones(5, 'float32'))
        with pytest.raises(tf.errors.InvalidArgumentError, match='2 dimensions or more'):
            session.run(k.adafactor_factored_rms(tf.ones(4), tf.ones(4), tf.ones(4)))


def test_norms_against_numpy():
    library_or_skip()
    rng = np.random.RandomState(1)
    with tf.Graph().as_default(), tf.Session() as session:
        for nx, ny in [(0, 5), (3, 3), (100000, 37), (5000, 5000)]:
            x, y = rng.randn(nx).astype('float32'), rng.randn(ny).astype('float32')
            norms = session.run(kernels.ops().norms(tf.constant(x), tf.constant(y)))
            np.testing.assert_allclose(norms, [np.linalg.norm(x.astype('f8')),
                                               np.linalg.norm(y.astype('f8'))], rtol=1e-6)


DETERMINISM_SCRIPT = textwrap.dedent('''
    import hashlib, sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, %r)
    import test_kernels as tk
    digest = hashlib.sha256()
    for name in ('lamb-decay', 'lars', 'nadam', 'adam_w', 'adafactor_factored', 'adafactor'):
        for step in tk.run_graph(tk.CASES[name], 'op', %s, np.float32, (1000, 300), steps=3):
            for array in step:
                digest.update(array.tobytes())
    print(digest.hexdigest())
''')


def test_deterministic_across_processes():
    """Two processes (2 threads each, shards and sums over the thread pool) give the same bits:
    the norms' sums go chunk by chunk in a fixed order."""
    library_or_skip()
    outputs = []
    for resource in (False, False):
        result = subprocess.run([sys.executable, '-c', DETERMINISM_SCRIPT % (HERE, resource)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(result.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]


def test_one_thread_equals_the_thread_pool():
    library_or_skip()
    one = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    for name in ('lamb', 'nadam', 'adam_w', 'adafactor_factored', 'adafactor'):
        case = CASES[name]
        assert_trajectories(run_graph(case, 'op', False, np.float32, (1000, 300), 2, one),
                            run_graph(case, 'op', False, np.float32, (1000, 300), 2), True,
                            np.float32, name)


def test_resource_variable_copy_on_write():
    """A read of a resource variable that is still alive when the op runs keeps the value it
    read (TF's copy-on-write): the op writes into a copy."""
    library_or_skip()
    with tf.Graph().as_default(), tf.Session() as session:
        p = tf.Variable(np.ones(100, 'float32'), use_resource=True)
        read = p.read_value()
        with tf.control_dependencies([read]):
            update = kernels.ops().decay(p, 0.5)
        session.run(p.initializer)
        before, _ = session.run([read, update])
        np.testing.assert_array_equal(before, np.ones(100, 'float32'))
        np.testing.assert_array_equal(session.run(p), np.full(100, 0.5, 'float32'))


def test_lamb_scratch_is_not_reused_while_held():
    """LAMB's pass 1 reuses its `update` buffer step after step, but not while something holds
    the last one (here: the fetched array, which may share TF's buffer)."""
    library_or_skip()
    rng = np.random.RandomState(2)
    k = kernels.ops()
    with tf.Graph().as_default(), tf.Session() as session:
        p = tf.Variable(rng.randn(3000).astype('float32'))
        m, v = (tf.Variable(np.zeros(3000, 'float32')) for _ in range(2))
        g = tf.Variable(rng.randn(3000).astype('float32'))
        w_norm, r_norm, r = k.lamb_moments(p, m, v, 0.9, 0.999, 0.9, 0.999, 1e-6, 0., g)
        step = k.lamb_update(p, 0.01, w_norm / r_norm, r)
        session.run(tf.global_variables_initializer())
        first, _ = session.run([r, step])
        kept = first.copy()
        second, _ = session.run([r, step])
        np.testing.assert_array_equal(first, kept)
        assert not np.array_equal(first, second)
        for _ in range(3):  # nothing holds the buffer now: reused, and still right
            session.run(step)


def test_use_locking_and_errors():
    library_or_skip()
    k = kernels.ops()
    with tf.Graph().as_default(), tf.Session() as session:
        p = tf.Variable(np.ones(10, 'float32'))
        m = tf.Variable(np.zeros(10, 'float32'))
        locked = k.keras_momentum(p, m, 0.1, tf.ones(10), 0.9, use_locking=True)
        session.run(tf.global_variables_initializer())
        np.testing.assert_allclose(session.run(locked), np.full(10, 0.9), rtol=1e-6)
        with pytest.raises(ValueError):  # shapes checked when the graph is built
            k.keras_momentum(p, m, 0.1, tf.ones(11), 0.9)
        with pytest.raises(ValueError):
            k.keras_momentum(p, m, tf.ones(2), tf.ones(10), 0.9)
        fresh = tf.Variable(np.ones(10, 'float32'), use_resource=True)
        slot = tf.Variable(np.ones(10, 'float32'), use_resource=True)
        with pytest.raises(tf.errors.FailedPreconditionError):
            session.run(k.decay(fresh, 0.5))
        session.run(fresh.initializer)
        with pytest.raises(tf.errors.InvalidArgumentError):  # shapes unknown to the graph
            session.run(k.ema(fresh, 0.5, tf.placeholder_with_default(np.ones(3, 'float32'),
                                                                      [None])))
        del slot


def test_fallback_cases_return_none():
    """Where the library cannot be used, the op is None: mixed ref and resource variables,
    a variable placed on a GPU, an integer variable."""
    library_or_skip()
    k = kernels.ops()
    with tf.Graph().as_default():
        ref = tf.Variable(np.ones(4, 'float32'))
        resource = tf.Variable(np.zeros(4, 'float32'), use_resource=True)
        assert k.keras_momentum(ref, resource, 0.1, tf.ones(4), 0.9) is None
        with tf.device('/device:GPU:0'):
            on_gpu = tf.Variable(np.ones(4, 'float32'))
            gpu_slot = tf.Variable(np.ones(4, 'float32'))
        assert k.keras_momentum(on_gpu, gpu_slot, 0.1, tf.ones(4), 0.9) is None
        integer = tf.Variable(np.ones(4, 'int32'))
        assert k.decay(integer, 1) is None
        assert k.keras_momentum(ref, tf.Variable(np.ones(4, 'float32')), 0.1, tf.ones(4),
                                0.9) is not None


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv(kernels.ENV, '0')
    assert kernels.library() is None
    assert 'KERAS_OPT_LEGACY_KERNELS=0' in kernels.why_not()
    with tf.Graph().as_default():
        p = tf.Variable(np.ones(4, 'float32'))
        m = tf.Variable(np.ones(4, 'float32'))
        assert kernels.ops().keras_momentum(p, m, 0.1, tf.ones(4), 0.9) is None
        assert kernels.ops().norms(tf.ones(3), tf.ones(3)) is None
        assert kernels.ops().decay(p, 0.1) is None


@pytest.fixture
def forgetful():
    """`kernels` as in a fresh process: not yet loaded; restored afterwards."""
    kernels._reset()
    yield
    kernels._reset()


def test_missing_library_without_a_compiler(tmp_path, monkeypatch, forgetful, caplog):
    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setenv('KERAS_OPT_LEGACY_KERNELS_CACHE', str(tmp_path))
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
    with caplog.at_level('INFO', logger='keras_opt_legacy.kernels'):
        assert kernels.library() is None
        assert kernels.library() is None
    assert 'no C++ compiler' in kernels.why_not()
    lines = [r for r in caplog.records if r.name == 'keras_opt_legacy.kernels']
    assert len(lines) == 1 and kernels.WITHOUT in lines[0].getMessage()  # one line, once
    with tf.Graph().as_default():
        p = tf.Variable(np.ones(4, 'float32'))
        assert kernels.ops().decay(p, 0.1) is None


def test_library_failing_to_load(tmp_path, monkeypatch, forgetful):
    from keras_opt_legacy.kernels import build
    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setenv('KERAS_OPT_LEGACY_KERNELS_CACHE', str(tmp_path))
    path = build.library_path()
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
        f.write('not a shared library')
    assert kernels.library() is None
    assert 'failed to load' in kernels.why_not()
    with tf.Graph().as_default():
        p = tf.Variable(np.ones(4, 'float32'))
        assert kernels.ops().decay(p, 0.1) is None


def test_the_cache_key_is_per_tensorflow_python_and_sources():
    from keras_opt_legacy.kernels import build
    key = build.key()
    assert key.startswith('tf%s-cp%d%d-' % ((tf.__version__,) + sys.version_info[:2]))
    assert build.library_path().startswith(build.cache_dir())
    assert set(build.sources()) >= {'kol_kernels.h', 'registry.cc'}
