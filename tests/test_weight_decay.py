"""Decoupled weight decay (issue 16): kol.WeightDecay over any optimizer, and kol.AdamW / SGDW /
NadamW, follow the independent NumPy reference (reference.Decoupled: p_new = inner_step(p_old) -
f * rate_t * p_old, f the update's learning rate or 1) for 30+ steps of real training; decay
happens once per real update (gradient accumulation, skipped non-finite steps), after the
constrained step, only on the chosen parameters; AdamW & co. are WeightDecay(Adam & co.) bit for
bit; scale_by_lr=False is tf.contrib.opt.AdamWOptimizer; state saves and resumes exactly.

Every comparison with the reference also steps plausible wrong references ("alternatives": no
decay, the other convention, decay on every micro-batch, ...) on the same batches and checks
that each ends farther from the trained weights than MARGIN, so the test can tell them apart."""
import re

import numpy as np
import pytest
import keras
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import schedules
from keras_opt_legacy.ops import after_all
import problems
import reference as R
import resume
from catalog import f32

STEPS = 30
X, Y = problems.data()
BATCH_OF = problems.batches(X, Y)  # 4 batches of 16, in order
RTOL, ATOL = 1e-5, 1e-6
MARGIN = 1e-4  # 10x the tolerance: an alternative must end at least this far away


# ---- reference helpers (NumPy) -----------------------------------------------------------------

def cosine(initial, decay_steps, alpha):
    """TF's CosineDecay, in NumPy."""
    return lambda k: initial * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * min(k, decay_steps) /
                                                                 decay_steps)) + alpha)


def interp(steps, values):
    """PiecewiseLinear, in NumPy."""
    return lambda k: float(np.interp(k, steps, values))


def lr_of(ref):
    lr = getattr(ref, 'current_lr', None)
    return float(lr() if lr is not None else ref._current_lr())


class Accumulating(object):
    """GradientAccumulation's reference: the mean of `steps` gradients, one inner step."""

    def __init__(self, inner, steps):
        self.inner, self.steps, self.total, self.count = inner, steps, None, 0

    def current_lr(self):
        return lr_of(self.inner)

    def step(self, params, grads):
        grads = [np.asarray(g, np.float64) for g in grads]
        self.total = grads if self.total is None else [t + g for t, g in zip(self.total, grads)]
        self.count += 1
        if self.count % self.steps == 0:
            self.inner.step(params, [t / self.steps for t in self.total])
            self.total = None
        return params


class Skipping(object):
    """SkipNonFinite's reference: a step with a non-finite gradient does nothing."""

    def __init__(self, inner):
        self.inner = inner

    def current_lr(self):
        return lr_of(self.inner)

    def step(self, params, grads):
        if all(np.all(np.isfinite(g)) for g in grads):
            self.inner.step(params, grads)
        return params


class LookaheadRef(object):
    def __init__(self, inner, sync_period, slow_step):
        self.inner, self.k, self.alpha, self.slow, self.count = inner, sync_period, slow_step, \
            None, 0

    def step(self, params, grads):
        if self.slow is None:
            self.slow = [np.array(p, np.float64) for p in params]
        self.inner.step(params, grads)
        self.count += 1
        if self.count % self.k == 0:
            for p, s in zip(params, self.slow):
                s += self.alpha * (p - s)
                p[...] = s
        return params


class CoupledL2(object):
    """Not decoupled: rate * p added to the gradient (Adam with L2, what AdamW is not)."""

    def __init__(self, inner, rate):
        self.inner, self.rate = inner, rate

    def step(self, params, grads):
        return self.inner.step(params, [g + self.rate * p for g, p in zip(grads, params)])


class ConstrainedAfter(object):
    """`inner`'s whole step (decay included), then the constraints: decay before the constraint."""

    def __init__(self, inner, constraints):
        self.inner, self.constraints = inner, constraints

    def step(self, params, grads):
        self.inner.step(params, grads)
        for i, constraint in self.constraints.items():
            params[i][...] = constraint(params[i])
        return params


def non_negative(w):
    return w * (w >= 0)


def names_of(model):
    return [w.name for w in model.trainable_weights]


def layer(model, index):
    """A pattern found in the names of layer `index`'s weights only."""
    return re.escape(model.layers[index].name + '/')


def follow(model, expected, alternatives, steps=STEPS, batch_of=BATCH_OF):
    """Train `model` `steps` batches; after each, its weights equal the reference `expected`
    stepped on the NumPy gradients (RTOL, ATOL). Each alternative reference, stepped on its own
    weights, must end farther than MARGIN from the model. The model's trajectory."""
    start = [w.astype(np.float64) for w in problems.initial_weights()]
    ours = [w.copy() for w in start]
    others = {name: ([w.copy() for w in start], ref) for name, ref in alternatives.items()}
    assert 'no decay' in others, 'every case compares with the undecayed trajectory'
    trajectory = []
    for i in range(steps):
        x, y = batch_of(i)
        model.train_on_batch(x, y)
        actual = problems.flat(model.get_weights())
        trajectory.append(actual)
        expected.step(ours, problems.numpy_gradients(ours, x, y))
        for weights, ref in others.values():
            ref.step(weights, problems.numpy_gradients(weights, x, y))
        np.testing.assert_allclose(actual, problems.flat(ours), rtol=RTOL, atol=ATOL,
                                   err_msg='step %d' % i)
    assert np.all(np.isfinite(trajectory[-1]))
    assert np.abs(trajectory[-1] - problems.flat(start)).max() > 1e-2, 'it must train'
    for name, (weights, _) in others.items():
        gap = np.abs(problems.flat(weights) - trajectory[-1]).max()
        assert gap > MARGIN, 'the case cannot tell the expected trajectory from "%s" (%g)' % (
            name, gap)
    return np.array(trajectory)


# ---- the cases: (optimizer, expected reference, {alternative: reference}) of the model's names
# and a pattern found only in the first layer's names --------------------------------------------

def keras_gated(name, **kwargs):
    return problems.gated(getattr(keras.optimizers, name))(**kwargs)


def adam_lr_scaled(names, first):
    return (kol.WeightDecay(kol.Adam(0.01), 0.1),
            R.Decoupled(R.Adam(0.01), 0.1),
            {'no decay': R.Adam(0.01),
             'not scaled by lr': R.Decoupled(R.Adam(0.01), 0.1, scale_by_lr=False),
             'L2 in the gradient': CoupledL2(R.Adam(0.01), 0.1)})


def adam_not_scaled(names, first):
    return (kol.WeightDecay(kol.Adam(0.01), 0.01, scale_by_lr=False),
            R.Decoupled(R.Adam(0.01), 0.01, scale_by_lr=False),
            {'no decay': R.Adam(0.01),
             'scaled by lr': R.Decoupled(R.Adam(0.01), 0.01),
             'L2 in the gradient': CoupledL2(R.Adam(0.01), 0.01)})


def sgd_momentum(names, first):
    return (kol.WeightDecay(kol.SGD(0.1, momentum=0.9), 0.1),
            R.Decoupled(R.SGD(0.1, momentum=0.9), 0.1),
            {'no decay': R.SGD(0.1, momentum=0.9),
             'L2 in the gradient': CoupledL2(R.SGD(0.1, momentum=0.9), 0.1)})


def keras_rmsprop(names, first):
    return (kol.WeightDecay(keras_gated('RMSprop', lr=0.01), 0.2),
            R.Decoupled(R.RMSprop(0.01), 0.2),
            {'no decay': R.RMSprop(0.01),
             'not scaled by lr': R.Decoupled(R.RMSprop(0.01), 0.2, scale_by_lr=False)})


def keras_adam_legacy_decay(names, first):
    """f is Keras's decayed lr (lr / (1 + decay * iterations)), not the bias-corrected one."""
    return (kol.WeightDecay(keras.optimizers.Adam(lr=0.01, decay=0.1), 0.5),
            R.Decoupled(R.Adam(0.01, decay=0.1), 0.5),
            {'no decay': R.Adam(0.01, decay=0.1),
             'f without legacy decay': R.Decoupled(R.Adam(0.01, decay=0.1),
                                                   lambda k: 0.5 * (1 + 0.1 * k))})


def ours_legacy_decay(names, first):
    return (kol.WeightDecay(kol.Adam(0.01, decay=0.1), 0.5),
            R.Decoupled(R.Adam(0.01, decay=0.1), 0.5),
            {'no decay': R.Adam(0.01, decay=0.1),
             'f without legacy decay': R.Decoupled(R.Adam(0.01, decay=0.1),
                                                   lambda k: 0.5 * (1 + 0.1 * k))})


def rate_schedule(names, first):
    rate = interp([0, 10, 30], [0., 0.5, 0.1])
    return (kol.WeightDecay(kol.Adam(0.01),
                            schedules.PiecewiseLinear([0, 10, 30], [0., 0.5, 0.1])),
            R.Decoupled(R.Adam(0.01), rate),
            {'no decay': R.Adam(0.01),
             'rate one step late': R.Decoupled(R.Adam(0.01), lambda k: rate(k + 1)),
             'rate one step early': R.Decoupled(R.Adam(0.01), lambda k: rate(k - 1))})


def lr_schedule(names, first):
    lr = cosine(0.2, 20, 0.1)
    return (kol.WeightDecay(kol.SGD(schedules.CosineDecay(0.2, 20, alpha=0.1)), 0.2),
            R.Decoupled(R.SGD(lr), 0.2),
            {'no decay': R.SGD(lr),
             'f the initial lr': R.Decoupled(R.SGD(lr), lambda k: 0.2 * 0.2 / lr(k))})


def exclude_bias(names, first):
    return (kol.WeightDecay(kol.Adam(0.01), 0.02, exclude=['bias'], scale_by_lr=False),
            R.Decoupled(R.Adam(0.01), 0.02, scale_by_lr=False, names=names,
                        decayed=lambda name: 'bias' not in name),
            {'no decay': R.Adam(0.01),
             'biases decayed too': R.Decoupled(R.Adam(0.01), 0.02, scale_by_lr=False)})


def include_second_kernel(names, first):
    """include the kernels, exclude the first layer: only the second layer's kernel."""
    return (kol.WeightDecay(kol.SGD(0.1, momentum=0.9), 0.3, include=['kernel'], exclude=[first]),
            R.Decoupled(R.SGD(0.1, momentum=0.9), 0.3, names=names, include=['kernel'],
                        exclude=[first]),
            {'no decay': R.SGD(0.1, momentum=0.9),
             'both kernels': R.Decoupled(R.SGD(0.1, momentum=0.9), 0.3, names=names,
                                         include=['kernel']),
             'all': R.Decoupled(R.SGD(0.1, momentum=0.9), 0.3)})


CASES = {f.__name__.replace('_', '-'): f for f in [
    adam_lr_scaled, adam_not_scaled, sgd_momentum, keras_rmsprop, keras_adam_legacy_decay,
    ours_legacy_decay, rate_schedule, lr_schedule, exclude_bias, include_second_kernel]}


@pytest.mark.parametrize('case', sorted(CASES))
def test_follows_the_numpy_reference(case):
    model = problems.mlp()
    optimizer, expected, alternatives = CASES[case](names_of(model), layer(model, 0))
    model.compile(optimizer, 'mse')
    follow(model, expected, alternatives)


def test_decay_comes_after_the_constrained_step():
    """The output kernel carries NonNeg: p_new = NonNeg(inner_step(p_old)) - f * rate * p_old
    (bert4keras's order), not NonNeg(inner_step(p_old) - f * rate * p_old)."""
    assert np.any(problems.initial_weights()[2] < 0)  # the constraint has work to do
    model = problems.mlp(kernel_constraint=keras.constraints.NonNeg())
    model.compile(kol.WeightDecay(kol.Adam(0.05), 0.05, scale_by_lr=False), 'mse')
    constraint = {2: non_negative}
    trajectory = follow(
        model, R.Decoupled(R.Adam(0.05), 0.05, scale_by_lr=False, constraints=constraint),
        {'no decay': ConstrainedAfter(R.Adam(0.05), constraint),
         'constraint after the decay': ConstrainedAfter(
             R.Decoupled(R.Adam(0.05), 0.05, scale_by_lr=False), constraint)})
    # the constraint clipped, and the decay then moved the clipped weights off zero
    kernel = trajectory[:, -5:-1]
    assert np.any(kernel < 0)


# ---- once per real update: gradient accumulation, skipped steps, Lookahead ---------------------

RATE_POINTS = ([0, 8], [0.5, 0.])  # reaches 0 after 8 updates (after 8 batches if it counted those)


@pytest.mark.parametrize('order', ['decay-outside', 'decay-inside'])
def test_under_gradient_accumulation_decay_happens_once_per_update(order):
    """32 batches, 8 updates of 4: the decay (its rate a schedule of the update count) and the
    inner lr (legacy decay) see the update count, and the weights do not move in between."""
    rate, adam = schedules.PiecewiseLinear(*RATE_POINTS), kol.Adam(0.02, decay=0.1)
    optimizer = kol.WeightDecay(kol.GradientAccumulation(adam, 4), rate) \
        if order == 'decay-outside' else kol.GradientAccumulation(kol.WeightDecay(adam, rate), 4)
    model = problems.mlp()
    model.compile(optimizer, 'mse')
    rate = interp(*RATE_POINTS)
    trajectory = follow(
        model, Accumulating(R.Decoupled(R.Adam(0.02, decay=0.1), rate), 4),
        {'no decay': Accumulating(R.Adam(0.02, decay=0.1), 4),
         'decay on every batch': R.Decoupled(Accumulating(R.Adam(0.02, decay=0.1), 4), rate)},
        steps=32)
    for i in range(32):
        moved = not np.array_equal(trajectory[i], trajectory[i - 1] if i else
                                   problems.flat(problems.initial_weights()))
        assert moved == (i % 4 == 3), 'batch %d' % i


def with_nan_batches(nan_at):
    def batch_of(i):
        x, y = BATCH_OF(i)
        if i in nan_at:
            x = x.copy()
            x[0, 0] = np.nan
        return x, y
    return batch_of


@pytest.mark.parametrize('order', ['decay-outside', 'decay-inside'])
def test_a_skipped_step_does_not_decay(order):
    skip = kol.SkipNonFinite(kol.Adam(0.01)) if order == 'decay-outside' else None
    optimizer = kol.WeightDecay(skip, 0.5) if skip is not None else \
        kol.SkipNonFinite(kol.WeightDecay(kol.Adam(0.01), 0.5))
    model = problems.mlp()
    model.compile(optimizer, 'mse')
    nan_at = (5, 6, 17)
    trajectory = follow(
        model, Skipping(R.Decoupled(R.Adam(0.01), 0.5)),
        {'no decay': Skipping(R.Adam(0.01)),
         'decay on the skipped batches': R.Decoupled(Skipping(R.Adam(0.01)), 0.5)},
        batch_of=with_nan_batches(nan_at))
    for i in nan_at:
        np.testing.assert_array_equal(trajectory[i], trajectory[i - 1])


def test_lookahead_over_weight_decay():
    model = problems.mlp()
    model.compile(kol.Lookahead(kol.WeightDecay(kol.SGD(0.1, momentum=0.9), 0.2), sync_period=3,
                                slow_step=0.4), 'mse')
    follow(model, LookaheadRef(R.Decoupled(R.SGD(0.1, momentum=0.9), 0.2), 3, 0.4),
           {'no decay': LookaheadRef(R.SGD(0.1, momentum=0.9), 3, 0.4),
            'no lookahead': R.Decoupled(R.SGD(0.1, momentum=0.9), 0.2)})


# ---- which parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize('make, decayed', [
    (lambda first: kol.WeightDecay(kol.Adam(), 0.1), [0, 1, 2, 3]),
    (lambda first: kol.WeightDecay(kol.Adam(), 0.1, exclude=['bias']), [0, 2]),
    (lambda first: kol.WeightDecay(kol.Adam(), 0.1, include=[first]), [0, 1]),
    (lambda first: kol.WeightDecay(keras.optimizers.SGD(), 0.1, include=['kernel', 'bias'],
                                   exclude=[first + 'k', 'bias']), [2]),
    (lambda first: kol.AdamW(exclude_from_weight_decay=['bias', first]), [2]),
    (lambda first: kol.SGDW(weight_decay=0.), [0, 1, 2, 3]),
], ids=['all', 'exclude', 'include', 'include-and-exclude-over-keras', 'adamw', 'sgdw'])
def test_decayed_params_are_exactly_the_chosen_ones(make, decayed):
    model = problems.mlp()
    optimizer = make(layer(model, 0))
    model.compile(optimizer, 'mse')
    model._make_train_function()
    params = model.trainable_weights
    assert [id(v) for v in optimizer.decayed_params] == [id(params[i]) for i in decayed]
    assert list(optimizer.decayed_names) == [params[i].name for i in decayed]


@pytest.mark.parametrize('make', [
    lambda: kol.WeightDecay(kol.Adam(0.01), 0.1, exclude=['bias', 'no_such_weight']),
    lambda: kol.WeightDecay(kol.Adam(0.01), 0.1, include=['no_such_weight']),
    lambda: kol.WeightDecay(keras.optimizers.Adam(0.01), 0.1, exclude=['no_such_weight']),
    lambda: kol.WeightDecay(kol.GradientAccumulation(kol.Adam(0.01), 2), 0.1,
                            exclude=['no_such_weight']),
    lambda: kol.AdamW(0.01, exclude_from_weight_decay=['kernel', 'no_such_weight']),
    lambda: kol.NadamW(0.01, exclude_from_weight_decay=['no_such_weight']),
], ids=['exclude', 'include', 'over-keras', 'over-accumulation', 'adamw', 'nadamw'])
@pytest.mark.parametrize('build', ['train_on_batch', 'fit', 'make_train_function'])
def test_a_pattern_that_matches_nothing_is_refused_and_nothing_changes(make, build):
    model = problems.mlp()
    optimizer = make()
    model.compile(optimizer, 'mse')
    before = [K.get_value(w) for w in model.weights]
    with pytest.raises(ValueError, match='no_such_weight'):
        if build == 'make_train_function':
            model._make_train_function()
        elif build == 'fit':
            model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
        else:
            model.train_on_batch(*BATCH_OF(0))
    for a, b in zip(before, [K.get_value(w) for w in model.weights]):
        np.testing.assert_array_equal(a, b)
    assert untrained(optimizer)


def untrained(optimizer):
    """Whether `optimizer` (and its inner optimizer) hold no trace of a training step: counters
    at 0, slots at their initial values (Nadam's m_schedule 1, the rest 0), or no state yet."""
    for owner in (optimizer, getattr(optimizer, 'optimizer', None)):
        if owner is None:
            continue
        if isinstance(getattr(owner, 'iterations', None), tf.Variable):
            assert K.get_value(owner.iterations) == 0
        for name, w in zip(getattr(owner, 'weight_names', []), owner.weights):
            initial = 1. if name.endswith('m_schedule') else 0.
            assert np.all(K.get_value(w) == initial), name
    return True


@pytest.mark.parametrize('make, error', [
    (lambda: kol.WeightDecay(kol.Adam(), -0.1), ValueError),
    (lambda: kol.WeightDecay(42, 0.1), TypeError),
    (lambda: kol.AdamW(weight_decay=-1.), ValueError),
])
def test_bad_input_is_refused(make, error):
    with pytest.raises(error):
        make()


# ---- AdamW, SGDW, NadamW ------------------------------------------------------------------------

def piecewise():
    return schedules.PiecewiseLinear([0, 10, 20], [0., 0.02, 0.005])


W_CASES = {
    'adamw': (kol.AdamW, kol.Adam, R.AdamW,
              dict(lr=0.01, amsgrad=True, decay=0.05),
              dict(weight_decay=0.3, exclude_from_weight_decay=['bias'])),
    'adamw-schedule-not-scaled': (kol.AdamW, kol.Adam, R.AdamW, dict(lr=0.01),
                                  dict(weight_decay=piecewise, scale_by_lr=False)),
    'sgdw': (kol.SGDW, kol.SGD, R.SGDW, dict(lr=0.1), dict(weight_decay=0.1)),
    'sgdw-nesterov': (kol.SGDW, kol.SGD, R.SGDW,
                      dict(lr=0.1, momentum=0.9, nesterov=True, decay=0.05),
                      dict(weight_decay=0.2)),
    'nadamw': (kol.NadamW, kol.Nadam, R.NadamW, dict(lr=0.01),
               dict(weight_decay=0.02, scale_by_lr=False, exclude_from_weight_decay=['bias'])),
}
W_STEPS = 20
MLP_NAMES = ['dense_a/kernel:0', 'dense_a/bias:0', 'dense_b/kernel:0', 'dense_b/bias:0']


def built(decay):
    return {k: v() if callable(v) and not isinstance(v, type) else v for k, v in decay.items()}


def as_wrapper(decay):
    renamed = {'weight_decay': 'rate', 'exclude_from_weight_decay': 'exclude'}
    return {renamed.get(k, k): v for k, v in built(decay).items()}


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'formula'])
@pytest.mark.parametrize('case', sorted(W_CASES))
def test_w_classes_are_weight_decay_over_their_rule_bit_for_bit(case, fused):
    cls, rule, ref_cls, options, decay = W_CASES[case]
    ours = problems.trajectory(cls(fused=fused, **dict(options, **built(decay))), W_STEPS)
    K.clear_session()
    wrapped = problems.trajectory(kol.WeightDecay(rule(fused=fused, **options),
                                                  **as_wrapper(decay)), W_STEPS)
    assert np.array_equal(ours, wrapped), 'differs from step %d on' % np.argmax(
        np.any(ours != wrapped, axis=1))
    if fused:  # and both follow the reference (of AdamW & co.)
        ref_decay = dict(decay)
        if callable(ref_decay['weight_decay']):
            ref_decay['weight_decay'] = interp([0, 10, 20], [0., 0.02, 0.005])
        ref = ref_cls(names=MLP_NAMES, **dict(options, **ref_decay))
        undecayed = ref_cls(names=MLP_NAMES, **dict(options, **dict(ref_decay, weight_decay=0.)))
        weights = [w.astype(np.float64) for w in problems.initial_weights()]
        plain = [w.copy() for w in weights]
        for i in range(W_STEPS):
            x, y = BATCH_OF(i)
            ref.step(weights, problems.numpy_gradients(weights, x, y))
            undecayed.step(plain, problems.numpy_gradients(plain, x, y))
            np.testing.assert_allclose(ours[i], problems.flat(weights), rtol=RTOL, atol=ATOL,
                                       err_msg='step %d' % i)
        assert np.abs(problems.flat(plain) - ours[-1]).max() > MARGIN


# ---- tf.contrib.opt.AdamWOptimizer ------------------------------------------------------------

class GatedTFOptimizer(keras.optimizers.TFOptimizer):
    """Keras's TFOptimizer with every op of apply_gradients (tf.contrib's decay assign_sub too)
    waiting for every gradient and the loss: ungated, the decay may run before the forward or
    backward pass has read the weight (TF1 ref variables), so gradients would be taken at the
    decayed weights on some runs."""

    def get_updates(self, loss, params):
        grads_and_vars = self.optimizer.compute_gradients(loss, params)
        grads = after_all([g for g, _ in grads_and_vars], also=[loss])
        with tf.control_dependencies(grads):
            update = self.optimizer.apply_gradients(list(zip(grads, params)))
        self.updates = [K.update_add(self.iterations, 1), update]
        return self.updates


def test_scale_by_lr_false_is_tf_contrib_adamw():
    """tf.contrib's AdamWOptimizer decays var -= weight_decay * var, then applies Adam (its
    epsilon added to sqrt(v), bias correction folded into the lr, as Keras): the same as
    kol.AdamW(scale_by_lr=False, epsilon=1e-8) and its reference, to float rounding (measured:
    about 1e-7 relative; TF keeps beta^t as running float32 products, ours computes the power)."""
    lr, rate = 0.01, 0.02
    model = problems.mlp()
    model.compile(GatedTFOptimizer(tf.contrib.opt.AdamWOptimizer(rate, learning_rate=lr,
                                                                  epsilon=1e-8)), 'mse')
    theirs = follow(model, R.AdamW(lr, epsilon=1e-8, weight_decay=rate, scale_by_lr=False),
                    {'no decay': R.Adam(lr, epsilon=1e-8),
                     'scaled by lr': R.AdamW(lr, epsilon=1e-8, weight_decay=rate)})
    for fused in (True, False):
        K.clear_session()
        ours = problems.trajectory(kol.AdamW(lr, epsilon=1e-8, weight_decay=rate,
                                             scale_by_lr=False, fused=fused), STEPS)
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


# ---- state: fresh-process resume -------------------------------------------------------------

def test_resume_in_a_fresh_process_with_keras_load_model(tmp_path):
    """kol.save_model mid-cycle (7 batches), keras.models.load_model in a fresh process (the
    package imported, no custom_objects): the next 9 steps are this process's, bit for bit."""
    makers = [
        lambda: kol.WeightDecay(kol.GradientAccumulation(kol.Adam(0.01, decay=0.1), 4),
                                schedules.PiecewiseLinear([0, 3], [0.5, 0.1]), exclude=['bias']),
        lambda: kol.WeightDecay(keras.optimizers.RMSprop(), 0.3, scale_by_lr=False,
                                include=['kernel']),
        lambda: kol.AdamW(0.01, weight_decay=schedules.CosineDecay(0.3, 10),
                          exclude_from_weight_decay=['bias']),
        lambda: kol.NadamW(0.01, weight_decay=0.1, scale_by_lr=False),
    ]
    jobs, heres = [], []
    for k, make in enumerate(makers):
        K.clear_session()
        path = str(tmp_path / ('model%d.h5' % k))
        before, here = resume.save_and_continue(make(), path, 7, 9, save='kol')
        heres.append(here)
        jobs.append(dict(do='resume', path=path, start=7, steps=9, load='keras'))
    theres, _ = resume.in_fresh_process(jobs, str(tmp_path))
    for here, there in zip(heres, theres):
        assert there.optimizer == here.optimizer
        np.testing.assert_array_equal(there.weights, here.weights)


def test_config_round_trips():
    opt = kol.WeightDecay(kol.Adam(0.02), schedules.PiecewiseLinear([0, 5], [0.1, 0.]),
                          exclude=['bias'], include=['dense'], scale_by_lr=False)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(clone) is kol.WeightDecay and type(clone.optimizer) is kol.Adam
    assert keras.optimizers.serialize(clone) == keras.optimizers.serialize(opt)
    config = clone.get_config()
    assert list(config['exclude']) == ['bias'] and list(config['include']) == ['dense']
    assert config['scale_by_lr'] is False


# ---- property: the decay arithmetic on raw variables ------------------------------------------

@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lr=f32(1e-3, 0.5), rate=f32(0., 0.5), scale_by_lr=st.booleans(), momentum=f32(0., 0.9),
       decay=f32(0., 0.2), fused=st.booleans(), steps=st.integers(1, 4),
       seed=st.integers(0, 2 ** 32 - 1))
def test_decay_arithmetic_on_raw_variables(lr, rate, scale_by_lr, momentum, decay, fused, steps,
                                           seed):
    """apply_gradients of WeightDecay(SGD) on two variables, one excluded by name, for random
    hyperparameters and gradients: the reference, step by step."""
    K.clear_session()
    rng = np.random.RandomState(seed)
    params = [rng.uniform(-2, 2, (3, 2)).astype(np.float32),
              rng.uniform(-2, 2, (4,)).astype(np.float32)]
    variables = [K.variable(params[0], name='decayed'), K.variable(params[1], name='kept')]
    placeholders = [tf.placeholder(tf.float32, p.shape) for p in params]
    opt = kol.WeightDecay(kol.SGD(lr, momentum=momentum, decay=decay, fused=fused), rate,
                          scale_by_lr=scale_by_lr, exclude=['kept'])
    step = opt.apply_gradients(zip(placeholders, variables))
    ref = R.Decoupled(R.SGD(lr, momentum=momentum, decay=decay), rate, scale_by_lr,
                      names=[v.name for v in variables], exclude=['kept'])
    expected = [p.astype(np.float64) for p in params]
    for i in range(steps):
        grads = [rng.uniform(-3, 3, p.shape).astype(np.float32) for p in params]
        K.get_session().run(step, dict(zip(placeholders, grads)))
        ref.step(expected, grads)
        for variable, value in zip(variables, expected):
            np.testing.assert_allclose(K.get_value(variable), value, rtol=RTOL, atol=ATOL,
                                       err_msg='step %d' % i)


# ---- the reference itself ---------------------------------------------------------------------

def test_reference_closed_forms():
    """Plain SGD with decoupled decay has a closed form per step; the masks follow the rules."""
    p, g = np.array([1., -2.]), np.array([0.5, 0.25])
    R.Decoupled(R.SGD(0.1), 0.2).step([p], [g])
    np.testing.assert_allclose(p, [1. - 0.05 - 0.02, -2. - 0.025 + 0.04])
    p = np.array([1., -2.])
    R.Decoupled(R.SGD(0.1), 0.2, scale_by_lr=False).step([p], [g])
    np.testing.assert_allclose(p, [1. - 0.05 - 0.2, -2. - 0.025 + 0.4])
    # the constraint sees the undecayed step; the decay comes after it
    p = np.array([1., -2.])
    R.Decoupled(R.SGD(0.1), 0.2, constraints={0: non_negative}).step([p], [g])
    np.testing.assert_allclose(p, [1. - 0.05 - 0.02, 0. + 0.04])
    names = ['dense_1/kernel:0', 'dense_1/bias:0', 'dense_2/kernel:0']
    assert R.decay_mask(names, exclude=['bias']) == [True, False, True]
    assert R.decay_mask(names, include=['dense_2'], exclude=['bias']) == [False, False, True]
    with pytest.raises(ValueError, match='gamma'):
        R.decay_mask(names, exclude=['gamma'])
    with pytest.raises(ValueError, match='beta'):
        R.decay_mask(names, include=['kernel', 'beta'])
    # a schedule is evaluated at the number of earlier steps
    seen = []
    ref = R.Decoupled(R.SGD(0.), lambda k: seen.append(k) or 0.)
    for _ in range(3):
        ref.step([np.ones(2)], [np.ones(2)])
    assert seen == [0, 1, 2]
