"""The eight optimizers, with Keras 2.2.4's names, signatures, defaults and arithmetic.

Each class states its slots and writes its update rule once; the base does the rest.
Every constructor also takes `learning_rate=` (alias of `lr=`, which may be a schedule),
`clipnorm=`, `clipvalue=` and `fused=`: with `fused=True` (the default) SGD, Adagrad, Adam,
Adamax, Adadelta and Ftrl run TensorFlow's fused training kernels, and momentum SGD, RMSprop,
Nadam and Adam(amsgrad=True) the ops of the package's kernel library
(`keras_opt_legacy.kernels`: one pass, the formula's arithmetic), whose arithmetic and state are
the formula's (equal to float rounding), unless a constraint or a sparse gradient needs the plain
graph; without the library (not built, KERAS_OPT_LEGACY_KERNELS=0, a GPU) momentum SGD and
RMSprop run TF's kernels in part and Nadam its moving averages in place. `fused=False` always
builds the plain Keras-formula graph. Elsewhere the parameter update is applied in place
(`minus`/`plus`).
`AdamBase` (betas, epsilon, bias corrections) is the base of the Adam family, public for
rules built on it.
"""
import tensorflow as tf
from keras import backend as K

from . import kernels, ops
from .base import Optimizer, Step, register
from .checks import CLOSED_UNIT_INTERVAL, NON_POSITIVE, POSITIVE, UNIT_INTERVAL, DefaultRate
from .compat import fused_kernels
from .decay import DecoupledDecay, Decays, _decay_in_place, deserialize_rate
from .ops import (average_in_place, deduplicate, descend, kernel_or, minus, plus,
                  read_after)


@register
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    v = momentum*m - lr*g; m <- v; p <- p + v (Nesterov: p + momentum*v - lr*g).
    The 'moment' slot exists only when momentum > 0 at construction (with 0 it never matters).
    """

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    def __init__(self, lr=DefaultRate(0.01), momentum=0., decay=0., nesterov=False, **kwargs):
        super(SGD, self).__init__(lr=lr, decay=decay, **kwargs)
        self.momentum = self._hyper('momentum', momentum, CLOSED_UNIT_INTERVAL, variable=True)
        self.nesterov = self._flag('nesterov', nesterov)
        self.slot_names = ('moment',) if momentum > 0 else ()

    def _fused(self, p, g, slots, step):
        if 'moment' not in slots:
            return descend(p, step.lr, g)
        m = slots['moment']

        def on_tf_kernels():
            # v = momentum*m - lr*g as m <- momentum*m, then m <- m - lr*g: the same roundings.
            v = read_after(m, [descend(m, step.lr, g, after=[K.update(m, self.momentum * m)])])
            if not self.nesterov:
                return [K.update_add(p, v)]
            # (p + momentum*v) - lr*g, as the formula rounds it.
            return [descend(p, step.lr, g, after=[K.update_add(p, self.momentum * v)])]
        return kernel_or(lambda k: k.keras_momentum(p, m, step.lr, g, self.momentum,
                                                    use_nesterov=self.nesterov), on_tf_kernels)

    def _sparse_is_exact(self):
        return not self.slot_names  # without momentum, rows without gradient stay put

    def _sparse_special(self, p, g, slots, step):
        """With momentum: m <- momentum*m on every row (a row without gradient: v = momentum*m),
        m -= lr*g on the touched rows, then p += m (Nesterov: p += momentum*v, then p -= lr*g
        on the touched rows): no dense gradient. The scaling is in place and in one pass, as
        m - (1 - momentum)*m (TF's gradient-descent kernel, m its own delta): equal to the dense
        step to float rounding (about an ulp of m per step), without a table-sized temporary
        and its copy (TF has no in-place kernel for momentum*m)."""
        values, indices = deduplicate(g)
        m = slots['moment']
        scaled = descend(m, 1. - self.momentum, m)
        with tf.control_dependencies([scaled]):
            stepped = tf.scatter_sub(m, indices, step.lr * values)
        v = read_after(m, [stepped])
        if not self.nesterov:
            return [scaled, stepped, K.update_add(p, v)]
        added = K.update_add(p, self.momentum * v)
        with tf.control_dependencies([added]):
            return [scaled, stepped, added, tf.scatter_sub(p, indices, step.lr * values)]

    def _fused_rows(self, p, values, indices, slots, step):
        if not slots:  # p - lr*g on the rows: the dense kernel's arithmetic (g*lr)
            return tf.scatter_sub(p, indices, step.lr * values)

    def _apply(self, p, g, slots, step):
        if 'moment' not in slots:
            return [(p, minus(step.lr * g))]
        m = slots['moment']
        v = self.momentum * m - step.lr * g
        new_p = p + self.momentum * v - step.lr * g if self.nesterov else plus(v)
        return [(m, v), (p, new_p)]


@register
class RMSprop(Optimizer):
    """RMSprop: a <- rho*a + (1-rho)*g^2; p <- p - lr*g/(sqrt(a)+epsilon)."""

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    slot_names = ('accumulator',)
    non_negative_slots = ('accumulator',)

    def __init__(self, lr=DefaultRate(0.001), rho=0.9, epsilon=None, decay=0., **kwargs):
        super(RMSprop, self).__init__(lr=lr, decay=decay, **kwargs)
        self.rho = self._hyper('rho', rho, UNIT_INTERVAL, variable=True)
        self.epsilon = self._epsilon(epsilon)

    def _fused(self, p, g, slots, step):
        a = slots['accumulator']

        def on_adagrad_kernel():
            # Adagrad's kernel without its accumulator update is RMSprop's parameter step.
            apply_adagrad_v2 = getattr(fused_kernels(), 'apply_adagrad_v2', None)
            if apply_adagrad_v2 is not None:
                with tf.control_dependencies([average_in_place(a, self.rho, K.square(g))]):
                    return apply_adagrad_v2(p, a, step.lr, self.epsilon, g, update_slots=False)
        return kernel_or(lambda k: k.keras_rms_prop(p, a, step.lr, self.rho, self.epsilon, g),
                         on_adagrad_kernel)

    def _untouched_rows(self):
        return [('accumulator', self.rho)]  # a <- rho*a; p stays

    def _apply(self, p, g, slots, step):
        a = slots['accumulator']
        new_a = self.rho * a + (1. - self.rho) * K.square(g)
        return [(a, new_a), (p, minus(step.lr * g / (K.sqrt(new_a) + self.epsilon)))]


@register
class Adagrad(Optimizer):
    """Adagrad: a <- a + g^2; p <- p - lr*g/(sqrt(a)+epsilon)."""

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    slot_names = ('accumulator',)
    non_negative_slots = ('accumulator',)

    def __init__(self, lr=DefaultRate(0.01), epsilon=None, decay=0., **kwargs):
        super(Adagrad, self).__init__(lr=lr, decay=decay, **kwargs)
        self.epsilon = self._epsilon(epsilon)

    def _fused(self, p, g, slots, step):
        apply_adagrad_v2 = getattr(fused_kernels(), 'apply_adagrad_v2', None)  # has epsilon
        if apply_adagrad_v2 is not None:
            return apply_adagrad_v2(p, slots['accumulator'], step.lr, self.epsilon, g)

    def _sparse_is_exact(self):
        return True  # a row without gradient: a += 0, p -= 0

    def _fused_rows(self, p, values, indices, slots, step):
        kernel = getattr(fused_kernels(), 'sparse_apply_adagrad_v2', None)  # TF 1.15
        if kernel is not None:
            return kernel(p, slots['accumulator'], step.lr, self.epsilon, values, indices)

    def _apply(self, p, g, slots, step):
        a = slots['accumulator']
        new_a = a + K.square(g)
        return [(a, new_a), (p, minus(step.lr * g / (K.sqrt(new_a) + self.epsilon)))]


@register
class Adadelta(Optimizer):
    """Adadelta: a <- rho*a + (1-rho)*g^2; u = g*sqrt(d+eps)/sqrt(a+eps); p <- p - lr*u;
    d <- rho*d + (1-rho)*u^2 (the new a, the old d)."""

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    slot_names = ('accumulator', 'delta_accumulator')
    non_negative_slots = ('accumulator', 'delta_accumulator')

    def __init__(self, lr=DefaultRate(1.0), rho=0.95, epsilon=None, decay=0., **kwargs):
        super(Adadelta, self).__init__(lr=lr, decay=decay, **kwargs)
        self.rho = self._hyper('rho', rho, UNIT_INTERVAL)
        self.epsilon = self._epsilon(epsilon)

    def _fused(self, p, g, slots, step):
        return fused_kernels().apply_adadelta(p, slots['accumulator'], slots['delta_accumulator'],
                                              step.lr, self.rho, self.epsilon, g)

    def _untouched_rows(self):
        return [('accumulator', self.rho), ('delta_accumulator', self.rho)]  # p stays

    def _apply(self, p, g, slots, step):
        a, d = slots['accumulator'], slots['delta_accumulator']
        new_a = self.rho * a + (1. - self.rho) * K.square(g)
        update = g * K.sqrt(d + self.epsilon) / K.sqrt(new_a + self.epsilon)
        new_d = self.rho * d + (1 - self.rho) * K.square(update)
        return [(a, new_a), (p, minus(step.lr * update)), (d, new_d)]


class AdamBase(Optimizer):
    """Base of the Adam family: `beta_1`/`beta_2` (in variables, as Keras holds them), `epsilon`,
    and Adam's bias corrections as step values: `step.beta_1_power` = beta_1^t,
    `step.beta_2_power` = beta_2^t and `step.lr_t` = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)."""

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    def __init__(self, lr, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0., **kwargs):
        super(AdamBase, self).__init__(lr=lr, decay=decay, **kwargs)
        self.beta_1 = self._hyper('beta_1', beta_1, UNIT_INTERVAL, variable=True)
        self.beta_2 = self._hyper('beta_2', beta_2, UNIT_INTERVAL, variable=True)
        self.epsilon = self._epsilon(epsilon)

    def _moments_in_place(self, slots, g, second='v'):
        """Adam's moving averages updated in place (the formula's rounding, no temporaries the
        size of the parameter): `(m_t, v_t)` read after their update; `second` names the slot
        of the squares (None: only m)."""
        m_t = read_after(slots['m'], [average_in_place(slots['m'], self.beta_1, g)])
        if second is None:
            return m_t
        v = slots[second]
        return m_t, read_after(v, [average_in_place(v, self.beta_2, K.square(g))])

    def _step_values(self, lr, t):
        beta_1_power, beta_2_power = K.pow(self.beta_1, t), K.pow(self.beta_2, t)
        return Step(lr=lr, t=t, beta_1_power=beta_1_power, beta_2_power=beta_2_power,
                    lr_t=lr * (K.sqrt(1. - beta_2_power) / (1. - beta_1_power)))


@register
class Adam(AdamBase):
    """Adam (optionally AMSGrad): m, v EMAs; p <- p - lr_t*m/(sqrt(v)+eps),
    lr_t = lr*sqrt(1-beta_2^t)/(1-beta_1^t). Without amsgrad there is no 'vhat' slot."""

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    non_negative_slots = ('v', 'vhat')

    def __init__(self, lr=DefaultRate(0.001), beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.,
                 amsgrad=False, **kwargs):
        super(Adam, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)
        self.amsgrad = self._flag('amsgrad', amsgrad)
        self.slot_names = ('m', 'v', 'vhat') if amsgrad else ('m', 'v')

    def _fused(self, p, g, slots, step):
        if not self.amsgrad:
            return fused_kernels().apply_adam(
                p, slots['m'], slots['v'], step.beta_1_power, step.beta_2_power, step.lr,
                self.beta_1, self.beta_2, self.epsilon, g)
        return kernel_or(lambda k: k.adam_amsgrad(p, slots['m'], slots['v'], slots['vhat'],
                                                  step.lr_t, self.beta_1, self.beta_2,
                                                  self.epsilon, g))

    def _apply(self, p, g, slots, step):
        m, v = slots['m'], slots['v']
        m_t = (self.beta_1 * m) + (1. - self.beta_1) * g
        v_t = (self.beta_2 * v) + (1. - self.beta_2) * K.square(g)
        updates = [(m, m_t), (v, v_t)]
        if self.amsgrad:
            v_t = K.maximum(slots['vhat'], v_t)
            updates.append((slots['vhat'], v_t))
        return updates + [(p, minus(step.lr_t * m_t / (K.sqrt(v_t) + self.epsilon)))]


@register
class Adamax(AdamBase):
    """Adamax: m EMA, u <- max(beta_2*u, |g|); p <- p - lr/(1-beta_1^t) * m/(u+eps)."""

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    slot_names = ('m', 'u')
    non_negative_slots = ('u',)

    def __init__(self, lr=DefaultRate(0.002), beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.,
                 **kwargs):
        super(Adamax, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)

    def _step_values(self, lr, t):
        beta_1_power = K.pow(self.beta_1, t)
        return Step(lr=lr, beta_1_power=beta_1_power, lr_t=lr / (1. - beta_1_power))

    def _fused(self, p, g, slots, step):
        return fused_kernels().apply_ada_max(p, slots['m'], slots['u'], step.beta_1_power, step.lr,
                                             self.beta_1, self.beta_2, self.epsilon, g)

    def _apply(self, p, g, slots, step):
        m, u = slots['m'], slots['u']
        m_t = (self.beta_1 * m) + (1. - self.beta_1) * g
        u_t = K.maximum(self.beta_2 * u, K.abs(g))
        return [(m, m_t), (u, u_t),
                (p, minus(step.lr_t * m_t / (u_t + self.epsilon)))]


@register
class Nadam(AdamBase):
    """Nesterov Adam with Keras 2.2.4's momentum warm-up schedule.

    Unlike Keras 2.2.4, the running product `m_schedule` is part of `weights` (right after
    `iterations`), so a saved and resumed Nadam continues exactly.
    """

    _reads_parameters = False  # it only subtracts its step from p (see WeightDecay)

    slot_names = ('m', 'v')
    non_negative_slots = ('v',)

    def __init__(self, lr=DefaultRate(0.002), beta_1=0.9, beta_2=0.999, epsilon=None,
                 schedule_decay=0.004, decay=0., **kwargs):
        super(Nadam, self).__init__(lr, beta_1, beta_2, epsilon, decay, **kwargs)
        self.schedule_decay = self._hyper('schedule_decay', schedule_decay)
        self.m_schedule = self._add_scalar('m_schedule', 1.)

    def _step_values(self, lr, t):
        momentum_cache_t = self.beta_1 * (1. - 0.5 * (
            K.pow(K.cast_to_floatx(0.96), t * self.schedule_decay)))
        momentum_cache_t_1 = self.beta_1 * (1. - 0.5 * (
            K.pow(K.cast_to_floatx(0.96), (t + 1) * self.schedule_decay)))
        m_schedule_new = self.m_schedule * momentum_cache_t
        return Step(lr=lr, t=t, momentum_cache_t=momentum_cache_t,
                    momentum_cache_t_1=momentum_cache_t_1, m_schedule_new=m_schedule_new,
                    m_schedule_next=m_schedule_new * momentum_cache_t_1,
                    beta_2_power=K.pow(self.beta_2, t))

    def _fused(self, p, g, slots, step):
        def in_place():  # the moving averages in place, then the formula's step
            m_t, v_t = self._moments_in_place(slots, g)
            return [K.update_sub(p, self._step(g, m_t, v_t, step))]
        return kernel_or(lambda k: k.nadam(
            p, slots['m'], slots['v'], step.momentum_cache_t, step.momentum_cache_t_1,
            step.m_schedule_new, step.m_schedule_next, step.beta_2_power, step.lr, self.beta_1,
            self.beta_2, self.epsilon, g), in_place)

    def _apply(self, p, g, slots, step):
        m, v = slots['m'], slots['v']
        m_t = self.beta_1 * m + (1. - self.beta_1) * g
        v_t = self.beta_2 * v + (1. - self.beta_2) * K.square(g)
        return [(m, m_t), (v, v_t), (p, minus(self._step(g, m_t, v_t, step)))]

    def _step(self, g, m_t, v_t, step):
        """What the update subtracts from p, given the new moving averages."""
        g_prime = g / (1. - step.m_schedule_new)
        m_t_prime = m_t / (1. - step.m_schedule_next)
        v_t_prime = v_t / (1. - step.beta_2_power)
        m_t_bar = (1. - step.momentum_cache_t) * g_prime + step.momentum_cache_t_1 * m_t_prime
        return step.lr * m_t_bar / (K.sqrt(v_t_prime) + self.epsilon)

    def _final_updates(self, step):
        return [(self.m_schedule, step.m_schedule_new)]


@register
class Ftrl(Optimizer):
    """FTRL-Proximal with TensorFlow 1.15's semantics (`tf.train.FtrlOptimizer`, incl. shrinkage).

    acc' = acc + g^2; gs = g + 2*l2_shrinkage*p; linear += gs - (acc'^-power - acc^-power)/lr * p;
    p = (sign(linear)*l1 - linear) / (acc'^-power/lr + 2*l2) if |linear| > l1 else 0.
    """

    slot_names = ('accumulator', 'linear')
    non_negative_slots = ('accumulator',)
    lr_check = POSITIVE  # the rule divides by the rate
    _reads_parameters = True  # linear += ... - sigma * p

    def __init__(self, lr=DefaultRate(0.001), learning_rate_power=-0.5,
                 initial_accumulator_value=0.1,
                 l1_regularization_strength=0., l2_regularization_strength=0.,
                 l2_shrinkage_regularization_strength=0., decay=0., **kwargs):
        super(Ftrl, self).__init__(lr=lr, decay=decay, **kwargs)
        self.learning_rate_power = self._hyper('learning_rate_power', learning_rate_power,
                                               NON_POSITIVE)
        self.initial_accumulator_value = self._hyper('initial_accumulator_value',
                                                     initial_accumulator_value)
        self.l1_regularization_strength = self._hyper('l1_regularization_strength',
                                                      l1_regularization_strength)
        self.l2_regularization_strength = self._hyper('l2_regularization_strength',
                                                      l2_regularization_strength)
        self.l2_shrinkage_regularization_strength = self._hyper(
            'l2_shrinkage_regularization_strength', l2_shrinkage_regularization_strength)

    def _slot_initial_value(self, slot_name):
        return self.initial_accumulator_value if slot_name == 'accumulator' else 0.

    def _power(self, x):
        """x^(-learning_rate_power), with TF's exact sqrt for the default power."""
        if self.learning_rate_power == -0.5:
            return K.sqrt(x)
        return K.pow(x, -self.learning_rate_power)

    def _fused(self, p, g, slots, step):
        kernels, shrinkage = fused_kernels(), self.l2_shrinkage_regularization_strength
        strengths = (self.l1_regularization_strength, self.l2_regularization_strength)
        if shrinkage > 0:  # TF's FtrlOptimizer switches kernels the same way
            return kernels.apply_ftrl_v2(p, slots['accumulator'], slots['linear'], g, step.lr,
                                         *(strengths + (shrinkage, self.learning_rate_power)))
        return kernels.apply_ftrl(p, slots['accumulator'], slots['linear'], g, step.lr,
                                  *(strengths + (self.learning_rate_power,)))

    def _apply(self, p, g, slots, step):
        acc, linear = slots['accumulator'], slots['linear']
        new_acc = acc + K.square(g)
        sigma = (self._power(new_acc) - self._power(acc)) / step.lr
        # linear + (g + 2*l2_shrinkage*p) - sigma*p, written without a chain of additions:
        # grappler turns such chains into an AddN whose input order varies between processes.
        new_linear = (linear + g) - (sigma - 2. * self.l2_shrinkage_regularization_strength) * p
        quadratic = self._power(new_acc) / step.lr + 2. * self.l2_regularization_strength
        l1 = self.l1_regularization_strength
        new_p = K.switch(K.abs(new_linear) > l1,
                         (K.sign(new_linear) * l1 - new_linear) / quadratic,
                         K.zeros_like(p))
        return [(acc, new_acc), (linear, new_linear),
                (p, new_p)]


# ---- with decoupled weight decay ---------------------------------------------------------------

class DecoupledWeightDecay(Decays):
    """Decoupled weight decay built into a rule (`AdamW`, `SGDW`, `NadamW`): the same ops as
    `WeightDecay(rule, weight_decay, exclude=exclude_from_weight_decay, scale_by_lr=...)`, so
    the same results bitwise, with the rule's own `iterations` as the decay schedule's step
    (AdamW may run a parameter's decay and Adam's step as one op of the kernel library: the
    same arithmetic, see `_fold_decays`). See `keras_opt_legacy.WeightDecay` for the semantics;
    `decayed_params` lists the decayed parameters once the train function is built."""

    def _init_weight_decay(self, weight_decay, exclude_from_weight_decay, scale_by_lr):
        self.decay_term = DecoupledDecay(weight_decay, exclude_from_weight_decay,
                                         scale_by_lr=scale_by_lr, name='weight_decay')

    def prepare_step(self, grads, params, rate_factors=None):
        self.decay_term.select(params)  # an unmatched pattern fails here, before any state
        rule = super(DecoupledWeightDecay, self)
        return self.decay_term.prepare(
            lambda gradients: rule.prepare_step(gradients, params, rate_factors), grads,
            self.iterations, self.current_rate(), rate_factors, self.step_reads_parameters,
            self.fused, self._fold_decays)

    def _fold_decays(self, coefficients):
        """The ids of the parameters among `coefficients` ({p: decay coefficient}, those that
        decay first, in place) whose decay this rule's `_fused` applies in its own kernel pass
        (see `DecoupledDecay.build`): none here."""
        return set()

    def get_config(self):
        config = super(DecoupledWeightDecay, self).get_config()
        term = self.decay_term.get_config()
        config.update(weight_decay=term['rate'], exclude_from_weight_decay=term['exclude'],
                      scale_by_lr=term['scale_by_lr'])
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config['weight_decay'] = deserialize_rate(config.get('weight_decay', WEIGHT_DECAY))
        return super(DecoupledWeightDecay, cls).from_config(config)


WEIGHT_DECAY = 0.01  # PyTorch's AdamW default


@register
class AdamW(DecoupledWeightDecay, Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): Keras's Adam arguments, then
    `weight_decay` (a number or a schedule), `exclude_from_weight_decay` (regular expressions on
    parameter names) and `scale_by_lr` (True: PyTorch's AdamW, `p -= lr * weight_decay * p`;
    False: tf.contrib's AdamWOptimizer, `p -= weight_decay * p`)."""

    def __init__(self, lr=DefaultRate(0.001), beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.,
                 amsgrad=False, weight_decay=WEIGHT_DECAY, exclude_from_weight_decay=(),
                 scale_by_lr=True, **kwargs):
        super(AdamW, self).__init__(lr, beta_1, beta_2, epsilon, decay, amsgrad, **kwargs)
        self._init_weight_decay(weight_decay, exclude_from_weight_decay, scale_by_lr)
        self._folded = {}  # id(p) -> (p, decay coefficient), while a step is built

    def _fold_decays(self, coefficients):
        """The decay and Adam's step in one pass -- the kernel library's `adam_w`, bitwise the
        decay pass then ApplyAdam -- where the step is ApplyAdam's (fused=True, no amsgrad, not
        lazy, no constraint, the rule not changed by a subclass: `_fused` is called) and the op
        takes the variables."""
        self._folded = {}
        if self.fused and not self.amsgrad and not self.lazy and self._kernel_is_current() \
                and not ops.keras_update_patched():
            k = kernels.ops()
            self._folded = {id(p): (p, c) for p, c in coefficients.items()
                            if getattr(p, 'constraint', None) is None and
                            k.accepts('AdamW', p, self._slots[p]['m'], self._slots[p]['v'])}
        return set(self._folded)

    def _fused(self, p, g, slots, step):
        if id(p) not in self._folded:
            return super(AdamW, self)._fused(p, g, slots, step)
        _, coefficient = self._folded.pop(id(p))

        def separately():  # the decay pass, then ApplyAdam (the library went away meanwhile)
            decayed = _decay_in_place(p, coefficient)
            with tf.control_dependencies([decayed]):
                return [decayed, super(AdamW, self)._fused(p, g, slots, step)]
        return kernel_or(lambda k: k.adam_w(
            p, slots['m'], slots['v'], step.beta_1_power, step.beta_2_power, step.lr,
            self.beta_1, self.beta_2, self.epsilon, g, coefficient), separately)

    def update_ops(self, grads, params, rate_factors=None):
        updates = super(AdamW, self).update_ops(grads, params, rate_factors)
        if self._folded:  # `_fold_decays` offers only parameters that `_fused` steps
            raise AssertionError('AdamW: the decay of %s was left out of the step'
                                 % ', '.join(sorted(p.name for p, _ in self._folded.values())))
        return updates


@register
class SGDW(DecoupledWeightDecay, SGD):
    """SGD (momentum, Nesterov) with decoupled weight decay; arguments as `AdamW`'s."""

    def __init__(self, lr=DefaultRate(0.01), momentum=0., decay=0., nesterov=False,
                 weight_decay=WEIGHT_DECAY, exclude_from_weight_decay=(), scale_by_lr=True,
                 **kwargs):
        super(SGDW, self).__init__(lr, momentum, decay, nesterov, **kwargs)
        self._init_weight_decay(weight_decay, exclude_from_weight_decay, scale_by_lr)


@register
class NadamW(DecoupledWeightDecay, Nadam):
    """Nadam with decoupled weight decay; arguments as `AdamW`'s."""

    def __init__(self, lr=DefaultRate(0.002), beta_1=0.9, beta_2=0.999, epsilon=None,
                 schedule_decay=0.004, decay=0., weight_decay=WEIGHT_DECAY,
                 exclude_from_weight_decay=(), scale_by_lr=True, **kwargs):
        super(NadamW, self).__init__(lr, beta_1, beta_2, epsilon, schedule_decay, decay, **kwargs)
        self._init_weight_decay(weight_decay, exclude_from_weight_decay, scale_by_lr)
