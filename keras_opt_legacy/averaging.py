"""Weight averaging over any optimizer: an exponential moving average of the parameters, and
stochastic weight averaging (Izmailov et al. 2018), kept in `weights` (saved, loaded, reset,
broadcast like all state), swapped into the model for evaluation (`swap_weights`), and
`update_batch_norm` for the BatchNorm statistics of the averaged weights.
"""
import contextlib

import numpy as np
import tensorflow as tf
from keras import backend as K

from . import builtin, checks, compat, ops
from .base import PreparedStep, label, register
from .wrappers import Wrapper, chain, start_from_parameters


class Averaging(Wrapper):
    """Base of the averaging wrappers: an 'average' slot per parameter, updated after each real
    update of the inner optimizer (`_average_ops`); `iterations` counts real updates.

    An average follows the parameters as the model sees them after each update, so it must be
    outside the wrappers that accumulate or change the parameters after their inner step
    (GradientAccumulation, Lookahead, WeightDecay, PeriodicAveraging): those refuse to wrap it.
    SkipNonFinite, LearningRateMultipliers and DistributedOptimizer may wrap it."""

    slot_names = ('average',)
    is_average = True
    averages_inside = True  # an average of an average's parameters: each follows them

    def __init__(self, optimizer):
        super(Averaging, self).__init__(optimizer)
        self._params = []

    def prepare_step(self, grads, params, rate_factors=None):
        params = self._params = self._create_slots(params)
        inner = self._prepare_inner(grads, params, rate_factors)
        averages = [self._slots[p]['average'] for p in params]
        started = self._started_before(params, averages)

        def build():
            first = started() if started else []
            with tf.control_dependencies(first):
                inner_ops = inner()
            t = K.cast(self.iterations, K.floatx()) + 1  # this real update's number
            return first + inner_ops + ops.every_kth_update(
                self.iterations, 1, inner.applies,
                lambda: self._average_ops(params, averages, t), after=inner_ops)
        return PreparedStep(build, applies=inner.applies)

    def _started_before(self, params, averages):
        """A function building the ops that run before the inner step, or None."""
        return None

    def _average_ops(self, params, averages, t):
        """The ops updating `averages` after the real update number `t` (a float tensor), with
        `params` holding the updated parameters."""
        raise NotImplementedError

    # ---- the averaged weights ----------------------------------------------------------------

    def _has_average(self):
        """Whether the averages hold something other than the parameters themselves."""
        raise NotImplementedError

    def average_values(self):
        """The averaged parameters as NumPy arrays, in the order of the model's trainable
        weights (the parameters themselves where there is no average yet)."""
        if not self._params:
            raise RuntimeError('%s has no averages yet: they are built by the first training step '
                               '(fit, train_on_batch)' % label(type(self)))
        source = [self._slots[p]['average'] for p in self._params] if self._has_average() \
            else self._params
        return K.batch_get_value(source)

    def _params_of(self, model):
        """The parameters of `model` this averages, after checking that `model` trains with it."""
        if not any(o is self for o in chain(getattr(model, 'optimizer', None))):
            raise ValueError('this %s is not the optimizer of the model %s (nor inside it)'
                             % (label(type(self)), getattr(model, 'name', model)))
        self.average_values()  # the error if there is nothing yet
        return self._params

    @contextlib.contextmanager
    def swap_weights(self, model):
        """A context in which `model` holds the averaged weights; on exit (an exception too)
        all of its weights -- trainable or not, e.g. BatchNorm statistics recomputed inside
        with `update_batch_norm` -- are restored exactly as they were on entry."""
        params = self._params_of(model)
        saved = K.batch_get_value(model.weights)
        K.batch_set_value(list(zip(params, self.average_values())))
        try:
            yield model
        finally:
            K.batch_set_value(list(zip(model.weights, saved)))

    def assign_average(self, model):
        """Put the averaged weights into `model` for good (e.g. at the end of training)."""
        params = self._params_of(model)
        K.batch_set_value(list(zip(params, self.average_values())))


@register
class ExponentialMovingAverage(Averaging):
    """An exponential moving average of the parameters, over any optimizer.

    The average starts at the parameters' values before the first update (and again after a
    reset); after each real update t (counted from 1), `avg <- decay_t * avg + (1 - decay_t) *
    p`, with `decay_t = min(decay, (1 + t) / (10 + t))` when `dynamic_decay` (the `num_updates`
    rule of tf.train.ExponentialMovingAverage), else `decay`. The averages are in `weights`;
    `swap_weights(model)` evaluates with them, `assign_average(model)` keeps them."""

    config_keys = ('decay', 'dynamic_decay')

    def __init__(self, optimizer, decay=0.999, dynamic_decay=False):
        decay = checks.checked_number('decay', decay, checks.CLOSED_UNIT_INTERVAL, K.floatx())
        dynamic_decay = checks.flag('dynamic_decay', dynamic_decay)
        super(ExponentialMovingAverage, self).__init__(optimizer)
        self.decay, self.dynamic_decay = decay, dynamic_decay
        self.started = self._add_scalar('started', 0, dtype='int64')

    def _started_before(self, params, averages):
        return lambda: start_from_parameters(self.started, params, averages)

    def _average_ops(self, params, averages, t):
        decay = tf.constant(self.decay, K.floatx())
        if self.dynamic_decay:
            decay = K.minimum(decay, (1. + t) / (10. + t))
        return [ops.average_in_place(a, K.cast(decay, a.dtype.base_dtype), p, exact=False)
                for p, a in zip(params, averages)]

    def _has_average(self):
        return bool(K.get_value(self.started))


@register
class StochasticWeightAveraging(Averaging):
    """Stochastic weight averaging (Izmailov et al. 2018) over any optimizer: the equal-weight
    running mean of the parameters after updates `start`, `start + period`, `start + 2 period`,
    ... (real updates, counted from 1). Before update `start` the average is the current
    parameters. `averaged` (in `weights`) counts the models in the mean. Recompute the BatchNorm
    statistics of the averaged weights with `update_batch_norm` (the paper's final pass)."""

    config_keys = ('start', 'period')

    def __init__(self, optimizer, start, period=1):
        start = checks.positive_integer('start', start)
        period = checks.positive_integer('period', period)
        super(StochasticWeightAveraging, self).__init__(optimizer)
        self.start, self.period = start, period
        self.averaged = self._add_scalar('averaged', 0, dtype='int64')

    def _average_ops(self, params, averages, t):
        n = K.cast(self.averaged, K.floatx())
        update = self.iterations + 1  # this real update's number, as an integer
        now = tf.logical_and(update >= self.start,
                             K.equal((update - self.start) % self.period, 0))

        def include():  # avg <- n/(n+1) avg + 1/(n+1) p, in place
            added = [ops.average_in_place(a, K.cast(n / (n + 1.), a.dtype.base_dtype), p,
                                          exact=False) for p, a in zip(params, averages)]
            with tf.control_dependencies(added):
                return tf.group(K.update_add(self.averaged, 1))
        return [tf.cond(now, include, tf.no_op)]

    def _has_average(self):
        return K.get_value(self.averaged) > 0


# ---- BatchNorm statistics --------------------------------------------------------------------

def update_batch_norm(model, data, batch_size=32, steps=None):
    """Recompute the moving statistics of every BatchNormalization layer of `model` for its
    current weights (e.g. averaged ones, inside `swap_weights`): one pass over `data` in the
    training phase, each layer's statistics the cumulative mean of the batch statistics its
    moving averages would take (torch's `update_bn`). `data`: an array of inputs (or a list of
    arrays, one per input; batches of `batch_size`), or an iterable of batches, each the inputs
    or an `(inputs, targets[, weights])` tuple (a generator: give `steps`).

    Returns the number of batches seen. The layers must be the model's own (a BatchNormalization
    inside a nested model is not reached: an error says so)."""
    layers = compat.batch_norm_layers(model)
    if not layers:
        return 0
    inputs = compat.model_inputs(model)
    statistics = [s for layer in layers for s in compat.batch_norm_statistics(layer)]
    compute = K.function(inputs + [K.learning_phase()], statistics)
    totals, count = None, 0
    for batch in _batches(data, batch_size, steps, len(inputs)):
        values = compute(batch + [1])
        totals = [v.astype(np.float64) for v in values] if totals is None else \
            [total + v for total, v in zip(totals, values)]
        count += 1
    if not count:
        raise ValueError('update_batch_norm: `data` holds no batch')
    variables = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]
    K.batch_set_value([(v, (total / count).astype(K.dtype(v)))
                       for v, total in zip(variables, totals)])
    return count


def _batches(data, batch_size, steps, n_inputs):
    """Lists of input arrays, one list per batch."""
    if isinstance(data, np.ndarray) or (isinstance(data, list) and data and
                                        all(isinstance(x, np.ndarray) for x in data)):
        arrays = [data] if isinstance(data, np.ndarray) else list(data)
        batch_size = checks.positive_integer('batch_size', batch_size)
        for begin in range(0, len(arrays[0]), batch_size):
            yield [x[begin:begin + batch_size] for x in arrays]
        return
    for i, batch in enumerate(data):
        if steps is not None and i >= steps:
            return
        if isinstance(batch, tuple):
            batch = batch[0]
        yield [batch] if n_inputs == 1 and not isinstance(batch, list) else list(batch)
