"""The rules people reached for after 2018, each written once in the package's `_apply` design:
RAdam, LAMB, LARS, Adafactor, AdaBound/AMSBound, Yogi, AdaBelief, Lion. Ranger is the recipe
`Lookahead(RAdam(...), sync_period=6, slow_step=0.5)`.

Every one takes `decay=` (Keras's legacy decay), `learning_rate=` (alias of `lr=`, which may be a
schedule), `clipnorm=`, `clipvalue=`, constraints, and saves and loads like the others. `t` below
is the 1-based step; `epsilon=None` means `K.epsilon()`.

With `fused=True` (the default) every rule runs its op of the package's kernel library
(`keras_opt_legacy.kernels`: the formula's arithmetic, one pass over the elements; LAMB two,
LARS its norms then its step, Adafactor its moments, the update's RMS, then its step), unless a
constraint needs the formula graph; without the library (not built, KERAS_OPT_LEGACY_KERNELS=0, a
GPU) the moving averages are updated in place and then the step (LARS: TF's ApplyMomentum
kernel; Lion, Adafactor: the formula). `fused=False` always builds the formula graph.
"""
import tensorflow as tf
from keras import backend as K

from . import checks
from .base import Optimizer, Step, register
from .checks import DefaultRate
from .compat import fused_kernels
from .decay import check_all_match, patterns
from .ops import kernel_or, minus, read_after
from .optimizers import AdamBase


def _norm(x):
    return K.sqrt(K.sum(K.square(x)))


def _rms(x):
    return K.sqrt(K.mean(K.square(x)))


def _rectification(beta_2, beta_2_power, t):
    """RAdam's `(rectified, r_t)`: whether the variance of the adaptive rate is tractable
    (rho_t >= 5), and the rectification term r_t (meaningful where it is)."""
    rho_inf = 2. / (1. - beta_2) - 1.
    rho_t = rho_inf - 2. * t * beta_2_power / (1. - beta_2_power)
    r_t = K.sqrt(K.maximum((rho_t - 4.) * (rho_t - 2.) * rho_inf /
                           ((rho_inf - 4.) * (rho_inf - 2.) * rho_t), 0.))
    return rho_t >= 5., r_t


class _Named(object):
    """Mixin of a rule with regular expressions on parameter names (each must match one)."""

    _patterns = ()  # attribute names of compiled pattern tuples (or None)

    def prepare_step(self, grads, params, rate_factors=None):
        params = list(params)
        for name in self._patterns:
            check_all_match(name, getattr(self, '_' + name) or (), params)
        return super(_Named, self).prepare_step(grads, params, rate_factors)

    def _set_patterns(self, name, value):
        setattr(self, '_' + name, patterns(name, value))
        setattr(self, name, None if value is None else
                [c.pattern for c in getattr(self, '_' + name)])
        self._config[name] = name

    def _matches(self, name, p):
        return any(c.search(p.name) for c in getattr(self, '_' + name) or ())


@register
class RAdam(AdamBase):
    """Rectified Adam (Liu et al. 2019, the authors' code): Adam's m and v; with rho_inf =
    2/(1-b2) - 1 and rho_t = rho_inf - 2 t b2^t/(1-b2^t), where rho_t >= 5
    p -= lr r_t sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+eps), r_t = sqrt((rho_t-4)(rho_t-2) rho_inf /
    ((rho_inf-4)(rho_inf-2) rho_t)); before that (the first 5 steps with b2 = 0.999),
    p -= lr/(1-b1^t) m."""

    slot_names = ('m', 'v')
    non_negative_slots = ('v',)
    _reads_parameters = False

    def __init__(self, lr=DefaultRate(0.001), beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.,
                 **kwargs):
        super(RAdam, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)

    def _step_values(self, lr, t):
        step = super(RAdam, self)._step_values(lr, t)
        step.rectified, r_t = _rectification(self.beta_2, step.beta_2_power, t)
        step.adaptive_rate = step.lr_t * r_t
        step.momentum_rate = lr / (1. - step.beta_1_power)
        return step

    def _update(self, m_t, v_t, step):
        return tf.cond(step.rectified,
                       lambda: step.adaptive_rate * m_t / (K.sqrt(v_t) + self.epsilon),
                       lambda: step.momentum_rate * m_t)

    def _fused(self, p, g, slots, step):
        def in_place():  # the moving averages in place, then the step
            m_t, v_t = self._moments_in_place(slots, g)
            return [K.update_sub(p, self._update(m_t, v_t, step))]
        return kernel_or(lambda k: k.radam(p, slots['m'], slots['v'], step.adaptive_rate,
                                           step.momentum_rate, step.rectified, self.beta_1,
                                           self.beta_2, self.epsilon, g), in_place)

    def _apply(self, p, g, slots, step):
        m, v = slots['m'], slots['v']
        m_t = self.beta_1 * m + (1. - self.beta_1) * g
        v_t = self.beta_2 * v + (1. - self.beta_2) * K.square(g)
        return [(m, m_t), (v, v_t), (p, minus(self._update(m_t, v_t, step)))]


@register
class LAMB(_Named, AdamBase):
    """LAMB (You et al. 2020), as TF Addons' LAMB: Adam's m and v, bias-corrected m_hat, v_hat;
    r = m_hat/(sqrt(v_hat)+eps) + wd p; p -= lr ratio r with ratio = ||p||/||r|| when both
    norms are > 0, else 1. `exclude_from_weight_decay` / `exclude_from_layer_adaptation`:
    regular expressions searched in the parameter's name (no decay / ratio 1 for those; each
    pattern must match a parameter). As TF Addons, `exclude_from_layer_adaptation=None` takes
    the weight-decay exclusions."""

    slot_names = ('m', 'v')
    non_negative_slots = ('v',)
    _reads_parameters = True  # the decay and the trust ratio read p
    row_wise = False  # norms over the parameter
    _patterns = ('exclude_from_weight_decay', 'exclude_from_layer_adaptation')

    def __init__(self, lr=DefaultRate(0.001), beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 weight_decay_rate=0., exclude_from_weight_decay=None,
                 exclude_from_layer_adaptation=None, decay=0., **kwargs):
        super(LAMB, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)
        self.weight_decay_rate = self._hyper('weight_decay_rate', weight_decay_rate)
        self._set_patterns('exclude_from_weight_decay', exclude_from_weight_decay)
        self._set_patterns('exclude_from_layer_adaptation', exclude_from_layer_adaptation)
        self._adaptation_exclusions = ('exclude_from_layer_adaptation'
                                       if exclude_from_layer_adaptation is not None
                                       else 'exclude_from_weight_decay')

    def _decays(self, p):
        return self.weight_decay_rate > 0 and not self._matches('exclude_from_weight_decay', p)

    @staticmethod
    def _ratio(w_norm, r_norm):
        """The trust ratio ||p|| / ||r||, 1 where a norm is 0."""
        return tf.where(tf.logical_and(w_norm > 0., r_norm > 0.), w_norm / r_norm,
                        tf.ones_like(w_norm))

    def _update(self, p, m_t, v_t, step):
        m_hat = m_t / (1. - step.beta_1_power)
        v_hat = v_t / (1. - step.beta_2_power)
        r = m_hat / (K.sqrt(v_hat) + self.epsilon)
        if self._decays(p):
            r += self.weight_decay_rate * p
        if self._matches(self._adaptation_exclusions, p):
            return step.lr * r
        return step.lr * self._ratio(_norm(p), _norm(r)) * r

    def _fused(self, p, g, slots, step):
        def two_passes(k):  # m, v, r and the norms; then p -= (lr * ratio) * r
            moments = k.lamb_moments(p, slots['m'], slots['v'], step.beta_1_power,
                                     step.beta_2_power, self.beta_1, self.beta_2, self.epsilon,
                                     self.weight_decay_rate if self._decays(p) else 0., g)
            if moments is None:
                return None
            w_norm, r_norm, r = moments
            ratio = 1. if self._matches(self._adaptation_exclusions, p) else \
                self._ratio(w_norm, r_norm)
            return [k.lamb_update(p, step.lr, ratio, r)]

        def in_place():  # the moving averages in place, then the step
            m_t, v_t = self._moments_in_place(slots, g)
            return [K.update_sub(p, self._update(p, m_t, v_t, step))]
        return kernel_or(two_passes, in_place)

    def _apply(self, p, g, slots, step):
        m, v = slots['m'], slots['v']
        m_t = self.beta_1 * m + (1. - self.beta_1) * g
        v_t = self.beta_2 * v + (1. - self.beta_2) * K.square(g)
        return [(m, m_t), (v, v_t), (p, minus(self._update(p, m_t, v_t, step)))]


@register
class LARS(Optimizer):
    """LARS exactly as TensorFlow 1.15's `tf.contrib.opt.LARSOptimizer` (its dense path): unless
    a `skip_list` entry is a substring of the parameter's name, trust = eeta ||w|| / (||g|| + wd
    ||w|| + eps) (1 when a norm is 0), g += wd w and the rate is lr trust; then TF's momentum
    step mom = momentum mom + rate g, w -= mom (Nesterov: w -= rate g + momentum mom). With
    `fused=True` the two norms are one op of the kernel library (one pass, sums in double) and
    the decay and momentum step another (`lars_momentum`: one pass); without the library the
    momentum step is TF's ApplyMomentum kernel, as tf.contrib runs it.
    TensorFlow 1.14's LARSOptimizer is an earlier version (it leaves the weight decay out of the
    gradient and keeps the momentum of the unscaled gradient); this rule is 1.15's on every TF."""

    slot_names = ('momentum',)
    _reads_parameters = True  # the trust ratio and the decay read w
    row_wise = False  # norms over the parameter

    def __init__(self, lr=DefaultRate(0.01), momentum=0.9, weight_decay=1e-4, eeta=1e-3,
                 epsilon=0., skip_list=None, nesterov=False, decay=0., **kwargs):
        super(LARS, self).__init__(lr=lr, decay=decay, **kwargs)
        self.momentum = self._hyper('momentum', momentum, checks.CLOSED_UNIT_INTERVAL)
        self.weight_decay = self._hyper('weight_decay', weight_decay)
        self.eeta = self._hyper('eeta', eeta)
        self.epsilon = self._hyper('epsilon', epsilon)
        self.nesterov = self._flag('nesterov', nesterov)
        if skip_list is not None:
            skip_list = [str(s) for s in ([skip_list] if isinstance(skip_list, str)
                                          else skip_list)]
        self.skip_list = skip_list
        self._config['skip_list'] = 'skip_list'

    def _skips(self, p):
        return self.skip_list is not None and any(s in p.name for s in self.skip_list)

    def _trust(self, w_norm, g_norm):
        """The trust ratio eeta ||w|| / (||g|| + wd ||w|| + eps), 1 where a norm is 0."""
        return tf.where(w_norm > 0., tf.where(
            g_norm > 0., self.eeta * w_norm / (g_norm + self.weight_decay * w_norm +
                                               self.epsilon), 1.), 1.)

    def _scaled(self, p, g, lr):
        """tf.contrib's `compute_lr`: the rate and the gradient of `p`."""
        if self._skips(p):
            return lr, g
        return lr * self._trust(_norm(p), _norm(g)), g + self.weight_decay * p

    def _fused(self, p, g, slots, step):
        def norms_then_step(k):  # the norms in one pass, then the decay and the step in one
            if self._skips(p):
                return k.lars_momentum(p, slots['momentum'], step.lr, g, self.momentum, 0.,
                                       use_nesterov=self.nesterov)
            norms = k.norms(p, g)
            if norms is None:
                return None
            return k.lars_momentum(p, slots['momentum'], step.lr * self._trust(*norms), g,
                                   self.momentum, self.weight_decay, use_nesterov=self.nesterov)

        def on_tf_kernel():
            rate, scaled = self._scaled(p, g, step.lr)
            return fused_kernels().apply_momentum(
                p, slots['momentum'], tf.constant(1., p.dtype.base_dtype), scaled * rate,
                tf.constant(self.momentum, p.dtype.base_dtype), use_nesterov=self.nesterov)
        return kernel_or(norms_then_step, on_tf_kernel)

    def _apply(self, p, g, slots, step):
        rate, g = self._scaled(p, g, step.lr)
        mom = slots['momentum']
        scaled = g * rate
        mom_t = mom * self.momentum + scaled
        update = scaled + mom_t * self.momentum if self.nesterov else mom_t
        return [(mom, mom_t), (p, minus(update))]


class _RelativeStep(object):
    """Adafactor's default step size (tensor2tensor): min(0.01, 1/sqrt(t)), times 0.05 without
    parameter scaling; a schedule of the 0-based step (so read-only, like the others)."""

    def __init__(self, scale=1.):
        self.scale = scale

    def __call__(self, step):
        t = K.cast(step, 'float32') + 1.
        return K.minimum(tf.rsqrt(t), 0.01) * self.scale

    def get_config(self):
        return {'scale': self.scale}


@register
class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern 2018) as tensor2tensor's `AdafactorOptimizer` computes it:
    g2 = g^2 + 1e-30, decay d = 1 - t^-decay_exponent; a parameter of 2 dimensions or more
    (when `factored`, its last two >= `min_dim_size_to_factor`) keeps the means over its rows and
    columns, vr <- d vr + (1-d) mean(g2, axis -1), vc <- d vc + (1-d) mean(g2, axis -2), and
    x = g rsqrt(vr/mean(vr)) (rows) rsqrt(vc) (columns) -- for a matrix exactly tensor2tensor's
    2-D rule, beyond it its later version's (a convolution kernel's last two dimensions); other
    parameters a full v <- d v + (1-d) g2, x = g rsqrt(v). Update
    clipping x /= max(1, RMS(x)/clipping_threshold) (None: none). The step is scale * x with
    scale = the rate (`lr`; None: tensor2tensor's relative step min(0.01, 1/sqrt(t)), times 0.05
    without parameter scaling) times max(1e-3, RMS(p)) when `multiply_by_parameter_scale`; with
    `beta_1` > 0, m <- b1 m + (1-b1) scale x is the step.

    Memory: an n x m kernel keeps n + m numbers of second moments (Adam: 2nm). Legacy `decay`
    applies to an explicit `lr` only. With the kernel library a factored parameter's step is
    three passes over the gradient (24 bytes a float parameter: the moments and RMS(p), the
    update's RMS, the step), a full v's two; the means and RMS are sums in double in a fixed
    order (deterministic), equal to the formula graph's float sums to rounding."""

    slot_names = ('vr', 'vc', 'v', 'm')
    non_negative_slots = ('vr', 'vc', 'v')
    row_wise = False  # means over rows and columns, RMS over the parameter
    _reads_parameters = False  # without parameter scaling (see step_reads_parameters)

    def __init__(self, lr=None, beta_1=0., clipping_threshold=1., factored=True,
                 multiply_by_parameter_scale=True, min_dim_size_to_factor=0,
                 decay_exponent=0.8, decay=0., **kwargs):
        relative = lr is None and kwargs.get('learning_rate') is None
        if relative:
            kwargs.pop('learning_rate', None)
            lr = _RelativeStep(1. if multiply_by_parameter_scale else 0.05)
        super(Adafactor, self).__init__(lr=lr, decay=decay, **kwargs)
        self.relative_step = relative
        self.beta_1 = self._hyper('beta_1', beta_1, checks.UNIT_INTERVAL)
        self.slot_names = ('vr', 'vc', 'v') + (('m',) if self.beta_1 > 0 else ())
        if clipping_threshold is not None:
            clipping_threshold = self._hyper('clipping_threshold', clipping_threshold,
                                             checks.POSITIVE)
        self.clipping_threshold = clipping_threshold
        self._config['clipping_threshold'] = 'clipping_threshold'
        self.factored = self._flag('factored', factored)
        self.multiply_by_parameter_scale = self._flag('multiply_by_parameter_scale',
                                                      multiply_by_parameter_scale)
        self.min_dim_size_to_factor = checks.integer('min_dim_size_to_factor',
                                                     min_dim_size_to_factor, minimum=0)
        self._config['min_dim_size_to_factor'] = 'min_dim_size_to_factor'
        self.decay_exponent = self._hyper('decay_exponent', decay_exponent,
                                          checks.POSITIVE_UNIT_INTERVAL)

    @property
    def step_reads_parameters(self):  # RMS(p) scales the step; else the declaration (below)
        return self.multiply_by_parameter_scale or \
            super(Adafactor, self).step_reads_parameters

    def _factors(self, p):
        shape = K.int_shape(p)
        return self.factored and len(shape) >= 2 and \
            min(shape[-2:]) >= self.min_dim_size_to_factor

    def _slot_shape(self, p, slot_name):
        shape = K.int_shape(p)
        if slot_name == 'm':
            return shape
        if self._factors(p):
            return {'vr': shape[:-1], 'vc': shape[:-2] + shape[-1:]}.get(slot_name)
        return shape if slot_name == 'v' else None

    def _step_values(self, lr, t):
        return Step(lr=lr, t=t, decay=1. - K.pow(t, -self.decay_exponent))

    def _apply(self, p, g, slots, step):
        g2 = K.square(g) + 1e-30
        d = step.decay
        if 'vr' in slots:
            vr, vc = slots['vr'], slots['vc']
            vr_t = d * vr + (1. - d) * K.mean(g2, axis=-1)
            vc_t = d * vc + (1. - d) * K.mean(g2, axis=-2)
            x = g * K.expand_dims(tf.rsqrt(vr_t / K.mean(vr_t, axis=-1, keepdims=True)), -1) * \
                K.expand_dims(tf.rsqrt(vc_t), -2)
            updates = [(vr, vr_t), (vc, vc_t)]
        else:
            v = slots['v']
            v_t = d * v + (1. - d) * g2
            x = g * tf.rsqrt(v_t)
            updates = [(v, v_t)]
        if self.clipping_threshold is not None:
            x = x / self._divisor(_rms(x))
        update = self._scale(step, _rms(p) if self.multiply_by_parameter_scale else None) * x
        if self.beta_1 > 0:
            m = slots['m']
            update = self.beta_1 * m + (1. - self.beta_1) * update
            updates.append((m, update))
        return updates + [(p, minus(update))]

    def _divisor(self, x_rms):
        """Update clipping's divisor of x: max(1, RMS(x)/clipping_threshold)."""
        return K.maximum(x_rms / self.clipping_threshold, 1.)

    def _scale(self, step, p_rms):
        """The step size: the rate, times max(RMS(p), 1e-3) with parameter scaling."""
        return step.lr * K.maximum(p_rms, 1e-3) if self.multiply_by_parameter_scale else step.lr

    def _fused(self, p, g, slots, step):
        """The kernel library's passes (kernels/adafactor.cc): the moments in place with RMS(p),
        RMS(x) (with clipping; a factored parameter's is a pass of its own), then the step; the
        small factors and the scalars between them in the graph. No library: the formula."""
        return kernel_or(lambda k: self._passes(k, p, g, slots, step))

    def _passes(self, k, p, g, slots, step):
        scales, clips = self.multiply_by_parameter_scale, self.clipping_threshold is not None
        m, factored = slots.get('m'), 'vr' in slots
        momentum = (self.beta_1, 1. - self.beta_1) if m is not None else (None, None)
        if factored:
            vr, vc = slots['vr'], slots['vc']
            p_rms = k.adafactor_factored_moments(p, vr, vc, step.decay, g, parameter_scale=scales)
            if p_rms is None:
                return None
            vr_t, vc_t = read_after(vr, [p_rms]), read_after(vc, [p_rms])
            rows = tf.rsqrt(vr_t / K.mean(vr_t, axis=-1, keepdims=True))
            columns = tf.rsqrt(vc_t)
            x_rms = k.adafactor_factored_rms(g, rows, columns) if clips else None
        else:
            moments = k.adafactor_moments(p, slots['v'], step.decay, g, parameter_scale=scales)
            if moments is None:
                return None
            x_rms, p_rms = moments
        divisor = self._divisor(x_rms) if clips else 1.
        scale = self._scale(step, p_rms)
        if factored:
            return [k.adafactor_factored(p, m, rows, columns, scale, divisor, *momentum, g)]
        with tf.control_dependencies([p_rms.op]):  # v is read after its update
            return [k.adafactor(p, m, slots['v'], scale, divisor, *momentum, g)]

    def get_config(self):
        config = super(Adafactor, self).get_config()
        if self.relative_step:
            config['lr'] = None
        return config


@register
class AdaBound(AdamBase):
    """AdaBound / AMSBound (Luo et al. 2019, the authors' code): Adam's m and v; the step size
    lr sqrt(1-b2^t)/(1-b1^t) / (sqrt(v)+eps), clipped into [fl (1 - 1/(gamma t + 1)),
    fl (1 + 1/(gamma t))] with fl = final_lr lr / initial lr, times m; `amsbound` uses the
    running maximum of v. `lr` is the current rate (legacy decay or schedule applied); the
    initial rate is the constructor's (state: `initial_lr`, in `weights`), or a schedule's
    value at step 0."""

    non_negative_slots = ('v', 'vhat')
    _reads_parameters = False

    def __init__(self, lr=DefaultRate(0.001), final_lr=0.1, beta_1=0.9, beta_2=0.999,
                 gamma=1e-3, epsilon=None, amsbound=False, decay=0., **kwargs):
        super(AdaBound, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)
        # Unused (0) with a schedule, whose initial rate cannot change.
        self.initial_lr = self._add_scalar('initial_lr', self._constructed_lr or 0.)
        self.final_lr = self._hyper('final_lr', final_lr)
        self.gamma = self._hyper('gamma', gamma, checks.POSITIVE)
        self.amsbound = self._flag('amsbound', amsbound)
        self.slot_names = ('m', 'v', 'vhat') if amsbound else ('m', 'v')

    def _initial_rate(self):
        """The initial rate, for the bounds' final rate: a schedule's at step 0, else the
        constructor's, kept as state (`initial_lr`, in `weights`: a model saved after its rate
        was changed -- ReduceLROnPlateau -- resumes with the bounds it had)."""
        if self._schedule is not None:
            return K.cast(self._schedule(K.constant(0, 'int64')), K.floatx())
        return self.initial_lr

    def _step_values(self, lr, t):
        step = super(AdaBound, self)._step_values(lr, t)
        step.initial_lr = self._initial_rate()
        return step

    def _bounds(self, step):
        """[lower, upper] of the step size. An optimizer built with `lr * k` (a parameter's
        factor, `step.rate_factor`) has its initial rate times k too: the bounds stay final_lr."""
        final_lr = self.final_lr * step.lr / (step.initial_lr * step.rate_factor)
        return (final_lr * (1. - 1. / (self.gamma * step.t + 1.)),
                final_lr * (1. + 1. / (self.gamma * step.t)))

    def _update(self, m_t, v_t, step):
        size = tf.clip_by_value(step.lr_t / (K.sqrt(v_t) + self.epsilon), *self._bounds(step))
        return size * m_t

    def _fused(self, p, g, slots, step):
        def one_pass(k):
            lower, upper = self._bounds(step)
            if self.amsbound:
                return k.ams_bound(p, slots['m'], slots['v'], slots['vhat'], step.lr_t, lower,
                                   upper, self.beta_1, self.beta_2, self.epsilon, g)
            return k.ada_bound(p, slots['m'], slots['v'], step.lr_t, lower, upper, self.beta_1,
                               self.beta_2, self.epsilon, g)

        def in_place():  # the moving averages in place, then the step
            m_t, v_t = self._moments_in_place(slots, g)
            if self.amsbound:
                vhat = slots['vhat']
                v_t = read_after(vhat, [K.update(vhat, K.maximum(vhat, v_t))])
            return [K.update_sub(p, self._update(m_t, v_t, step))]
        return kernel_or(one_pass, in_place)

    def _apply(self, p, g, slots, step):
        m, v = slots['m'], slots['v']
        m_t = self.beta_1 * m + (1. - self.beta_1) * g
        v_t = self.beta_2 * v + (1. - self.beta_2) * K.square(g)
        updates = [(m, m_t), (v, v_t)]
        if self.amsbound:
            v_t = K.maximum(slots['vhat'], v_t)
            updates.append((slots['vhat'], v_t))
        return updates + [(p, minus(self._update(m_t, v_t, step)))]


@register
class Yogi(AdamBase):
    """Yogi (Zaheer et al. 2018, as TF Addons): v <- v - (1-b2) sign(v - g^2) g^2 (v starts at
    `initial_accumulator_value`), Adam's m (none with beta_1 = 0: m = g) and bias-corrected
    step p -= lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+eps)."""

    non_negative_slots = ('v',)
    _reads_parameters = False

    def __init__(self, lr=DefaultRate(0.01), beta_1=0.9, beta_2=0.999, epsilon=1e-3,
                 initial_accumulator_value=1e-6, decay=0., **kwargs):
        super(Yogi, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)
        self.initial_accumulator_value = self._hyper('initial_accumulator_value',
                                                     initial_accumulator_value)
        self.slot_names = ('m', 'v') if beta_1 > 0 else ('v',)  # as TF Addons: m = g then

    def _slot_initial_value(self, slot_name):
        return self.initial_accumulator_value if slot_name == 'v' else 0.

    def _fused(self, p, g, slots, step):
        def one_pass(k):
            if 'm' not in slots:
                return k.yogi_no_momentum(p, slots['v'], step.lr_t, self.beta_2, self.epsilon, g)
            return k.yogi(p, slots['m'], slots['v'], step.lr_t, self.beta_1, self.beta_2,
                          self.epsilon, g)

        def in_place():  # the moments in place, then the step
            m_t = self._moments_in_place(slots, g, second=None) if 'm' in slots else g
            g2 = K.square(g)
            v = slots['v']
            v_t = read_after(v, [K.update_sub(v, (1. - self.beta_2) * K.sign(v - g2) * g2)])
            return [K.update_sub(p, step.lr_t * m_t / (K.sqrt(v_t) + self.epsilon))]
        return kernel_or(one_pass, in_place)

    def _apply(self, p, g, slots, step):
        v = slots['v']
        g2 = K.square(g)
        v_t = v - (1. - self.beta_2) * K.sign(v - g2) * g2
        updates = [(v, v_t)]
        m_t = g
        if 'm' in slots:
            m_t = self.beta_1 * slots['m'] + (1. - self.beta_1) * g
            updates.insert(0, (slots['m'], m_t))
        return updates + [(p, minus(step.lr_t * m_t / (K.sqrt(v_t) + self.epsilon)))]


@register
class AdaBelief(AdamBase):
    """AdaBelief (Zhuang et al. 2020), the arithmetic of the authors' adabelief-pytorch 0.2.0:
    m Adam's; s <- b2 s + (1-b2)(g - m)^2 + eps (eps kept in s);
    p -= lr/(1-b1^t) m / (sqrt(s)/sqrt(1-b2^t) + eps). `rectify=True` adds RAdam's
    rectification: where rho_t >= 5, p -= lr r_t sqrt(1-b2^t)/(1-b1^t) m/(sqrt(s)+eps), else
    p -= lr/(1-b1^t) m (the authors' `degenerated_to_sgd`)."""

    slot_names = ('m', 's')
    non_negative_slots = ('s',)
    _reads_parameters = False

    def __init__(self, lr=DefaultRate(0.001), beta_1=0.9, beta_2=0.999, epsilon=1e-16,
                 rectify=False, decay=0., **kwargs):
        super(AdaBelief, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)
        self.rectify = self._flag('rectify', rectify)

    def _step_values(self, lr, t):
        step = super(AdaBelief, self)._step_values(lr, t)
        step.momentum_rate = lr / (1. - step.beta_1_power)
        if self.rectify:
            step.rectified, r_t = _rectification(self.beta_2, step.beta_2_power, t)
            step.adaptive_rate = step.lr_t * r_t
        return step

    def _belief(self, s, g, m_t):
        return self.beta_2 * s + (1. - self.beta_2) * K.square(g - m_t) + self.epsilon

    def _update(self, m_t, s_t, step):
        if not self.rectify:
            denominator = K.sqrt(s_t) / K.sqrt(1. - step.beta_2_power) + self.epsilon
            return step.momentum_rate * m_t / denominator
        return tf.cond(step.rectified,
                       lambda: step.adaptive_rate * m_t / (K.sqrt(s_t) + self.epsilon),
                       lambda: step.momentum_rate * m_t)

    def _fused(self, p, g, slots, step):
        def one_pass(k):
            if self.rectify:
                return k.ada_belief_rectified(p, slots['m'], slots['s'], step.adaptive_rate,
                                              step.momentum_rate, step.rectified, self.beta_1,
                                              self.beta_2, self.epsilon, g)
            return k.ada_belief(p, slots['m'], slots['s'], step.momentum_rate,
                                K.sqrt(1. - step.beta_2_power), self.beta_1, self.beta_2,
                                self.epsilon, g)

        def in_place():  # m in place, then s, then the step
            m_t = self._moments_in_place(slots, g, second=None)
            s = slots['s']
            s_t = read_after(s, [K.update(s, self._belief(s, g, m_t))])
            return [K.update_sub(p, self._update(m_t, s_t, step))]
        return kernel_or(one_pass, in_place)

    def _apply(self, p, g, slots, step):
        m, s = slots['m'], slots['s']
        m_t = self.beta_1 * m + (1. - self.beta_1) * g
        s_t = self._belief(s, g, m_t)
        return [(m, m_t), (s, s_t), (p, minus(self._update(m_t, s_t, step)))]


@register
class Lion(Optimizer):
    """Lion (Chen et al. 2023): c = b1 m + (1-b1) g; p -= lr (sign(c) + wd p);
    m <- b2 m + (1-b2) g."""

    slot_names = ('m',)
    _reads_parameters = True  # its decay reads p

    def __init__(self, lr=DefaultRate(1e-4), beta_1=0.9, beta_2=0.99, weight_decay=0.,
                 decay=0., **kwargs):
        super(Lion, self).__init__(lr=lr, decay=decay, **kwargs)
        self.beta_1 = self._hyper('beta_1', beta_1, checks.CLOSED_UNIT_INTERVAL)
        self.beta_2 = self._hyper('beta_2', beta_2, checks.CLOSED_UNIT_INTERVAL)
        self.weight_decay = self._hyper('weight_decay', weight_decay)

    def _fused(self, p, g, slots, step):  # one pass; else (None) the formula graph
        return kernel_or(lambda k: k.lion(p, slots['m'], step.lr, self.beta_1, 1. - self.beta_1,
                                          self.beta_2, 1. - self.beta_2, self.weight_decay, g))

    def _apply(self, p, g, slots, step):
        m = slots['m']
        direction = K.sign(self.beta_1 * m + (1. - self.beta_1) * g)
        if self.weight_decay > 0:
            direction = direction + self.weight_decay * p
        return [(m, self.beta_2 * m + (1. - self.beta_2) * g),
                (p, minus(step.lr * direction))]
