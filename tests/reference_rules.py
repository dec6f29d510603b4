"""Independent NumPy reference implementations of the newer update rules.

RAdam, LAMB, LARS, Adafactor, AdaBound/AMSBound, Yogi, AdaBelief and Lion, written from the
published formulas and the authors' / reference code listed per class (NOT from this package's
code), so tests can compare the optimizer package against them.  NumPy only, float64.

Mechanics are those of `reference.Reference`: clipping (global clipnorm, then clipvalue), the
learning rate through `_current_lr()` (a schedule sees the number of completed updates, 0 on the
first step; legacy `decay` is lr / (1 + decay * iterations)), slots created on the first step,
`_update(p, g, s, lr, t)` with t the 1-based step, then the constraint; results are written
back into the caller's arrays in place.

Parameter names (LAMB's exclusions, LARS's skip_list)
------------------------------------------------------
Every class here accepts them; only LAMB and LARS read them.  Give them either per step,

    ref.step(params, grads, names=['dense_1/kernel:0', 'dense_1/bias:0'])

or once, at construction (`names=[...]`, used by every step that gets no `names`).  They are
the Keras/TF variable names, ':0' suffix included.  `NamedReference.step` keeps the list and
hands the i-th name to the i-th `_update` call through `self._name_of_current()` (the base loop
visits the parameters in order, once each).  A rule that has name patterns configured
(LAMB exclude_* / LARS skip_list) but gets no names raises ValueError rather than silently
excluding nothing.

Decisions where the sources differ from a plain reading of the formulas
-----------------------------------------------------------------------
* RAdam (LiyuanLucasLiu/RAdam radam.py, first release): below the threshold (rho_t < 5) the
  step is SGD with momentum, lr / (1 - b1^t) * m, as in the original `RAdam.step`
  ("else: step_size = 1.0 / (1 - beta1 ** state['step'])").  The later radam/radam.py has
  `degenerated_to_sgd=False` by default (no update below the threshold); that variant is
  available as `degenerated_to_sgd=False`.  eps is added to sqrt(v) of the *uncorrected* v
  ("denom = exp_avg_sq.sqrt().add_(group['eps'])"), the sqrt(1 - b2^t) sits in the step size.
  With b2 = 0.999: rho_5 = 4.996, rho_6 = 5.994, so the rectified step starts at t = 6.
* LAMB (tensorflow/addons lamb.py): names are stripped of a ':<digits>' suffix before the
  patterns are `re.search`ed (`_get_variable_name`).  `exclude_from_layer_adaptation` falls back
  to `exclude_from_weight_decay` when it is falsy (None *or empty*): "if
  exclude_from_layer_adaptation: ... else: self.exclude_from_layer_adaptation =
  exclude_from_weight_decay" -- followed.  The patterns are a list of regular expressions
  (the newer TF Addons signature `Optional[List[str]]`); a single string is taken as ONE
  pattern (the older TF Addons would iterate over its characters).  The trust ratio is
  ||p|| / ||r|| with r including the weight-decay term, 1 unless both norms are > 0.
  TF Addons turns epsilon=0 into K.epsilon() (`epsilon or backend epsilon`); here only
  epsilon=None does.
* LARS (TF 1.15 tf.contrib.opt.LARSOptimizer, dense path): a parameter is skipped when any
  skip_list entry is a *substring* of its name (':0' included); skipped parameters get the plain
  lr and no weight decay.  Otherwise trust = eeta ||w|| / (||g|| + wd ||w|| + eps) where ||g|| is
  the norm of the raw (clipped) gradient, trust = 1 unless ||w|| > 0 and ||g|| > 0, and then
  (whatever the trust) g <- g + wd w.  `apply_momentum` with lr 1 and grad lr*trust*g:
  mom <- momentum mom + lr trust g; w -= mom, or with nesterov w -= lr trust g + momentum mom.
* Adafactor (tensorflow/tensor2tensor tensor2tensor/utils/adafactor.py, the version that
  factors the last two dims):
    - `grad_squared = tf.square(grad) + self._epsilon1` (1e-30);
    - `decay_rate = 1.0 - tf.pow((step_num() + 1.0), -exponent)` with step_num the global
      step before the increment, i.e. 1 - t^-decay_exponent with t 1-based (0 at t = 1);
    - `learning_rate = tf.minimum(tf.rsqrt(step_num() + 1.0), 0.01)` = min(0.01, 1/sqrt(t)),
      and "if not multiply_by_parameter_scale: learning_rate *= 0.05" (followed: lr=None
      with multiply_by_parameter_scale=False steps by 0.05 * min(0.01, 1/sqrt(t)));
    - `update_scale *= ... tf.maximum(reduce_rms(var), self._epsilon2)` (1e-3), with the
      parameter's value before the update;
    - `_should_use_factored_second_moment_estimate`: `self._factored and len(shape) >= 2`;
      slots vr `shape[:-1]`, vc `shape[:-2] + shape[-1:]`; `reduce_mean(grad_squared, -1)`
      / `(grad_squared, -2)`; `long_term_mean = tf.reduce_mean(new_vr, -1, keepdims=True)`;
      `x = grad * tf.expand_dims(r_factor, -1) * tf.expand_dims(c_factor, -2)` with
      r_factor = rsqrt(new_vr / long_term_mean), c_factor = rsqrt(new_vc);
      t2t has no min_dim_size_to_factor: here a rank >= 2 parameter is factored when both of
      its LAST TWO dims are >= min_dim_size_to_factor (default 0: t2t's behaviour);
    - unfactored: `x = grad * tf.rsqrt(new_v)`;
    - `clipping_denom = tf.maximum(1.0, reduce_rms(x) / self._clipping_threshold)`
      (clipping_threshold=None: no clipping);
    - `subtrahend = update_scale * x`; with beta1: `new_m = beta1 * m + (1 - beta1) *
      subtrahend`, `subtrahend = new_m` -- i.e. m averages the SCALED update (step size
      included), not x; followed (it differs from "m <- b1 m + (1-b1) x, p -= step * m" when
      the step size changes between steps);
    - the "HACK" lines (`decay_rate += grad_squared_mean * 1e-30`, same for update_scale), an
      XLA-fusion workaround that changes values by ~1e-30 * mean(g^2), are NOT reproduced.
  lr=None: relative step min(0.01, 1/sqrt(t)); legacy decay and schedules apply only to an
  explicit lr (with lr=None they are ignored).  An explicit lr replaces min(0.01, 1/sqrt(t))
  and is multiplied by max(1e-3, RMS(p)) when multiply_by_parameter_scale, else absolute.
  Slots: parameters without a given slot have None in its list (vr/vc for unfactored, v for
  factored); `slot_count()` gives the number of stored values.
* AdaBound (Luolc/AdaBound adabound.py): t = state['step'] after its increment (1-based);
  denom = sqrt(v) + eps (uncorrected v; max of v for amsbound) and
  clamp(lr sqrt(1-b2^t)/(1-b1^t) / denom, lower, upper) * m;
  final_lr = group['final_lr'] * group['lr'] / base_lr with base_lr the constructor's lr; for
  a schedule (callable lr) the initial lr is taken as schedule(0).
* Yogi (tensorflow/addons yogi.py): v_t = v + (1 - b2) sign(g^2 - v) g^2 (np.sign(0) = 0 like
  tf.sign), v starts at initial_accumulator_value; the step IS bias corrected
  ("lr = lr_t * tf.sqrt(1 - beta2_power) / (1 - beta1_power)") with eps added to sqrt(v_t)
  (uncorrected v).  l1/l2 prox steps (TF Addons options, default 0) are not implemented.
  With beta_1 == 0 TF Addons keeps no m slot and steps with g (= m anyway); here too.
* AdaBelief (juntang-zhuang/Adabelief-Optimizer pypi_packages/adabelief_pytorch0.2.0): eps is
  added into s in place before the denominator ("exp_avg_var.add_(group['eps'])"), so it stays
  in the state; non-rectified: denom = sqrt(s) / sqrt(1-b2^t) + eps, p -= lr/(1-b1^t) m/denom.
  rectify=True (0.2.0's default is rectify=True, degenerated_to_sgd=True; here rectify=False
  by default as specified): when rho_t >= 5, p -= lr r_t sqrt(1-b2^t)/(1-b1^t) m / (sqrt(s) +
  eps) -- note: denom WITHOUT the 1/sqrt(1-b2^t) ("denom = exp_avg_var.sqrt().add_(eps)"),
  the correction is in the step size; else (degenerated_to_sgd, default True as in 0.2.0)
  p -= lr/(1-b1^t) m; degenerated_to_sgd=False: no parameter change below the threshold.
* Lion (google/automl lion/lion_tf1.py): `updates_grad = tf.sign(m * beta1_t + grad * (1. -
  beta1_t))`, `+ var * weight_decay_t`, `var -= lr_t * updates_grad`, then m <- b2 m + (1-b2) g.
"""
import re

import numpy as np

from reference import Reference, DEFAULT_EPSILON  # noqa: F401  (DEFAULT_EPSILON re-exported)


def _rms(x):
    return np.sqrt(np.mean(np.square(x)))


def _rho(beta_2, t):
    """RAdam's (rho_inf, rho_t)."""
    rho_inf = 2. / (1. - beta_2) - 1.
    return rho_inf, rho_inf - 2. * t * beta_2 ** t / (1. - beta_2 ** t)


def _rectifier(rho_inf, rho_t):
    return np.sqrt((rho_t - 4.) * (rho_t - 2.) * rho_inf /
                   ((rho_inf - 4.) * (rho_inf - 2.) * rho_t))


class NamedReference(Reference):
    """A Reference whose `step` takes the parameters' names (see the module docstring)."""

    def __init__(self, lr, decay=0., names=None, **kwargs):
        super(NamedReference, self).__init__(lr, decay, **kwargs)
        self.names = None if names is None else list(names)
        self._step_names, self._position = None, 0

    def step(self, params, grads, names=None):
        names = self.names if names is None else list(names)
        if names is not None and len(names) != len(params):
            raise ValueError('%d names for %d parameters' % (len(names), len(params)))
        self._step_names = names if names is not None else [None] * len(params)
        self._position = 0
        try:
            return super(NamedReference, self).step(params, grads)
        finally:
            self._step_names, self._position = None, 0

    def _name_of_current(self):
        """The name of the parameter `_update` is working on (None when no names were given);
        call once per `_update`."""
        name = self._step_names[self._position]
        self._position += 1
        return name


def _patterns(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


# --- RAdam ----------------------------------------------------------------------------------
class RAdam(NamedReference):
    """Liu et al. 2019 (LiyuanLucasLiu/RAdam)."""
    slot_names = ('m', 'v')

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.,
                 degenerated_to_sgd=True, **kwargs):
        super(RAdam, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                                    degenerated_to_sgd=degenerated_to_sgd, **kwargs)

    def _update(self, p, g, s, lr, t):
        self._name_of_current()
        m, v = s['m'], s['v']
        m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        v[...] = self.beta_2 * v + (1. - self.beta_2) * g * g
        rho_inf, rho_t = _rho(self.beta_2, t)
        if rho_t >= 5.:
            step = lr * _rectifier(rho_inf, rho_t) * np.sqrt(1. - self.beta_2 ** t) / \
                (1. - self.beta_1 ** t)
            return p - step * m / (np.sqrt(v) + self.epsilon)
        if self.degenerated_to_sgd:
            return p - lr / (1. - self.beta_1 ** t) * m
        return p


# --- LAMB -----------------------------------------------------------------------------------
class LAMB(NamedReference):
    """You et al. 2020, as tensorflow/addons optimizers/lamb.py."""
    slot_names = ('m', 'v')

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay_rate=0.,
                 exclude_from_weight_decay=None, exclude_from_layer_adaptation=None, decay=0.,
                 **kwargs):
        wd_patterns = _patterns(exclude_from_weight_decay)
        # TF Addons: "if exclude_from_layer_adaptation: ... else: ... = exclude_from_weight_decay"
        la_patterns = _patterns(exclude_from_layer_adaptation) or wd_patterns
        super(LAMB, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                                   weight_decay_rate=weight_decay_rate,
                                   exclude_from_weight_decay=wd_patterns,
                                   exclude_from_layer_adaptation=la_patterns, **kwargs)

    @staticmethod
    def variable_name(name):
        """TF Addons' _get_variable_name: drop a ':<digits>' suffix."""
        match = re.match(r'^(.*):\d+$', name)
        return match.group(1) if match is not None else name

    def _excluded(self, name, patterns):
        if not patterns:
            return False
        if name is None:
            raise ValueError('LAMB exclusion patterns need the parameter names')
        name = self.variable_name(name)
        return any(re.search(pattern, name) is not None for pattern in patterns)

    def uses_weight_decay(self, name):
        return not self._excluded(name, self.exclude_from_weight_decay)

    def uses_layer_adaptation(self, name):
        return not self._excluded(name, self.exclude_from_layer_adaptation)

    def _update(self, p, g, s, lr, t):
        name = self._name_of_current()
        m, v = s['m'], s['v']
        m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        v[...] = self.beta_2 * v + (1. - self.beta_2) * g * g
        m_hat = m / (1. - self.beta_1 ** t)
        v_hat = v / (1. - self.beta_2 ** t)
        r = m_hat / (np.sqrt(v_hat) + self.epsilon)
        if self.uses_weight_decay(name):
            r = r + self.weight_decay_rate * p
        ratio = 1.
        if self.uses_layer_adaptation(name):
            w_norm, r_norm = np.linalg.norm(p), np.linalg.norm(r)
            if w_norm > 0 and r_norm > 0:
                ratio = w_norm / r_norm
        return p - ratio * lr * r


# --- LARS -----------------------------------------------------------------------------------
class LARS(NamedReference):
    """You, Gitman & Ginsburg 2017, as TF 1.15 tf.contrib.opt.LARSOptimizer (dense path)."""
    slot_names = ('momentum',)

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=1e-4, eeta=1e-3, epsilon=0.,
                 skip_list=None, nesterov=False, decay=0., **kwargs):
        super(LARS, self).__init__(lr, decay, momentum=momentum, weight_decay=weight_decay,
                                   eeta=eeta, epsilon=epsilon,
                                   skip_list=None if skip_list is None else list(skip_list),
                                   nesterov=nesterov, **kwargs)

    def skipped(self, name):
        """TF: `any(v in var.name for v in self._skip_list)`."""
        if not self.skip_list:
            return False
        if name is None:
            raise ValueError('LARS skip_list needs the parameter names')
        return any(entry in name for entry in self.skip_list)

    def trust_ratio(self, p, g):
        w_norm, g_norm = np.linalg.norm(p), np.linalg.norm(g)
        if w_norm > 0 and g_norm > 0:
            return self.eeta * w_norm / (g_norm + self.weight_decay * w_norm + self.epsilon)
        return 1.

    def _update(self, p, g, s, lr, t):
        name = self._name_of_current()
        scaled_lr = lr
        if not self.skipped(name):
            scaled_lr = lr * self.trust_ratio(p, g)
            g = g + self.weight_decay * p
        step = scaled_lr * g
        mom = s['momentum']
        mom[...] = self.momentum * mom + step
        if self.nesterov:
            return p - step - self.momentum * mom
        return p - mom


# --- Adafactor ------------------------------------------------------------------------------
class Adafactor(NamedReference):
    """Shazeer & Stern 2018, as tensor2tensor's AdafactorOptimizer (see the module docstring)."""

    def __init__(self, lr=None, beta_1=0., clipping_threshold=1., factored=True,
                 multiply_by_parameter_scale=True, min_dim_size_to_factor=0, decay_exponent=0.8,
                 decay=0., **kwargs):
        super(Adafactor, self).__init__(lr, decay, beta_1=beta_1,
                                        clipping_threshold=clipping_threshold, factored=factored,
                                        multiply_by_parameter_scale=multiply_by_parameter_scale,
                                        min_dim_size_to_factor=min_dim_size_to_factor,
                                        decay_exponent=decay_exponent, **kwargs)
        self.slot_names = ('vr', 'vc', 'v') + (('m',) if beta_1 else ())

    def is_factored(self, shape):
        shape = tuple(shape)
        return bool(self.factored and len(shape) >= 2 and
                    shape[-2] >= self.min_dim_size_to_factor and
                    shape[-1] >= self.min_dim_size_to_factor)

    def _slot_arrays(self, shape):
        shape = tuple(shape)
        zeros = lambda sh: np.zeros(sh, dtype=np.float64)  # noqa: E731
        factored = self.is_factored(shape)
        arrays = {'vr': zeros(shape[:-1]) if factored else None,
                  'vc': zeros(shape[:-2] + shape[-1:]) if factored else None,
                  'v': None if factored else zeros(shape)}
        if self.beta_1:
            arrays['m'] = zeros(shape)
        return arrays

    def step(self, params, grads, names=None):
        if self.slots is None:  # per-shape slots; the base step leaves existing slots alone
            per_param = [self._slot_arrays(np.shape(p)) for p in params]
            self.slots = {name: [arrays[name] for arrays in per_param]
                          for name in self.slot_names}
        return super(Adafactor, self).step(params, grads, names)

    def slot_count(self, index=None):
        """Numbers stored in the slots (of parameter `index`, or of all)."""
        indices = range(len(self.slots['v'])) if index is None else [index]
        return sum(arrays[i].size for arrays in self.slots.values() for i in indices
                   if arrays[i] is not None)

    def _current_lr(self):
        if self.lr is None:  # relative step: legacy decay and schedules do not apply
            return None
        return super(Adafactor, self)._current_lr()

    def _update(self, p, g, s, lr, t):
        self._name_of_current()
        if lr is None:
            update_scale = min(1. / np.sqrt(t), 0.01)
            if not self.multiply_by_parameter_scale:
                update_scale *= 0.05
        else:
            update_scale = lr
        if self.multiply_by_parameter_scale:
            update_scale *= max(_rms(p), 1e-3)
        g2 = g * g + 1e-30
        decay_rate = 1. - float(t) ** -self.decay_exponent
        mixing = 1. - decay_rate
        if self.is_factored(p.shape):
            vr, vc = s['vr'], s['vc']
            vr[...] = decay_rate * vr + mixing * np.mean(g2, axis=-1)
            vc[...] = decay_rate * vc + mixing * np.mean(g2, axis=-2)
            r_factor = 1. / np.sqrt(vr / np.mean(vr, axis=-1, keepdims=True))
            c_factor = 1. / np.sqrt(vc)
            x = g * r_factor[..., :, None] * c_factor[..., None, :]
        else:
            v = s['v']
            v[...] = decay_rate * v + mixing * g2
            x = g / np.sqrt(v)
        if self.clipping_threshold is not None:
            x = x / max(1., _rms(x) / self.clipping_threshold)
        subtrahend = update_scale * x
        if self.beta_1:
            m = s['m']
            m[...] = self.beta_1 * m + (1. - self.beta_1) * subtrahend
            subtrahend = m
        return p - subtrahend


# --- AdaBound / AMSBound --------------------------------------------------------------------
class AdaBound(NamedReference):
    """Luo et al. 2019 (Luolc/AdaBound adabound.py)."""

    def __init__(self, lr=0.001, final_lr=0.1, beta_1=0.9, beta_2=0.999, gamma=1e-3,
                 epsilon=None, amsbound=False, decay=0., **kwargs):
        super(AdaBound, self).__init__(lr, decay, final_lr=final_lr, beta_1=beta_1,
                                       beta_2=beta_2, gamma=gamma, epsilon=epsilon,
                                       amsbound=amsbound, **kwargs)
        self.slot_names = ('m', 'v', 'vhat') if amsbound else ('m', 'v')

    @property
    def initial_lr(self):
        return float(self.lr(0)) if callable(self.lr) else float(self.lr)

    def bounds(self, lr, t):
        """(lower, upper) at 1-based step t with current rate lr."""
        fl = self.final_lr * lr / self.initial_lr
        return fl * (1. - 1. / (self.gamma * t + 1.)), fl * (1. + 1. / (self.gamma * t))

    def _update(self, p, g, s, lr, t):
        self._name_of_current()
        m, v = s['m'], s['v']
        m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        v[...] = self.beta_2 * v + (1. - self.beta_2) * g * g
        if self.amsbound:
            s['vhat'][...] = np.maximum(s['vhat'], v)
            v = s['vhat']
        step_size = lr * np.sqrt(1. - self.beta_2 ** t) / (1. - self.beta_1 ** t)
        lower, upper = self.bounds(lr, t)
        return p - np.clip(step_size / (np.sqrt(v) + self.epsilon), lower, upper) * m


# --- Yogi -----------------------------------------------------------------------------------
class Yogi(NamedReference):
    """Zaheer et al. 2018, as tensorflow/addons optimizers/yogi.py (no l1/l2)."""

    def __init__(self, lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-3,
                 initial_accumulator_value=1e-6, decay=0., **kwargs):
        super(Yogi, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                                   initial_accumulator_value=initial_accumulator_value, **kwargs)
        self.slot_names = ('v', 'm') if beta_1 > 0 else ('v',)

    def _slot_initial_value(self, name):
        return self.initial_accumulator_value if name == 'v' else 0.

    def _update(self, p, g, s, lr, t):
        self._name_of_current()
        v = s['v']
        g2 = g * g
        v[...] = v + (1. - self.beta_2) * np.sign(g2 - v) * g2
        if self.beta_1 > 0:
            m = s['m']
            m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        else:
            m = g
        lr_t = lr * np.sqrt(1. - self.beta_2 ** t) / (1. - self.beta_1 ** t)
        return p - lr_t * m / (np.sqrt(v) + self.epsilon)


# --- AdaBelief ------------------------------------------------------------------------------
class AdaBelief(NamedReference):
    """Zhuang et al. 2020 (adabelief-pytorch 0.2.0 arithmetic)."""
    slot_names = ('m', 's')

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-16, rectify=False,
                 degenerated_to_sgd=True, decay=0., **kwargs):
        super(AdaBelief, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2,
                                        epsilon=epsilon, rectify=rectify,
                                        degenerated_to_sgd=degenerated_to_sgd, **kwargs)

    def _update(self, p, g, s, lr, t):
        self._name_of_current()
        m, v = s['m'], s['s']
        bc1, bc2 = 1. - self.beta_1 ** t, 1. - self.beta_2 ** t
        m[...] = self.beta_1 * m + (1. - self.beta_1) * g
        residual = g - m
        v[...] = self.beta_2 * v + (1. - self.beta_2) * residual * residual + self.epsilon
        if not self.rectify:
            return p - lr / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + self.epsilon)
        rho_inf, rho_t = _rho(self.beta_2, t)
        if rho_t >= 5.:
            step = lr * _rectifier(rho_inf, rho_t) * np.sqrt(bc2) / bc1
            return p - step * m / (np.sqrt(v) + self.epsilon)
        if self.degenerated_to_sgd:
            return p - lr / bc1 * m
        return p


# --- Lion -----------------------------------------------------------------------------------
class Lion(NamedReference):
    """Chen et al. 2023 (google/automl lion)."""
    slot_names = ('m',)

    def __init__(self, lr=1e-4, beta_1=0.9, beta_2=0.99, weight_decay=0., decay=0., **kwargs):
        super(Lion, self).__init__(lr, decay, beta_1=beta_1, beta_2=beta_2,
                                   weight_decay=weight_decay, **kwargs)

    def _update(self, p, g, s, lr, t):
        self._name_of_current()
        m = s['m']
        c = self.beta_1 * m + (1. - self.beta_1) * g
        new_p = p - lr * (np.sign(c) + self.weight_decay * p)
        m[...] = self.beta_2 * m + (1. - self.beta_2) * g
        return new_p


REFERENCES = {'RAdam': RAdam, 'LAMB': LAMB, 'LARS': LARS, 'Adafactor': Adafactor,
              'AdaBound': AdaBound, 'Yogi': Yogi,
              'AdaBelief': AdaBelief, 'Lion': Lion}
