"""Learning-rate schedules computed in the graph from the optimizer's own step counter.

Same names, arguments and values as TensorFlow 1.15's `tf.keras.optimizers.schedules` and
`tf.keras.experimental` (CosineDecay, CosineDecayRestarts), plus a linear `Warmup`. Pass one as
`lr=`/`learning_rate=` to any keras_opt_legacy optimizer: it is evaluated on `iterations`, the
number of applied updates (under gradient accumulation: real updates, not micro-batches), costs no
Python per batch, and is saved and restored with the model (config + `iterations`).
"""
import math

import tensorflow as tf

from . import checks
from .base import deserialize_schedule, is_schedule, label, register, serialize_schedule
from .checks import CLOSED_UNIT_INTERVAL, NON_NEGATIVE, POSITIVE, checked_number


class LearningRateSchedule(object):
    """Base class: `schedule(step) -> scalar float32 tensor`, with `get_config`/`from_config`."""

    def __call__(self, step):
        with tf.name_scope(self.name or label(type(self))):
            return self.rate(tf.cast(step, tf.float32))

    def rate(self, step):
        """The rate at `step` (a float32 tensor)."""
        raise NotImplementedError

    config_keys = ()  # constructor arguments, each kept in the attribute of its name

    def get_config(self):
        return {key: getattr(self, key) for key in self.config_keys}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _DecayOverSteps(LearningRateSchedule):
    """initial_learning_rate decayed by decay_rate per decay_steps (by whole periods if
    staircase); subclasses say how."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name=None):
        self.initial_learning_rate = checked_number('initial_learning_rate', initial_learning_rate)
        self.decay_steps = checked_number('decay_steps', decay_steps, POSITIVE)
        self.decay_rate = checked_number('decay_rate', decay_rate)
        self.staircase = checks.flag('staircase', staircase)
        self.name = name

    def periods(self, step):
        p = step / self.decay_steps
        return tf.floor(p) if self.staircase else p

    config_keys = ('initial_learning_rate', 'decay_steps', 'decay_rate', 'staircase', 'name')


@register
class ExponentialDecay(_DecayOverSteps):
    """initial_learning_rate * decay_rate ^ (step / decay_steps) (floored if staircase)."""

    def rate(self, step):
        return self.initial_learning_rate * tf.pow(self.decay_rate, self.periods(step))


@register
class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] for step <= boundaries[0], values[i] for boundaries[i-1] < step <= boundaries[i],
    values[-1] after the last boundary."""

    def __init__(self, boundaries, values, name=None):
        for argument, given in (('boundaries', boundaries), ('values', values)):
            if not isinstance(given, (list, tuple)):
                raise TypeError('%s must be a list of numbers, got %r' % (argument, given))
        boundaries, values = list(boundaries), list(values)
        for i, b in enumerate(boundaries):
            checked_number('boundaries[%d]' % i, b, NON_NEGATIVE)
        if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise ValueError('boundaries must be strictly increasing, got %r' % (boundaries,))
        if len(values) != len(boundaries) + 1:
            raise ValueError('values must have len(boundaries) + 1 = %d entries, got %d'
                             % (len(boundaries) + 1, len(values)))
        for i, v in enumerate(values):
            checked_number('values[%d]' % i, v)
        self.boundaries, self.values, self.name = boundaries, values, name

    def rate(self, step):
        # The index of the interval: how many boundaries lie strictly below the step.
        passed = [tf.cast(step > b, tf.int32) for b in self.boundaries]
        index = tf.add_n(passed) if passed else tf.constant(0)
        return tf.gather(tf.constant(self.values, tf.float32), index)

    config_keys = ('boundaries', 'values', 'name')


@register
class PolynomialDecay(LearningRateSchedule):
    """(initial - end) * (1 - step/decay_steps)^power + end; the step stops at decay_steps, or
    with `cycle` decay_steps grows to the next multiple of itself above the step."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0,
                 cycle=False, name=None):
        self.initial_learning_rate = checked_number('initial_learning_rate', initial_learning_rate)
        self.decay_steps = checked_number('decay_steps', decay_steps, POSITIVE)
        self.end_learning_rate = checked_number('end_learning_rate', end_learning_rate)
        self.power = checked_number('power', power)
        self.cycle = checks.flag('cycle', cycle)
        self.name = name

    def rate(self, step):
        decay_steps = tf.constant(self.decay_steps, tf.float32)
        if self.cycle:
            multiplier = tf.where(tf.equal(step, 0.), 1., tf.ceil(step / self.decay_steps))
            decay_steps = decay_steps * multiplier
        else:
            step = tf.minimum(step, self.decay_steps)
        p = step / decay_steps
        return ((self.initial_learning_rate - self.end_learning_rate) * tf.pow(1 - p, self.power)
                + self.end_learning_rate)

    config_keys = ('initial_learning_rate', 'decay_steps', 'end_learning_rate', 'power', 'cycle',
                   'name')


@register
class InverseTimeDecay(_DecayOverSteps):
    """initial_learning_rate / (1 + decay_rate * step / decay_steps) (floored if staircase)."""

    def rate(self, step):
        return self.initial_learning_rate / (1. + self.decay_rate * self.periods(step))


def _cosine(fraction):
    return 0.5 * (1.0 + tf.cos(tf.constant(math.pi) * fraction))


@register
class CosineDecay(LearningRateSchedule):
    """initial * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name=None):
        self.initial_learning_rate = checked_number('initial_learning_rate', initial_learning_rate)
        self.decay_steps = checked_number('decay_steps', decay_steps, POSITIVE)
        self.alpha = checked_number('alpha', alpha, CLOSED_UNIT_INTERVAL)
        self.name = name

    def rate(self, step):
        fraction = tf.minimum(step, self.decay_steps) / self.decay_steps
        return self.initial_learning_rate * ((1 - self.alpha) * _cosine(fraction) + self.alpha)

    config_keys = ('initial_learning_rate', 'decay_steps', 'alpha', 'name')


@register
class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR): period i lasts first_decay_steps * t_mul^i steps
    and starts from initial * m_mul^i."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0,
                 name=None):
        self.initial_learning_rate = checked_number('initial_learning_rate', initial_learning_rate)
        self.first_decay_steps = checked_number('first_decay_steps', first_decay_steps, POSITIVE)
        # t_mul < 1: periods shrink to a finite total length, and the rate becomes NaN after it
        # (TF's own too).
        self.t_mul = checked_number('t_mul', t_mul, checks.AT_LEAST_ONE)
        self.m_mul = checked_number('m_mul', m_mul)
        self.alpha = checked_number('alpha', alpha, CLOSED_UNIT_INTERVAL)
        self.name = name

    def rate(self, step):
        fraction = step / self.first_decay_steps
        if self.t_mul == 1.0:
            restart = tf.floor(fraction)
            fraction -= restart
        else:  # periods grow geometrically: find the period, then the fraction within it
            restart = tf.floor(tf.log(1.0 - fraction * (1.0 - self.t_mul)) / math.log(self.t_mul))
            done = (1.0 - tf.pow(self.t_mul, restart)) / (1.0 - self.t_mul)
            fraction = (fraction - done) / tf.pow(self.t_mul, restart)
        cosine = tf.pow(self.m_mul, restart) * _cosine(fraction)
        return self.initial_learning_rate * ((1 - self.alpha) * cosine + self.alpha)

    config_keys = ('initial_learning_rate', 'first_decay_steps', 't_mul', 'm_mul', 'alpha', 'name')


@register
class PiecewiseLinear(LearningRateSchedule):
    """`np.interp(step, steps, values)`: linear between the points `(steps[i], values[i])`
    (strictly increasing steps, negative allowed), `values[0]` before the first and
    `values[-1]` after the last. BERT's warm-up then linear decay, bert4keras's
    `lr_schedule={1000: 1, 2000: 0.1}` (`PiecewiseLinear([0, 1000, 2000], [0, lr, 0.1 * lr])`)
    and keras-bert's `AdamWarmup` (`keras_bert_warmup`) are instances."""

    config_keys = ('steps', 'values', 'name')

    def __init__(self, steps, values, name=None):
        for argument, given in (('steps', steps), ('values', values)):
            if not isinstance(given, (list, tuple)) or not given:
                raise TypeError('%s must be a non-empty list of numbers, got %r'
                                % (argument, given))
        self.steps = [checked_number('steps[%d]' % i, x, checks.ANY) for i, x in enumerate(steps)]
        self.values = [checked_number('values[%d]' % i, y) for i, y in enumerate(values)]
        if len(self.steps) != len(self.values):
            raise ValueError('steps and values must have the same length, got %d and %d'
                             % (len(self.steps), len(self.values)))
        if any(a >= b for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError('steps must be strictly increasing, got %r' % (steps,))
        self.name = name

    def rate(self, step):
        last = len(self.steps) - 1
        steps, values = tf.constant(self.steps, tf.float32), tf.constant(self.values, tf.float32)
        # The segment [steps[i - 1], steps[i]] holding the step (clipped to the ends).
        passed = tf.reduce_sum(tf.cast(steps <= step, tf.int32))
        left, right = tf.maximum(passed - 1, 0), tf.minimum(passed, last)
        x0, x1 = tf.gather(steps, left), tf.gather(steps, right)
        y0, y1 = tf.gather(values, left), tf.gather(values, right)
        fraction = tf.where(x1 > x0, (step - x0) / tf.maximum(x1 - x0, 1e-30), 0.)
        return y0 + fraction * (y1 - y0)


def keras_bert_warmup(decay_steps, warmup_steps, lr=0.001, min_lr=0.):
    """The rate of keras-bert's `AdamWarmup(decay_steps, warmup_steps, lr=lr, min_lr=min_lr)`,
    as a `PiecewiseLinear`: with t = step + 1, lr * t / warmup_steps while t <= warmup_steps,
    then min_lr + (lr - min_lr) * (1 - min(t, decay_steps) / decay_steps) (keras-bert does not
    shift its decay by the warm-up, so the rate drops after the warm-up). Use it as
    `keras_opt_legacy.Adam(lr=keras_bert_warmup(...))`."""
    decay_steps = checked_number('decay_steps', decay_steps, POSITIVE)
    warmup_steps = checks.integer('warmup_steps', warmup_steps, minimum=0)
    lr, min_lr = checked_number('lr', lr), checked_number('min_lr', min_lr)

    def decayed(t):
        return min_lr + (lr - min_lr) * (1. - min(t, decay_steps) / decay_steps)
    steps, values = [-1., float(warmup_steps - 1)], [0., lr]  # step = t - 1
    if warmup_steps + 1 < decay_steps:  # the decay, linear in t, until t = decay_steps
        steps += [float(warmup_steps), decay_steps - 1.]
        values += [decayed(warmup_steps + 1), min_lr]
    else:  # past decay_steps at once: min_lr
        steps, values = steps + [float(warmup_steps)], values + [decayed(warmup_steps + 1)]
    if warmup_steps == 0:
        steps, values = steps[1:], values[1:]
    return PiecewiseLinear(steps, values)


@register
class Warmup(LearningRateSchedule):
    """Linear warm-up over the first `warmup_steps` updates (the first update already moves).

    `shift=False` (the default): schedule(step) * (step + 1) / warmup_steps during the warm-up,
    then schedule(step) itself: the schedule keeps counting during the warm-up.
    `shift=True`: schedule(0) * (step + 1) / warmup_steps during the warm-up, then
    schedule(step - warmup_steps): the schedule starts after the warm-up, from its peak.

    `schedule` is a schedule or a constant rate.
    """

    config_keys = ('schedule', 'warmup_steps', 'shift', 'name')

    def __init__(self, schedule, warmup_steps, shift=False, name=None):
        if isinstance(schedule, dict):
            schedule = deserialize_schedule(schedule)
        if not is_schedule(schedule):
            schedule = checked_number('schedule', schedule)
        self.warmup_steps = checks.integer('warmup_steps', warmup_steps, minimum=0)
        self.schedule, self.shift, self.name = schedule, checks.flag('shift', shift), name

    def _target(self, step):
        return self.schedule(step) if is_schedule(self.schedule) else self.schedule

    def rate(self, step):
        if self.warmup_steps == 0:
            return tf.convert_to_tensor(self._target(step), tf.float32)
        ramp = tf.minimum(1., (step + 1.) / self.warmup_steps)
        if not self.shift:
            return self._target(step) * ramp
        during = self._target(tf.zeros_like(step)) * ramp
        after = self._target(tf.maximum(step - self.warmup_steps, 0.))
        return tf.where(step < self.warmup_steps, during, tf.convert_to_tensor(after, tf.float32))

    def get_config(self):
        config = super(Warmup, self).get_config()
        if is_schedule(self.schedule):
            config['schedule'] = serialize_schedule(self.schedule)
        return config
