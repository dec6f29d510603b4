"""Independent NumPy reference implementations of optimizer update rules.

Written from the published formulas (Keras 2.2.4 for SGD..Nadam, the
TensorFlow 1.15 FtrlV2 kernel for Ftrl, Loshchilov & Hutter's decoupled weight
decay for `Decoupled` and AdamW/SGDW/NadamW), NOT from keras/tensorflow code, so
tests can compare the optimizer package against them.  NumPy only.

All arithmetic is float64; results are written back into the caller's
arrays in place (which keeps their dtype).
"""
import re

import numpy as np

DEFAULT_EPSILON = 1e-7  # Keras 2.2.4's K.epsilon(), used when epsilon=None


class Reference(object):
    """Shared mechanics: clipping, lr schedule/decay, slots, constraint."""

    slot_names = ()

    def __init__(self, lr, decay=0., clipnorm=None, clipvalue=None,
                 constraint=None, **hyper):
        if callable(lr) and decay > 0:
            raise ValueError('use either a learning-rate schedule or decay, not both')
        if 'epsilon' in hyper and hyper['epsilon'] is None:
            hyper['epsilon'] = DEFAULT_EPSILON
        self.lr, self.decay = lr, decay
        self.clipnorm, self.clipvalue, self.constraint = clipnorm, clipvalue, constraint
        self.__dict__.update(hyper)
        self.iterations = 0
        self.slots = None  # name -> list of float64 arrays, created on first step

    # --- shared mechanics -------------------------------------------------
    def _clip(self, grads):
        if self.clipnorm is not None and self.clipnorm > 0:
            # one global norm over all gradients, scale only if it reaches clipnorm
            norm = np.sqrt(sum(np.sum(g * g) for g in grads))
            if norm >= self.clipnorm:
                grads = [g * self.clipnorm / norm for g in grads]
        if self.clipvalue is not None and self.clipvalue > 0:
            grads = [np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    def _current_lr(self):
        # schedules see the number of completed updates (0 on the first step)
        if callable(self.lr):
            return float(self.lr(self.iterations))
        if self.decay > 0:
            return self.lr * (1. / (1. + self.decay * self.iterations))
        return self.lr

    def _slot_initial_value(self, name):
        return 0.

    def step(self, params, grads):
        if len(params) != len(grads):
            raise ValueError('params and grads differ in length')
        grads = self._clip([np.asarray(g, dtype=np.float64) for g in grads])
        if self.slots is None:
            self.slots = {name: [np.full(np.shape(p), self._slot_initial_value(name),
                                         dtype=np.float64) for p in params]
                          for name in self.slot_names}
        lr, t = self._current_lr(), self.iterations + 1
        for i, (p, g) in enumerate(zip(params, grads)):
            s = {name: arrays[i] for name, arrays in self.slots.items()}
            new_p = self._update(np.asarray(p, dtype=np.float64), g, s, lr, t)
            if self.constraint is not None:
                new_p = self.constraint(new_p)
            p[...] = new_p  # in place; casts back to the param's dtype
        self.iterations += 1
        return params

    def _update(self, p, g, s, lr, t):
        """Return the new value of p; update the slot arrays in s in place."""
        raise NotImplementedError


# --- update rules ---------------------------------------------------------
class SGD(Reference):
    slot_names = ('moment',)

    def __init__(self, lr=0.01, momentum=0., decay=0., nesterov=False, **kwargs):
        super(SGD, self).__init__(lr, decay, momentum=momentum, nesterov=nesterov, **kwargs)

    def _update(self, p, g, s, lr, t):
        v = self.momentum * s['moment'] - lr * g
        s['moment'][...] = v
        if self.nesterov:
            return p + self.momentum * v - lr * g
        return p + v


class RMSprop(Reference):
    slot_names = ('accumulator',)

    def __init__(self, lr=0.001, rho=0.9, epsilon=None, decay=0., **kwargs):
        super(RMSprop, self).__init__(lr, decay, rho=rho, epsilon=epsilon, **kwargs)

    def _update(self, p, g, s, lr, t):
        a = s['accumulator']
        a[...] = self.rho * a + (1. - self.rho) * g * g
        return p - lr * g / (np.sqrt(a) + self.epsilon)


class Adagrad(Reference):
    slot_names = ('accumulator',)

    def __init__(self, lr=0.01, epsilon=None, decay=0., **kwargs):
        super(Adagrad, self).__init__(lr, decay, epsilon=epsilon, **kwargs)

    def _update(self, p, g, s, lr, t):
        a = s['accumulator']
        a += g * g
        return p - lr * g / (np.sqrt(a) + self.epsilon)


class Adadelta(Reference):
    slot_names = ('accumulator', 'delta_accumulator')

    def __init__(self, lr=1.0, rho=0.95, epsilon=None, decay=0., **kwargs):
        super(Adadelta, self).__init__(lr, decay, rho=rho, epsilon=epsilon, **kwargs)

    def _update(self, p, g, s, lr, t):
        a, d = s['accumulator'], s['delta_accumulator']
        a[...] = self.rho * a + (1. - self.rho) * g * g
        u = g * np.sqrt(d + self.epsilon) / np.sqrt(a + self.epsilon)  # new a, old d
        d[...] = self.rho * d + (1. - self.rho) * u * u
        return p - lr * u


class Adam(Reference):
    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.,
                 amsgrad=False, **kwargs):
        super(Adam, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2,
                                   epsilon=epsilon, amsgrad=amsgrad, **kwargs)
        self.slot_names = ('m', 'v', 'vhat') if amsgrad else ('m', 'v')

    def _update(self, p, g, s, lr, t):
        m, v = s['m'], s['v']
        m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        v[...] = self.beta_2 * v + (1. - self.beta_2) * g * g
        # bias correction folded into the step size
        lr_t = lr * np.sqrt(1. - self.beta_2 ** t) / (1. - self.beta_1 ** t)
        if self.amsgrad:
            s['vhat'][...] = np.maximum(s['vhat'], v)
            v = s['vhat']
        return p - lr_t * m / (np.sqrt(v) + self.epsilon)


class Adamax(Reference):
    slot_names = ('m', 'u')

    def __init__(self, lr=0.002, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0., **kwargs):
        super(Adamax, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2,
                                     epsilon=epsilon, **kwargs)

    def _update(self, p, g, s, lr, t):
        m, u = s['m'], s['u']
        m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        u[...] = np.maximum(self.beta_2 * u, np.abs(g))
        return p - lr / (1. - self.beta_1 ** t) * m / (u + self.epsilon)


class Nadam(Reference):
    slot_names = ('m', 'v')

    def __init__(self, lr=0.002, beta_1=0.9, beta_2=0.999, epsilon=None,
                 schedule_decay=0.004, decay=0., **kwargs):
        super(Nadam, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                                    schedule_decay=schedule_decay, **kwargs)
        self.m_schedule = 1.0  # running product of the momentum schedule

    def _mu(self, t):
        # momentum warm-up schedule (Dozat)
        return self.beta_1 * (1. - 0.5 * 0.96 ** (t * self.schedule_decay))

    def step(self, params, grads):
        t = self.iterations + 1
        super(Nadam, self).step(params, grads)
        # shared by all params of a step, so advanced only once they are all done
        self.m_schedule = self.m_schedule * self._mu(t)
        return params

    def _update(self, p, g, s, lr, t):
        mu_t, mu_next = self._mu(t), self._mu(t + 1)
        m_schedule_new = self.m_schedule * mu_t
        m_schedule_next = self.m_schedule * mu_t * mu_next
        m, v = s['m'], s['v']
        g_prime = g / (1. - m_schedule_new)
        m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        m_prime = m / (1. - m_schedule_next)
        v[...] = self.beta_2 * v + (1. - self.beta_2) * g * g
        v_prime = v / (1. - self.beta_2 ** t)
        m_bar = (1. - mu_t) * g_prime + mu_next * m_prime
        return p - lr * m_bar / (np.sqrt(v_prime) + self.epsilon)


class Ftrl(Reference):
    slot_names = ('accumulator', 'linear')

    def __init__(self, lr=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0., l2_regularization_strength=0.,
                 l2_shrinkage_regularization_strength=0., decay=0., **kwargs):
        super(Ftrl, self).__init__(
            lr, decay, learning_rate_power=learning_rate_power,
            initial_accumulator_value=initial_accumulator_value,
            l1_regularization_strength=l1_regularization_strength,
            l2_regularization_strength=l2_regularization_strength,
            l2_shrinkage_regularization_strength=l2_shrinkage_regularization_strength,
            **kwargs)

    def _slot_initial_value(self, name):
        return self.initial_accumulator_value if name == 'accumulator' else 0.

    def _update(self, p, g, s, lr, t):
        acc, linear = s['accumulator'], s['linear']
        power = -self.learning_rate_power
        l1 = self.l1_regularization_strength
        acc_new = acc + g * g  # raw gradient, without the shrinkage term
        g_shrunk = g + 2. * self.l2_shrinkage_regularization_strength * p
        linear += g_shrunk - (acc_new ** power - acc ** power) / lr * p
        quadratic = acc_new ** power / lr + 2. * self.l2_regularization_strength
        acc[...] = acc_new
        # closed-form minimiser; the l1 term zeroes small |linear| exactly
        return np.where(np.abs(linear) > l1, (np.sign(linear) * l1 - linear) / quadratic, 0.)


# --- decoupled weight decay -------------------------------------------------
def decay_mask(names, include=None, exclude=()):
    """Which of `names` are decayed: (include is None or some include pattern is found in the
    name by re.search) and no exclude pattern is. A pattern found in no name is a ValueError
    naming it."""
    include = None if include is None else list(include)
    exclude = list(exclude)
    for pattern in (include or []) + exclude:
        if not any(re.search(pattern, name) for name in names):
            raise ValueError('pattern %r matches no parameter of %s' % (pattern, list(names)))
    return [(include is None or any(re.search(pattern, name) for pattern in include)) and
            not any(re.search(pattern, name) for pattern in exclude) for name in names]


class Decoupled(object):
    """Decoupled weight decay over any reference `inner` (Loshchilov & Hutter):

        p_new = inner_step(p_old) - f * rate_t * p_old

    f is the inner reference's learning rate for this step (its schedule or legacy decay
    applied) when scale_by_lr, else 1; rate_t is rate(k) when rate is callable (k: the number
    of earlier steps, 0 on the first), else rate. The inner step includes the inner reference's
    own constraint, and the per-parameter `constraints` ({index: function}) apply to its result:
    the decay is subtracted after the constrained step.

    Which parameters are decayed: `decayed` (None: all; a sequence of booleans, one per
    parameter; or a predicate on the parameter's name when `names` are given, else on its
    index), and with `names` (the parameters' names, e.g. 'dense_1/bias:0') the `include` /
    `exclude` regular expressions as in `decay_mask`. Other attributes (slots, m_schedule, lr)
    are the inner reference's."""

    def __init__(self, inner, rate, scale_by_lr=True, decayed=None, names=None, include=None,
                 exclude=(), constraints=None):
        if not callable(rate) and rate < 0:
            raise ValueError('rate must be >= 0, got %r' % (rate,))
        if names is None and (include is not None or tuple(exclude)):
            raise ValueError('include/exclude patterns need the parameter names')
        self.inner, self.rate, self.scale_by_lr = inner, rate, scale_by_lr
        self.decayed, self.names = decayed, None if names is None else list(names)
        self.include, self.exclude = include, tuple(exclude)
        self.constraints = dict(constraints or {})
        self.iterations = 0

    def __getattr__(self, name):
        if name == 'inner':  # not set yet (during construction or unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def current_lr(self):
        lr = getattr(self.inner, 'current_lr', None)
        return float(lr() if lr is not None else self.inner._current_lr())

    def current_rate(self):
        return float(self.rate(self.iterations)) if callable(self.rate) else float(self.rate)

    def mask(self, count):
        """One boolean per parameter: whether it is decayed."""
        if self.names is not None and len(self.names) != count:
            raise ValueError('%d names for %d parameters' % (len(self.names), count))
        if self.decayed is None:
            chosen = [True] * count
        elif callable(self.decayed):
            keys = self.names if self.names is not None else range(count)
            chosen = [bool(self.decayed(key)) for key in keys]
        else:
            chosen = [bool(d) for d in self.decayed]
            if len(chosen) != count:
                raise ValueError('decayed has %d entries for %d parameters' % (len(chosen), count))
        if self.names is not None:
            chosen = [a and b for a, b in zip(chosen, decay_mask(self.names, self.include,
                                                                  self.exclude))]
        return chosen

    def step(self, params, grads):
        mask = self.mask(len(params))
        # everything read before the inner step changes it
        factor = (self.current_lr() if self.scale_by_lr else 1.) * self.current_rate()
        old = [np.array(p, dtype=np.float64) for p in params]
        self.inner.step(params, grads)
        for i, (p, p_old) in enumerate(zip(params, old)):
            new_p = np.asarray(p, dtype=np.float64)
            if self.constraints.get(i) is not None:
                new_p = self.constraints[i](new_p)
            if mask[i]:
                new_p = new_p - factor * p_old
            p[...] = new_p
        self.iterations += 1
        return params


class AdamW(Decoupled):
    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0., amsgrad=False,
                 weight_decay=0.01, exclude_from_weight_decay=(), scale_by_lr=True, names=None,
                 **kwargs):
        super(AdamW, self).__init__(
            Adam(lr, beta_1, beta_2, epsilon, decay, amsgrad, **kwargs), weight_decay,
            scale_by_lr, names=names, exclude=exclude_from_weight_decay)


class SGDW(Decoupled):
    def __init__(self, lr=0.01, momentum=0., decay=0., nesterov=False, weight_decay=0.01,
                 exclude_from_weight_decay=(), scale_by_lr=True, names=None, **kwargs):
        super(SGDW, self).__init__(
            SGD(lr, momentum, decay, nesterov, **kwargs), weight_decay, scale_by_lr,
            names=names, exclude=exclude_from_weight_decay)


class NadamW(Decoupled):
    def __init__(self, lr=0.002, beta_1=0.9, beta_2=0.999, epsilon=None, schedule_decay=0.004,
                 decay=0., weight_decay=0.01, exclude_from_weight_decay=(), scale_by_lr=True,
                 names=None, **kwargs):
        super(NadamW, self).__init__(
            Nadam(lr, beta_1, beta_2, epsilon, schedule_decay, decay, **kwargs), weight_decay,
            scale_by_lr, names=names, exclude=exclude_from_weight_decay)


# Every update rule above, by name (tests/catalog.py's entries point here): the rules, and the
# rules with decoupled weight decay; not their bases.
_BASES = (Reference, Decoupled)
REFERENCES = {name: value for name, value in list(globals().items())
              if isinstance(value, type) and issubclass(value, _BASES) and value not in _BASES}
