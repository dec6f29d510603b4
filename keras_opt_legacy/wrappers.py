"""Wrappers that compose with any optimizer: keras_opt_legacy's, each other, and Keras 2.2.4's
built-ins (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam), through `builtin`.

Writing a wrapper: subclass `Wrapper`, declare `slot_names` (per-parameter state) and scalars
(`_add_scalar`) as an optimizer does, and implement `prepare_step(grads, params)`: create the
slots (`self._create_slots`), prepare the inner step (`self._prepare_inner`), and return a
`PreparedStep` whose function builds the inner ops plus the wrapper's own, with `iterations`
counted last (`ops.count_after`, or `ops.every_kth_update` for "every k applied updates").
"""
import collections

import tensorflow as tf
from keras import backend as K
from keras import optimizers as keras_optimizers

from . import builtin, checks, compat, ops
from .decay import DecoupledDecay, Decays, check_all_match, deserialize_rate, patterns
from .base import OptimizerBase, PreparedStep, label, register, resolve_gradients


def chain(optimizer):
    """`optimizer`, then the optimizer it wraps, and so on to the innermost one."""
    while True:
        yield optimizer
        if not isinstance(optimizer, Wrapper):
            return
        optimizer = optimizer.optimizer


class Wrapper(OptimizerBase):
    """Base of the wrappers: holds the inner optimizer (any: see `builtin`), delegates the
    learning rate to it, lists `[iterations] + own scalars + own slots + the inner optimizer's
    state` as `weights`."""

    wraps_inject = False  # whether it can wrap an optimizer that needs opt.inject(model)
    # Whether a weight average (averaging.Averaging) may be inside: not in a wrapper that
    # accumulates, or changes the parameters after its inner step (the average would miss it).
    averages_inside = False
    is_average = False
    config_keys = ()  # constructor arguments besides `optimizer`, kept in attributes of their name

    def __init__(self, optimizer):
        optimizer = builtin.as_optimizer(optimizer)
        if getattr(optimizer, 'needs_inject', False) and not self.wraps_inject:
            raise ValueError('%s drives the train function itself (opt.inject(model)), so it must '
                             'be the outermost optimizer: it cannot be wrapped in %s'
                             % (type(optimizer).__name__, label(type(self))))
        for inside in chain(optimizer):
            if getattr(inside, 'is_average', False) and not self.averages_inside:
                raise ValueError(
                    '%s cannot be inside %s: an average follows the parameters as the model '
                    'sees them after each real update, and %s accumulates or changes them '
                    'around its inner step. Put the average outside: %s(%s(...))'
                    % (label(type(inside)), label(type(self)), label(type(self)),
                       label(type(inside)), label(type(self))))
        super(Wrapper, self).__init__()
        self.optimizer = optimizer

    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    learning_rate = lr

    def current_rate(self):
        return builtin.rate(self.optimizer)

    @property
    def takes_rate_factors(self):
        return builtin.takes_rate_factors(self.optimizer)

    @property
    def step_reads_parameters(self):
        return builtin.step_reads_parameters(self.optimizer)

    def _prepare_inner(self, grads, params, rate_factors=None):
        """Prepare the inner optimizer's step (`rate_factors` passed on) and list all state (own
        slots created first)."""
        step = builtin.prepare_step(self.optimizer, grads, params, rate_factors)
        self._list_state(params, inner=builtin.inner_state(self.optimizer, params))
        return step

    def get_config(self):
        config = {'optimizer': keras_optimizers.serialize(self.optimizer)}
        config.update((key, getattr(self, key)) for key in self.config_keys)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config['optimizer'] = compat.deserialize_optimizer(config['optimizer'])
        return cls(**config)


@register
class GradientAccumulation(Wrapper):
    """Apply `optimizer` once every `steps` batches with the mean of their gradients, which is
    the update of one batch `steps` times larger (the loss is a mean over samples).

    In between, nothing of the inner optimizer moves: parameters, slots, its `iterations` (so bias
    corrections and schedules count real updates). `iterations` here counts batches; `weights` are
    `[iterations] + one accumulator per parameter + the inner optimizer's state`.

    The model's own state updates (BatchNorm moving averages) are Keras's business, not the
    optimizer's: by default (`model_updates='every_batch'`) they run on every small batch, so the
    moving averages see every sample but take `steps` times as many averaging steps as the large
    batch would. With `model_updates='with_update'` they run only on the batches that apply an
    update, once per real update like the large batch (from that batch's statistics); this needs
    `opt.inject(model)` after `model.compile`, and training without it raises an error saying so.
    Stateful metrics run on every batch either way.
    """

    slot_names = ('accumulator',)
    config_keys = ('steps', 'model_updates')
    MODEL_UPDATES = ('every_batch', 'with_update')

    inject_reason = "(model_updates='with_update') runs the model's state updates itself"

    def __init__(self, optimizer, steps, model_updates='every_batch'):
        steps = checks.positive_integer('steps', steps)
        model_updates = checks.one_of('model_updates', model_updates, self.MODEL_UPDATES)
        super(GradientAccumulation, self).__init__(optimizer)
        self.steps = steps
        self.model_updates = model_updates

    @property
    def needs_inject(self):
        return self.model_updates == 'with_update'

    def inject(self, model):
        """Install a train function running the model's state updates only on the batches that
        apply an update (`model_updates='with_update'`): a separate graph function, run on that
        batch before the step itself, so it sees the same weights and batch statistics."""
        inputs, outputs, state_updates, metric_updates, kwargs, updates = \
            self._injected_parts(model)
        step = K.function(inputs, outputs, updates=updates + metric_updates,
                          name='train_function', **kwargs)
        state = compat.updates_function(inputs, state_updates, 'model_state_updates')

        def train_function(ins):
            if state_updates and K.get_value(self.iterations) % self.steps == self.steps - 1:
                state(ins)
            return step(ins)
        compat.install_train_function(model, train_function)

    def prepare_step(self, grads, params, rate_factors=None, reduce=None):
        """`reduce` (given by `distributed.DistributedOptimizer`): a function of the mean
        gradient, e.g. an allreduce over workers, run only on the batches that apply an update."""
        params = self._create_slots(params)
        accumulators = [self._slots[p]['accumulator'] for p in params]
        grads = resolve_gradients(grads)
        applies = K.equal(self.iterations % self.steps, self.steps - 1)

        def mean():  # built inside the update branch below: it runs only on that batch
            means = [(a + g) / self.steps for a, g in zip(accumulators, grads)]
            return means if reduce is None else reduce(means)
        inner = self._prepare_inner(mean, params, rate_factors)

        def update():
            inner_ops = inner()
            with tf.control_dependencies(inner_ops):
                return tf.group(*(inner_ops + [K.update(a, tf.zeros_like(a))
                                               for a in accumulators]))

        def accumulate():  # in place: a + g without a temporary or a copy (update_ops' `plus`)
            return tf.group(*[_add_in_place(a, g) for a, g in zip(accumulators, grads)])

        def build():
            step = tf.cond(applies, update, accumulate)
            return [step, ops.count_after(self.iterations, [step])]
        return PreparedStep(build, applies=applies)



def _add_in_place(variable, g):
    """`variable += g`; a sparse `g` (IndexedSlices) on its rows only, duplicates summed first
    (so the sum is the dense one's, bit for bit)."""
    if isinstance(g, tf.IndexedSlices):
        values, indices = ops.deduplicate(g)
        return tf.scatter_add(variable, indices, values)
    return K.update_add(variable, g)


@register
class Lookahead(Wrapper):
    """Lookahead (Zhang et al. 2019): the inner optimizer moves the fast weights; every
    `sync_period` applied updates, slow += slow_step * (fast - slow) and fast = slow.

    `iterations` counts applied updates of the inner optimizer (under gradient accumulation, real
    updates); the slow weights are in `weights` and start from the parameters at the first step
    (and at the first step after a reset).
    """

    slot_names = ('slow',)
    config_keys = ('sync_period', 'slow_step')

    def __init__(self, optimizer, sync_period=5, slow_step=0.5):
        sync_period = checks.positive_integer('sync_period', sync_period)
        slow_step = checks.checked_number('slow_step', slow_step, checks.POSITIVE_UNIT_INTERVAL)
        super(Lookahead, self).__init__(optimizer)
        self.sync_period, self.slow_step = sync_period, slow_step
        # 0 until the slow weights hold the parameters (again after a reset).
        self.started = self._add_scalar('started', 0, dtype='int64')

    def prepare_step(self, grads, params, rate_factors=None):
        params = self._create_slots(params)
        inner = self._prepare_inner(grads, params, rate_factors)
        slows = [self._slots[p]['slow'] for p in params]

        def sync():  # slow += slow_step * (fast - slow); fast = slow, within p's constraint
            return ops.assign_all([(v, x) for p, s in zip(params, slows)
                                   for x in [ops.constrained(p, s + self.slow_step * (p - s))]
                                   for v in (s, p)])

        def build():
            start = start_from_parameters(self.started, params, slows)
            with tf.control_dependencies(start):
                inner_ops = inner()
            return start + inner_ops + ops.every_kth_update(
                self.iterations, self.sync_period, inner.applies, sync, after=inner_ops)
        return PreparedStep(build, applies=inner.applies)



def start_from_parameters(started, params, copies):
    """The ops that, while the int64 flag `started` is 0 (the first step, and the first after
    a reset), copy the parameters into `copies` (before the step), then set the flag."""
    copied = tf.cond(K.equal(started, 0),  # a branch: no copy on the other steps
                     lambda: tf.group(*[K.update(c, p) for p, c in zip(params, copies)]),
                     tf.no_op)
    with tf.control_dependencies([copied]):
        return [copied, K.update(started, 1)]


@register
class SkipNonFinite(Wrapper):
    """Skip every step whose gradient holds a NaN or an Inf: the parameters and all of the inner
    optimizer's state stay untouched, and `skipped` (in `weights`) counts the skipped steps.
    The test is on the gradient: a non-finite loss with a finite gradient (an Inf label under
    'mae') is applied.

    The model's own state updates (BatchNorm's moving statistics) are Keras's: by default
    (`model_updates='every_batch'`) they run on every batch, a skipped one too, so a NaN batch
    makes the moving statistics NaN. With `model_updates='when_finite'` they run only on the
    batches whose gradient is finite; this needs `opt.inject(model)` after `model.compile`
    (again after every recompile) and costs one more forward and backward pass per batch (the
    gradient is tested before the batch is trained on).

    Around GradientAccumulation it checks each small batch (a bad one is left out of the
    accumulation); inside, it checks the accumulated gradient."""

    config_keys = ('model_updates',)
    MODEL_UPDATES = ('every_batch', 'when_finite')
    averages_inside = True
    inject_reason = "(model_updates='when_finite') runs the model's state updates itself"

    def __init__(self, optimizer, model_updates='every_batch'):
        model_updates = checks.one_of('model_updates', model_updates, self.MODEL_UPDATES)
        super(SkipNonFinite, self).__init__(optimizer)
        self.model_updates = model_updates
        self.skipped = self._add_scalar('skipped', 0, dtype='int64')
        self._finite = None  # the test of the last prepared step

    @property
    def needs_inject(self):
        return self.model_updates == 'when_finite'

    def inject(self, model):
        """Install a train function that first tests the batch's gradient, then trains on it
        with the model's state updates if it is finite, without them if not."""
        inputs, outputs, state_updates, metric_updates, kwargs, updates = \
            self._injected_parts(model)
        trains = [K.function(inputs, outputs, updates=state + updates + metric_updates,
                             name=name, **kwargs)
                  for state, name in (([], 'train_skipping'), (state_updates, 'train_function'))]
        probe = K.function(inputs, [self._finite], name='gradient_is_finite')

        def train_function(ins):
            return trains[bool(probe(ins)[0])](ins)
        compat.install_train_function(model, train_function)

    def prepare_step(self, grads, params, rate_factors=None):
        params = self._create_slots(params)
        grads = resolve_gradients(grads)
        finite = self._finite = tf.reduce_all(tf.stack([tf.constant(True)] + [
            tf.reduce_all(tf.is_finite(getattr(g, 'values', g))) for g in grads]))
        inner = self._prepare_inner(grads, params, rate_factors)

        def build():
            step = tf.cond(finite, lambda: tf.group(*inner()),
                           lambda: tf.group(K.update_add(self.skipped, 1)))
            return [step, ops.count_after(self.iterations, [step])]
        applies = finite if inner.applies is None else tf.logical_and(finite, inner.applies)
        return PreparedStep(build, applies=applies)


@register
class WeightDecay(Decays, Wrapper):
    """Decoupled weight decay (Loshchilov & Hutter 2019) over any optimizer: after each real
    update, `p <- inner_step(p) - f * rate * p_old` for every decayed parameter, `p_old` its value
    before the step, `f` the update's learning rate (`scale_by_lr=True`, the convention of
    PyTorch's AdamW and bert4keras) or 1 (`scale_by_lr=False`, tf.contrib's AdamWOptimizer).

    `rate` is a number or a schedule (`keras_opt_legacy.schedules`) of the count of real updates
    before this one (`iterations`, which counts them). `exclude` / `include`: regular expressions
    searched in each parameter's name ('dense_1/bias:0'): a parameter decays if it matches
    `include` (None: all) and nothing of `exclude`, e.g. `exclude=['bias', 'LayerNorm',
    'layer_norm']`; a pattern that matches no parameter is a ValueError naming it. Once the train
    function is built, `decayed_params` lists the decayed parameters.

    Under GradientAccumulation the decay happens on the batches that apply an update; under
    SkipNonFinite not on a skipped batch. Inside LearningRateMultipliers, `f` is the parameter's
    own rate (its factor included), as PyTorch's parameter groups have it. The decay is applied
    first, in place and in one pass, then the inner step (equal to the formula up to float
    rounding: the inner step only subtracts from `p`); for a constrained parameter, or under an
    optimizer whose step reads the parameter (Ftrl), in the formula's order: subtracted after the
    (constrained) inner step, as bert4keras does.
    """

    def __init__(self, optimizer, rate, exclude=(), include=None, scale_by_lr=True):
        term = DecoupledDecay(rate, exclude, include, scale_by_lr)
        super(WeightDecay, self).__init__(optimizer)
        self.decay_term = term

    def prepare_step(self, grads, params, rate_factors=None):
        self.decay_term.select(params)  # an unmatched pattern fails here, before any state exists
        params = self._create_slots(params)
        decayed = self.decay_term.prepare(
            lambda gradients: self._prepare_inner(gradients, params, rate_factors), grads,
            self.iterations, builtin.rate(self.optimizer), rate_factors,
            self.step_reads_parameters, getattr(self.optimizer, 'fused', True))

        def build():
            done = decayed()
            applied = 1 if decayed.applies is None else K.cast(decayed.applies, 'int64')
            return done + [ops.count_after(self.iterations, done, amount=applied)]
        return PreparedStep(build, applies=decayed.applies)

    def get_config(self):
        config = super(WeightDecay, self).get_config()
        config.update(self.decay_term.get_config())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config['rate'] = deserialize_rate(config['rate'])
        return super(WeightDecay, cls).from_config(config)


@register
class LearningRateMultipliers(Wrapper):
    """A learning rate per parameter: `multipliers` maps regular expressions, searched in each
    parameter's name ('dense_1/kernel:0'), to factors (a dict, or a list of (pattern, factor)
    pairs; the first matching pattern wins; unmatched parameters keep factor 1; a pattern that
    matches no parameter is a ValueError naming it).

    Each parameter takes exactly the step the inner optimizer would take with its learning rate
    times the factor, legacy decay, schedules and bias corrections included, in one update per
    batch: the inner `iterations` counts each batch once. Works over every rule of the package
    (Ftrl too: the rate is given to the rule, not applied to its result), the wrappers, and
    Keras's built-ins (their update is built once per distinct factor with the rate scaled;
    each parameter and its slots take their own factor's, the counters are taken once). Once
    the train function is built, `factors` maps each parameter's name to its factor.
    See `layer_wise_decay` for transformers' layer-wise rate decay."""

    config_keys = ('multipliers',)
    averages_inside = True

    def __init__(self, optimizer, multipliers):
        optimizer = builtin.as_optimizer(optimizer)
        if not builtin.takes_rate_factors(optimizer):
            raise ValueError('%s cannot step parameters with learning rates of their own (its '
                             'prepare_step takes no rate_factors)' % label(type(optimizer)))
        multipliers = _multipliers(multipliers)
        rule = list(chain(optimizer))[-1]
        zero = [pattern for pattern, factor in multipliers.items() if factor == 0]
        if zero and getattr(rule, 'lr_check', None) is checks.POSITIVE:
            raise ValueError('multipliers: %s cannot take a zero learning rate (its rule divides '
                             'by it), got factor 0 for %s' % (label(type(rule)), zero))
        super(LearningRateMultipliers, self).__init__(optimizer)
        self.multipliers = multipliers
        self._patterns = [(patterns('multipliers', pattern)[0], factor)
                          for pattern, factor in multipliers.items()]
        self.factors = {}

    def prepare_step(self, grads, params, rate_factors=None):
        params = list(params)
        check_all_match('multipliers', [c for c, _ in self._patterns], params)
        factors = {p: next((k for c, k in self._patterns if c.search(p.name)), 1.) *
                   (rate_factors or {}).get(p, 1.) for p in params}
        self.factors = collections.OrderedDict((p.name, k) for p, k in factors.items())
        params = self._create_slots(params)
        inner = self._prepare_inner(grads, params, factors)

        def build():
            inner_ops = inner()
            return inner_ops + [ops.count_after(self.iterations, inner_ops)]
        return PreparedStep(build, applies=inner.applies)


def _multipliers(multipliers):
    """An ordered {pattern: factor} from a dict or (pattern, factor) pairs, checked."""
    pairs = list(multipliers.items() if isinstance(multipliers, dict) else multipliers)
    checked = collections.OrderedDict()
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError('multipliers: expected (pattern, factor) pairs, got %r' % (pair,))
        pattern, factor = pair
        patterns('multipliers', pattern)
        if pattern in checked:
            raise ValueError('multipliers: the pattern %r is given twice' % pattern)
        checked[pattern] = checks.checked_number('multiplier of %r' % pattern, factor,
                                                 checks.NON_NEGATIVE, K.floatx())
    if not checked:
        raise ValueError('multipliers: no (pattern, factor) given')
    return checked


def layer_wise_decay(patterns, decay, depth=None):
    """The `multipliers` of transformers' layer-wise learning-rate decay, for
    `LearningRateMultipliers`: the parameters matching `patterns[i]` (in depth order, the lowest
    layer -- the embeddings -- first) get `decay ** (depth - i)`; `depth` defaults to
    `len(patterns)`, so that the top pattern gets `decay` and the parameters no pattern
    matches (the task's head) keep factor 1. Anchor the patterns ('encoder_1/', not
    'encoder_1', which also matches 'encoder_10').

    ELECTRA's rates (lr * decay ** (n_layers + 2 - depth), embeddings at depth 0, layer i at
    i + 1, the head at n_layers + 2): `layer_wise_decay([embeddings] + layers, decay,
    depth=n_layers + 2)`."""
    patterns = list(patterns)
    decay = checks.checked_number('decay', decay, checks.NON_NEGATIVE)
    depth = len(patterns) if depth is None else checks.integer('depth', depth, minimum=0)
    return collections.OrderedDict((pattern, decay ** (depth - i))
                                   for i, pattern in enumerate(patterns))
