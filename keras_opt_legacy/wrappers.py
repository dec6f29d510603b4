"""Wrappers that compose with any optimizer: keras_opt_legacy's, each other, and Keras 2.2.4's
built-ins (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam).

A wrapper drives its inner optimizer through `inner_step`, which for a Keras built-in runs its
`get_updates` once with the gradient the wrapper supplies (set on that one instance, removed in a
`finally`) and re-creates its assignments wherever the wrapper needs them, e.g. inside a `tf.cond`
branch. Nothing global is patched.
"""
import numbers

import tensorflow as tf
from keras import backend as K
from keras import optimizers as keras_optimizers

from . import compat
from .base import (OptimizerBase, PreparedStep, checked_number, clip_gradients, rate_tensor,
                   register, resolve_gradients)


def as_optimizer(optimizer):
    """An optimizer instance from an instance, a name ('adam') or a config, or a clear error."""
    if isinstance(optimizer, keras_optimizers.TFOptimizer):
        raise TypeError('cannot wrap a TFOptimizer (a tf.train optimizer): its state is not '
                        'visible to Keras. Use a keras_opt_legacy or Keras optimizer instead.')
    compat.check_standalone(optimizer)
    if isinstance(optimizer, (str, dict)):
        optimizer = keras_optimizers.get(optimizer)
    if not isinstance(optimizer, keras_optimizers.Optimizer):
        raise TypeError('expected an optimizer (keras_opt_legacy, Keras, a name like "adam" or a '
                        'config), got %r' % (optimizer,))
    return optimizer


def inner_step(optimizer, grads, params):
    """`prepare_step` of any optimizer, with its own clipping applied to `grads` (a list, or a
    function returning it: see `OptimizerBase.prepare_step`)."""
    if isinstance(optimizer, OptimizerBase):
        return optimizer.prepare_step(
            lambda: optimizer.clip_gradients(resolve_gradients(grads)), params)
    return _keras_builtin_step(optimizer, grads, params)


def inner_state(optimizer, params):
    """`(names, variables)` of all of `optimizer`'s state (after `inner_step`)."""
    if isinstance(optimizer, OptimizerBase):
        return optimizer.weight_names, optimizer.weights
    return compat.keras_state(optimizer, params)


def _keras_builtin_step(optimizer, grads, params):
    def clipped():
        return clip_gradients(resolve_gradients(grads), getattr(optimizer, 'clipnorm', None),
                              getattr(optimizer, 'clipvalue', None))
    # This first call creates Keras's slots, outside any control flow; its ops never run.
    _, slots = compat.keras_get_updates(optimizer, clipped(), params)

    def build():
        # Keras's update ops again, here (in a wrapper's tf.cond branch, they run only when it
        # applies an update), on the same slots. Its assignments re-created: all new values
        # first (a variable may be read in several places), and counters last (Keras 2.2.4
        # races reading `iterations` against its increment).
        updates, _ = compat.keras_get_updates(optimizer, clipped(), params, slots)
        assignments = [_assignment(update, optimizer) for update in updates]
        with tf.control_dependencies([value for _, _, value, _ in assignments]):
            ops = [assign(target, value) for assign, target, value, increment in assignments
                   if not increment]
        with tf.control_dependencies(ops):
            ops += [assign(target, value) for assign, target, value, increment in assignments
                    if increment]
        return ops
    return PreparedStep(build)


def _assignment(update, optimizer):
    """`(assign function, target, value, increment?)` of one of Keras's updates."""
    assignment = compat.keras_assignment(update)
    if assignment is None:
        raise TypeError('cannot wrap %s: its update %r is not an assignment'
                        % (type(optimizer).__name__, update))
    return assignment


def positive_integer(name, value):
    """`value` as an int, or raise TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError('%s must be a positive integer, got %r' % (name, value))
    if value < 1:
        raise ValueError('%s must be a positive integer, got %r' % (name, value))
    return int(value)


def select(condition, if_true, if_false):
    """Element-wise choice by a scalar boolean (tf.where needs a condition of the value's shape)."""
    return tf.where(tf.fill(tf.shape(if_true), condition), if_true, if_false)


class Wrapper(OptimizerBase):
    """Base of the wrappers: holds the inner optimizer, delegates the learning rate to it, lists
    `[iterations] + own slots + the inner optimizer's state` as `weights`."""

    wraps_inject = False  # whether it can wrap an optimizer that needs opt.inject(model)

    def __init__(self, optimizer):
        super(Wrapper, self).__init__()
        self.optimizer = as_optimizer(optimizer)
        if getattr(self.optimizer, 'needs_inject', False) and not self.wraps_inject:
            raise ValueError('%s drives the train function itself (opt.inject(model)), so it must '
                             'be the outermost optimizer: it cannot be wrapped in %s'
                             % (type(self.optimizer).__name__, type(self).__qualname__))
        self._slots = {}
        self._scalars = []
        self.weight_names = []
        with K.name_scope(type(self).__qualname__) as scope:
            self._scope = scope
            self.iterations = K.variable(0, dtype='int64', name='iterations')

    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    learning_rate = lr

    def current_rate(self):
        return rate_tensor(self.optimizer)

    def _prepare_inner(self, grads, params):
        """Prepare the inner step (own slots already created) and list all state."""
        step = inner_step(self.optimizer, grads, params)
        self._list_state([('iterations', self.iterations)] + self._scalars, params,
                         inner=inner_state(self.optimizer, params))
        return step

    def get_config(self):
        return {'optimizer': keras_optimizers.serialize(self.optimizer)}

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
    MODEL_UPDATES = ('every_batch', 'with_update')

    def __init__(self, optimizer, steps, model_updates='every_batch'):
        steps = positive_integer('steps', steps)
        if model_updates not in self.MODEL_UPDATES:
            raise ValueError('model_updates must be one of %s, got %r'
                             % (', '.join(map(repr, self.MODEL_UPDATES)), model_updates))
        super(GradientAccumulation, self).__init__(optimizer)
        self.steps = steps
        self.model_updates = model_updates
        self._injecting = False

    @property
    def needs_inject(self):
        return self.model_updates == 'with_update'

    def get_updates(self, loss, params):
        if self.needs_inject and not self._injecting:
            raise RuntimeError(
                "GradientAccumulation(model_updates='with_update') runs the model's state updates "
                'itself: call opt.inject(model) after model.compile (again after every recompile) '
                'before training. To load a saved model, use keras_opt_legacy.load_model(path), '
                'which injects.')
        return super(GradientAccumulation, self).get_updates(loss, params)

    def inject(self, model):
        """Install a train function running the model's state updates only on the batches that
        apply an update (`model_updates='with_update'`): a separate graph function, run on that
        batch before the step itself, so it sees the same weights and batch statistics."""
        compat.check_compiled_with(model, self, 'call opt.inject(model)')
        inputs, outputs, state_updates, metric_updates, kwargs = compat.train_function_parts(model)
        self._injecting = True
        try:
            updates = compat.training_updates(model)
        finally:
            self._injecting = False
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
            with tf.control_dependencies([step]):
                return [step, K.update_add(self.iterations, 1)]
        return PreparedStep(build, applies=applies)

    def get_config(self):
        config = super(GradientAccumulation, self).get_config()
        config.update(steps=self.steps, model_updates=self.model_updates)
        return config


@register
class Lookahead(Wrapper):
    """Lookahead (Zhang et al. 2019): the inner optimizer moves the fast weights; every
    `sync_period` applied updates, slow += slow_step * (fast - slow) and fast = slow.

    `iterations` counts applied updates of the inner optimizer (under gradient accumulation, real
    updates); the slow weights are in `weights` and start from the parameters at the first step
    (and at the first step after a reset).
    """

    slot_names = ('slow',)

    def __init__(self, optimizer, sync_period=5, slow_step=0.5):
        sync_period = positive_integer('sync_period', sync_period)
        slow_step = checked_number('slow_step', slow_step,
                                   (lambda v: 0 < v <= 1, 'in (0, 1]'))
        super(Lookahead, self).__init__(optimizer)
        self.sync_period, self.slow_step = sync_period, slow_step
        # 0 until the slow weights hold the parameters (again after a reset).
        self.started = self._add_scalar('started', 0, dtype='int64')

    def prepare_step(self, grads, params):
        params = self._create_slots(params)
        inner = self._prepare_inner(grads, params)
        slows = [self._slots[p]['slow'] for p in params]
        applies = inner.applies if inner.applies is not None else tf.constant(True)

        def build():
            first = K.equal(self.started, 0)
            start = [K.update(s, select(first, p, s)) for p, s in zip(params, slows)]
            with tf.control_dependencies(start):
                inner_ops = inner() + [K.update(self.started, 1)]
            count = self.iterations + K.cast(applies, 'int64')
            sync_now = tf.logical_and(applies, K.equal(count % self.sync_period, 0))

            def sync():
                ops = []
                for p, s in zip(params, slows):
                    new_slow = s + self.slow_step * (p - s)
                    with tf.control_dependencies([new_slow]):
                        ops += [K.update(s, new_slow), K.update(p, new_slow)]
                return tf.group(*ops)

            with tf.control_dependencies(inner_ops):
                synced = tf.cond(sync_now, sync, tf.no_op)
            with tf.control_dependencies([synced]):
                increment = K.update(self.iterations, count)
            return start + inner_ops + [synced, increment]
        return PreparedStep(build, applies=inner.applies)

    def get_config(self):
        config = super(Lookahead, self).get_config()
        config.update(sync_period=self.sync_period, slow_step=self.slow_step)
        return config


@register
class SkipNonFinite(Wrapper):
    """Skip every step whose gradients hold a NaN or an Inf: the parameters and all of the inner
    optimizer's state stay untouched, and `skipped` (in `weights`) counts the skipped steps.

    Around GradientAccumulation it checks each small batch (a bad one is left out of the
    accumulation); inside, it checks the accumulated gradient."""

    def __init__(self, optimizer):
        super(SkipNonFinite, self).__init__(optimizer)
        self.skipped = self._add_scalar('skipped', 0, dtype='int64')

    def prepare_step(self, grads, params):
        params = self._create_slots(params)
        grads = resolve_gradients(grads)
        finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.is_finite(getattr(g, 'values', g)))
                                         for g in grads]))
        inner = self._prepare_inner(grads, params)

        def build():
            step = tf.cond(finite, lambda: tf.group(*inner()),
                           lambda: tf.group(K.update_add(self.skipped, 1)))
            with tf.control_dependencies([step]):
                return [step, K.update_add(self.iterations, 1)]
        applies = finite if inner.applies is None else tf.logical_and(finite, inner.applies)
        return PreparedStep(build, applies=applies)
