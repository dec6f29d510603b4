"""Multi-stage optimizers: explicit Runge-Kutta methods for the gradient flow dp/dt = -grad L(p).

Keras 2 runs an optimizer's updates as one `session.run` per batch, so a method that needs the
gradient at a second point (step, evaluate again, correct) cannot be written as `get_updates`.
These optimizers install their own train function, which runs one graph function per stage:

    opt = RK4(lr=0.1)
    model.compile(opt, 'mse', metrics=['mae'])
    opt.inject(model)   # after every compile: compiling drops the injected train function
    model.fit(...)      # fit, fit_generator, train_on_batch and callbacks work as usual

Training without `inject` raises an error: nothing is trained by a wrong train function. For the
same reason `keras.models.load_model` stops while it restores such an optimizer's state;
`keras_opt_legacy.load_model` loads, injects (`needs_inject`) and restores.

There is no guard against a non-finite gradient, and `SkipNonFinite` cannot wrap these (they
drive the train function): a NaN batch makes the parameters NaN.
"""
import numpy as np
import tensorflow as tf
from keras import backend as K

from . import checks, compat, ops
from .base import Optimizer, label, register
from .checks import ANY, POSITIVE, POSITIVE_UNIT_INTERVAL, DefaultRate, checked_number


class InjectOptimizer(Optimizer):
    """Base of optimizers that evaluate the gradient at several points per batch.

    A subclass implements `stages(grads, params)`: one function per stage, each building the
    update ops of one graph function. `inject(model)` runs them in order on every batch, one
    `session.run` each, all fed the same batch. `grads` come from `get_gradients` (which Horovod
    overrides), built once and shared by every stage: each run evaluates them at the weights of
    that moment. The first stage also runs the model's state updates (BatchNorm statistics) and
    stateful metrics, once per batch, and returns the loss and metrics at the start point, as
    Keras does. Layers drawing noise (Dropout) draw it anew in each stage.
    """

    needs_inject = True
    inject_reason = 'evaluates the gradient at several points per batch and needs its own ' \
        'train function'

    def stages(self, grads, params):
        """One function per stage, each returning that stage's update ops (state exists)."""
        raise NotImplementedError

    def get_updates(self, loss, params):
        self._check_injecting()
        grads = ops.after_all(self.get_gradients(loss, params), also=[loss])
        self._create_state(params)
        stages = self.stages(grads, params)
        with tf.control_dependencies(self._train_outputs):  # metrics too see the start point
            self._stage_updates = [stages[0]()]
        self._stage_updates += [build() for build in stages[1:]]
        self.updates = [op for stage in self._stage_updates for op in stage]
        return self.updates

    def prepare_step(self, grads, params):
        raise TypeError('%s evaluates the gradient at several points per batch: it trains only '
                        'through opt.inject(model), not through apply_gradients or inside a '
                        'wrapper (GradientAccumulation, Lookahead)' % label(type(self)))

    def inject(self, model):
        """Replace `model.train_function` by one graph function per stage, run on each batch.

        Call after `model.compile(optimizer=opt, ...)` and again after every recompile."""
        # Keras's get_updates call builds the stages (`self._stage_updates`).
        inputs, outputs, state_updates, metric_updates, kwargs, _ = self._injected_parts(model)
        first, rest = self._stage_updates[0], self._stage_updates[1:]
        functions = [K.function(inputs, outputs, updates=state_updates + metric_updates + first,
                                name='train_function', **kwargs)]
        # Extra fetches and run options belong to the one run Keras would make; feeds to all.
        feeds = {key: value for key, value in kwargs.items() if key == 'feed_dict'}
        functions += [compat.updates_function(inputs, updates, 'train_stage_%d' % stage, **feeds)
                      for stage, updates in enumerate(rest, start=2)]

        def train_function(ins):
            outs = functions[0](ins)
            for function in functions[1:]:
                function(ins)
            return outs
        compat.install_train_function(model, train_function)


def _weights(name, values, count=None):
    """A tableau's weights: finite numbers summing to 1 (a consistent method), `count` of them."""
    try:
        values = tuple(checked_number(name, v, ANY) for v in values)
    except TypeError:
        raise TypeError('%s must be a list of numbers, got %r' % (name, values))
    if not values or (count is not None and len(values) != count):
        raise ValueError('%s must list one weight per stage (%s), got %r'
                         % (name, count or 'at least one', values))
    if abs(sum(values) - 1) > 1e-9:
        raise ValueError('%s must sum to 1 (a consistent method), got %r (sum %r)'
                         % (name, values, sum(values)))
    return values


def check_tableau(a, b):
    """`(a, b)` as tuples of floats, `a` square, or an error naming the argument.

    `a` is strictly lower triangular (an explicit method): s rows, each listing all s entries or
    stopping before the diagonal (the rest are zeros)."""
    b = _weights('b', b)
    s = len(b)
    try:
        rows = [[checked_number('a', v, ANY) for v in row] for row in a]
    except TypeError:
        raise TypeError('a must be a list of rows of numbers, got %r' % (a,))
    if len(rows) != s or any(len(row) > s for row in rows):
        raise ValueError('a must have %d rows of at most %d entries (b has %d weights), got %r'
                         % (s, s, s, a))
    matrix = np.array([row + [0.] * (s - len(row)) for row in rows])
    if np.any(np.triu(matrix) != 0):
        raise ValueError('a must be strictly lower triangular (an explicit method), got %r'
                         % (a,))
    return tuple(map(tuple, matrix.tolist())), b


def _combination(start, h, weights, gs):
    """start - h * sum_j weights_j g_j, one add_n over the nonzero terms (a fixed order)."""
    terms = [w * g for w, g in zip(weights, gs) if w != 0]
    return start - h * tf.add_n(terms) if terms else start


def _move(p, start, h, weights, gs, after):
    """Ops that set `p` to start - h * sum_j weights_j g_j in place, after the ops `after`: a copy
    of `start` (unless it is `p`), then one `p -= (h * w_j) * g_j` per nonzero weight. That is
    TF's fused ApplyGradientDescent kernel, one pass over memory (`p - c * g` and an assign take
    three); the terms are subtracted in a fixed order."""
    moves = list(after)
    if start is not p:
        with tf.control_dependencies(moves):
            moves.append(K.update(p, start))
    for w, g in zip(weights, gs):
        if w != 0:
            moves.append(ops.descend(p, h * w, g, after=moves))
    return moves


@register
class RungeKutta(InjectOptimizer):
    """An explicit Runge-Kutta method with a fixed step size h = lr (schedules and legacy decay
    apply, at `iterations`).

    For the gradient flow dp/dt = -g(p), g = grad L: k_i = -g(p_n + h * sum_j a_ij k_j),
    p_{n+1} = p_n + h * sum_i b_i k_i. The named methods (Heun, Midpoint, RK4) fix the Butcher
    tableau; `RungeKutta(lr, a=..., b=...)` takes any explicit one: `a` strictly lower triangular
    (s rows, each in full or stopping before the diagonal), `b` s weights summing to 1.

    Each batch runs s graph functions (installed by `opt.inject(model)`). `weights`:
    `[iterations]` + per-parameter slots 'start' (p_n, kept when s > 2: a stage after the
    second moves from it) and 'g1'..'g{s-1}' (the stage gradients a later stage reads;
    k_j = -g_j). The last stage moves from where it evaluated, p_{s-1} = p_n - h sum_j a_sj g_j:
    p_{n+1} = p_{s-1} - h sum_j (b_j - a_sj) g_j (in the last bit, not the same rounding as
    from p_n). `iterations` counts batches. Constraints apply to p_{n+1},
    not to the points where the stages evaluate the gradient.
    """

    a = b = None  # the tableau of a named method

    def __init__(self, lr=DefaultRate(0.01), decay=0., a=None, b=None, **kwargs):
        super(RungeKutta, self).__init__(lr=lr, decay=decay, **kwargs)
        self.a, self.b = check_tableau(*self._tableau_arguments(a=a, b=b))
        s = len(self.b)
        self.slot_names = (('start',) if self._keeps_start else ()) + \
            tuple('g%d' % j for j in range(1, s))

    @property
    def evaluations_per_step(self):
        """Gradient evaluations per batch: one per stage."""
        return len(self.b)

    def _tableau_arguments(self, **given):
        """A named method's own tableau entries, else the constructor's (then in the config)."""
        if getattr(type(self), next(iter(given))) is not None:
            if any(value is not None for value in given.values()):
                raise TypeError('%s has its own tableau: %s cannot be passed (use RungeKutta or '
                                'AdaptiveRungeKutta for another one)'
                                % (label(type(self)), ', '.join(given)))
            return [getattr(type(self), name) for name in given]
        missing = [name for name, value in given.items() if value is None]
        if missing:
            raise TypeError('%s needs a Butcher tableau: pass %s'
                            % (label(type(self)), ', '.join(missing)))
        self._config.update((name, name) for name in given)
        return list(given.values())

    def _step_size(self):
        return self._learning_rate_at(self.iterations)

    @property
    def _keeps_start(self):
        """Whether a stage needs p_n after the first has moved p (stages 3 and later do)."""
        return len(self.b) > 2

    def _stage_inputs(self, p, g, i):
        """(p_n, [g_1..g_{i+1}]) at stage i (from 0): earlier gradients from the slots, this
        stage's own."""
        g = tf.convert_to_tensor(g)  # dense (an Embedding's are IndexedSlices)
        if i == 0:
            return p, [g]
        slots = self._slots[p]
        return slots.get('start'), [slots['g%d' % j] for j in range(1, i + 1)] + [g]

    def _last_stage(self, h, params, grads):
        """The ops of the last stage: p_{n+1}, constrained."""
        last = len(self.b) - 1
        from_here = [b - a for b, a in zip(self.b, self.a[last])]
        moves = []
        for p, g in zip(params, grads):
            _, gs = self._stage_inputs(p, g, last)
            moved = _move(p, p, h, from_here, gs, after=[])
            if getattr(p, 'constraint', None) is not None:
                with tf.control_dependencies(moved):
                    moved.append(K.update(p, p.constraint(p.read_value())))
            moves += moved
        return moves

    def stages(self, grads, params):
        h = self._step_size()
        last = len(self.b) - 1

        def intermediate(i):  # save p_n and g_{i+1}, move p to the point of stage i + 1
            moves = []
            for p, g in zip(params, grads):
                start, gs = self._stage_inputs(p, g, i)
                saved = [K.update(self._slots[p]['g%d' % (i + 1)], gs[-1])]
                if i == 0 and self._keeps_start:
                    saved.append(K.update(self._slots[p]['start'], p))
                moves += _move(p, start, h, self.a[i + 1], gs, after=saved)
            return moves

        def final():
            moves = self._last_stage(h, params, grads)  # then count: after every read of h
            return moves + [ops.count_after(self.iterations, moves)]

        def stage(i):
            def build():
                # Every assign waits for all of this stage's gradients, also those it does not use.
                with tf.control_dependencies(grads):
                    return final() if i == last else intermediate(i)
            return build
        return [stage(i) for i in range(last + 1)]


@register
class AdaptiveRungeKutta(RungeKutta):
    """An embedded Runge-Kutta pair that adapts its step size to keep the local error estimate
    within tolerance.

    The step p_{n+1} uses `b` (order p); `b_embedded` gives a solution of order `error_order`
    (q < p), their difference the error estimate e = h * sum_i (b_i - b_embedded_i) k_i. With
    err = RMS over all parameter entries of e / (atol + rtol * max(|p_n|, |p_{n+1}|)):

    - the step is accepted if err <= 1, or at h = min_step (so training cannot stall); on
      rejection the parameters stay at p_n (that batch teaches nothing);
    - h <- clip(h * clip(safety * err^(-1/(q+1)), min_factor, max_factor), min_step, max_step)
      either way; a non-finite err (overflow, NaN gradient) is rejected with min_factor.

    `lr` is the step size: the initial one, then the controller's (a number, no schedule or
    decay). Its variable is the state 'step_size', listed after `iterations` in `weights`;
    `K.get_value(opt.lr)` and `current_learning_rate(opt)` read the current step, and setting it
    (e.g. from a callback) sets the next step to try, clipped into [min_step, max_step].
    `get_config()['lr']` is the current step. `iterations` counts batches, accepted or not.
    """

    b_embedded = error_order = None  # of a named method
    _keeps_start = True  # a rejected step goes back to p_n

    def __init__(self, lr=DefaultRate(0.01), a=None, b=None, b_embedded=None, error_order=None,
                 rtol=1e-3,
                 atol=1e-6, min_step=1e-6, max_step=1., safety=0.9, min_factor=0.2,
                 max_factor=10., decay=0., **kwargs):
        super(AdaptiveRungeKutta, self).__init__(lr=lr, decay=decay, a=a, b=b, **kwargs)
        b_embedded, error_order = self._tableau_arguments(b_embedded=b_embedded,
                                                          error_order=error_order)
        self.b_embedded = _weights('b_embedded', b_embedded, len(self.b))
        self.error_order = checks.positive_integer('error_order (the order of the embedded '
                                                   'method)', error_order)
        if self._schedule is not None or self.initial_decay > 0:
            raise ValueError('lr of %s is its initial step size, which the controller then '
                             'adapts: it must be a number, without decay'
                             % label(type(self)))
        self.rtol = self._hyper('rtol', rtol)
        self.atol = self._hyper('atol', atol, POSITIVE)
        self.min_step = self._hyper('min_step', min_step, POSITIVE)
        self.max_step = self._hyper('max_step', max_step,
                                    checks.at_least(self.min_step, 'min_step'))
        self.safety = self._hyper('safety', safety, POSITIVE_UNIT_INTERVAL)
        self.min_factor = self._hyper('min_factor', min_factor, POSITIVE_UNIT_INTERVAL)
        self.max_factor = self._hyper('max_factor', max_factor, checks.AT_LEAST_ONE)
        initial = K.get_value(self._lr)  # float32, as the controller compares it
        if not np.float32(self.min_step) <= initial <= np.float32(self.max_step):
            raise ValueError('lr (the initial step size) must be in [min_step, max_step] = '
                             '[%r, %r], got %r' % (self.min_step, self.max_step, float(initial)))
        self.step_size = self._lr
        self._scalars.append(('step_size', self.step_size))

    def _step_size(self):
        # (K.set_value refuses a non-finite step; should one arrive anyway, min_step is used.)
        return tf.where(tf.is_finite(self.step_size),
                        K.clip(self.step_size, self.min_step, self.max_step),
                        tf.constant(self.min_step, self.step_size.dtype.base_dtype))

    def _last_stage(self, h, params, grads):
        last, error_weights = len(self.b) - 1, [x - y for x, y in zip(self.b, self.b_embedded)]
        moves, squares = [], []
        for p, g in zip(params, grads):
            start, gs = self._stage_inputs(p, g, last)
            new = _combination(start, h, self.b, gs)
            error = _combination(0., h, error_weights, gs)
            scale = self.atol + self.rtol * K.maximum(K.abs(start), K.abs(new))
            squares.append(K.sum(K.square(error / scale)))
            moves.append((p, start, new))
        # No parameters (nothing trainable): no error, every step accepted.
        err = K.sqrt(tf.add_n(squares) / float(sum(K.count_params(p) for p in params))) \
            if params else tf.constant(0.)
        finite = tf.math.is_finite(err)
        accepted = finite & ((err <= 1.) | (h <= self.min_step))
        factor = K.clip(self.safety * K.pow(err, -1. / (self.error_order + 1)),  # err=0: inf
                        self.min_factor, self.max_factor)
        factor = tf.where(finite, factor, tf.constant(self.min_factor, factor.dtype))
        new_h = K.clip(h * factor, self.min_step, self.max_step)
        moved = [(p, ops.select(accepted, new, start)) for p, start, new in moves]
        moved = [(p, ops.constrained(p, x)) for p, x in moved]
        return ops.assign_all(moved + [(self.step_size, new_h)])


# ---- the named methods -----------------------------------------------------------------------

@register
class Heun(RungeKutta):
    """Heun's method (explicit trapezoid, order 2):
    p~ = p - h g(p); p' = p~ - h/2 (g(p~) - g(p))."""
    a = ((), (1.,))
    b = (1 / 2, 1 / 2)


@register
class Midpoint(RungeKutta):
    """The explicit midpoint method (order 2): p' = p - h g(p - h/2 g(p))."""
    a = ((), (1 / 2,))
    b = (0., 1.)


@register
class RK4(RungeKutta):
    """The classic fourth-order Runge-Kutta method."""
    a = ((), (1 / 2,), (0., 1 / 2), (0., 0., 1.))
    b = (1 / 6, 1 / 3, 1 / 3, 1 / 6)


@register
class RK23(AdaptiveRungeKutta):
    """Bogacki-Shampine 3(2): steps with order 3, error estimate from the embedded order 2.
    4 gradient evaluations per batch (the last one, at p_{n+1}, only feeds the estimate: with a
    new batch every step, its gradient cannot be reused as the next first stage)."""
    a = ((), (1 / 2,), (0., 3 / 4), (2 / 9, 1 / 3, 4 / 9))
    b = (2 / 9, 1 / 3, 4 / 9, 0.)
    b_embedded = (7 / 24, 1 / 4, 1 / 3, 1 / 8)
    error_order = 2


@register
class RK45(AdaptiveRungeKutta):
    """Dormand-Prince 5(4): steps with order 5, error estimate from the embedded order 4.
    7 gradient evaluations per batch (no first-same-as-last reuse, as for RK23)."""
    a = ((),
         (1 / 5,),
         (3 / 40, 9 / 40),
         (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0., 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
    b = (35 / 384, 0., 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.)
    b_embedded = (5179 / 57600, 0., 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100,
                  1 / 40)
    error_order = 4
