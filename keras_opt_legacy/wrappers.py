"""Wrappers that compose with any optimizer: keras_opt_legacy's, each other, and Keras 2.2.4's
built-ins (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam), through `builtin`.

Writing a wrapper: subclass `Wrapper`, declare `slot_names` (per-parameter state) and scalars
(`_add_scalar`) as an optimizer does, and implement `prepare_step(grads, params)`: create the
slots (`self._create_slots`), prepare the inner step (`self._prepare_inner`), and return a
`PreparedStep` whose function builds the inner ops plus the wrapper's own, with `iterations`
counted last (`ops.count_after`, or `ops.every_kth_update` for "every k applied updates").
"""
import tensorflow as tf
from keras import backend as K
from keras import optimizers as keras_optimizers

from . import builtin, checks, compat, ops
from .base import OptimizerBase, PreparedStep, label, register, resolve_gradients


class Wrapper(OptimizerBase):
    """Base of the wrappers: holds the inner optimizer (any: see `builtin`), delegates the
    learning rate to it, lists `[iterations] + own scalars + own slots + the inner optimizer's
    state` as `weights`."""

    wraps_inject = False  # whether it can wrap an optimizer that needs opt.inject(model)
    config_keys = ()  # constructor arguments besides `optimizer`, kept in attributes of their name

    def __init__(self, optimizer):
        optimizer = builtin.as_optimizer(optimizer)
        if getattr(optimizer, 'needs_inject', False) and not self.wraps_inject:
            raise ValueError('%s drives the train function itself (opt.inject(model)), so it must '
                             'be the outermost optimizer: it cannot be wrapped in %s'
                             % (type(optimizer).__name__, label(type(self))))
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

    def _prepare_inner(self, grads, params):
        """Prepare the inner optimizer's step and list all state (own slots created first)."""
        step = builtin.prepare_step(self.optimizer, grads, params)
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

    def prepare_step(self, grads, params, reduce=None):
        """`reduce` (given by `distributed.DistributedOptimizer`): a function of the mean
        gradient, e.g. an allreduce over workers, run only on the batches that apply an update."""
        params = self._create_slots(params)
        accumulators = [self._slots[p]['accumulator'] for p in params]
        grads = resolve_gradients(grads)
        applies = K.equal(self.iterations % self.steps, self.steps - 1)

        def mean():  # built inside the update branch below: it runs only on that batch
            means = [(a + g) / self.steps for a, g in zip(accumulators, grads)]
            return means if reduce is None else reduce(means)
        inner = self._prepare_inner(mean, params)

        def update():
            inner_ops = inner()
            with tf.control_dependencies(inner_ops):
                return tf.group(*(inner_ops + [K.update(a, tf.zeros_like(a))
                                               for a in accumulators]))

        def accumulate():  # in place: a + g without a temporary or a copy (update_ops' `plus`)
            return tf.group(*[K.update_add(a, g) for a, g in zip(accumulators, grads)])

        def build():
            step = tf.cond(applies, update, accumulate)
            return [step, ops.count_after(self.iterations, [step])]
        return PreparedStep(build, applies=applies)



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

    def prepare_step(self, grads, params):
        params = self._create_slots(params)
        inner = self._prepare_inner(grads, params)
        slows = [self._slots[p]['slow'] for p in params]

        def sync():  # slow += slow_step * (fast - slow); fast = slow, within p's constraint
            return ops.assign_all([(v, x) for p, s in zip(params, slows)
                                   for x in [ops.constrained(p, s + self.slow_step * (p - s))]
                                   for v in (s, p)])

        def build():
            first = K.equal(self.started, 0)
            start = [K.update(s, ops.select(first, p, s)) for p, s in zip(params, slows)]
            with tf.control_dependencies(start):
                inner_ops = inner() + [K.update(self.started, 1)]
            return start + inner_ops + ops.every_kth_update(
                self.iterations, self.sync_period, inner.applies, sync, after=inner_ops)
        return PreparedStep(build, applies=inner.applies)



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

    def prepare_step(self, grads, params):
        params = self._create_slots(params)
        grads = resolve_gradients(grads)
        finite = self._finite = tf.reduce_all(tf.stack([tf.constant(True)] + [
            tf.reduce_all(tf.is_finite(getattr(g, 'values', g))) for g in grads]))
        inner = self._prepare_inner(grads, params)

        def build():
            step = tf.cond(finite, lambda: tf.group(*inner()),
                           lambda: tf.group(K.update_add(self.skipped, 1)))
            return [step, ops.count_after(self.iterations, [step])]
        applies = finite if inner.applies is None else tf.logical_and(finite, inner.applies)
        return PreparedStep(build, applies=applies)
