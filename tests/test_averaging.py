"""Weight averaging (issue 17): ExponentialMovingAverage and StochasticWeightAveraging against
NumPy references (constant and dynamic decay, under gradient accumulation, over Keras's
built-ins, under SkipNonFinite, in every composition that is allowed), swap_weights /
assign_average, reset, fresh-process resume, update_batch_norm against a NumPy cumulative mean
of the batch statistics, callbacks.AveragedEvaluation, and the compositions that are refused.

Each reference check also computes plausibly-wrong variants (an average that starts from zero,
or lags one update, the dynamic decay a step off, SWA's count from 0, ...) and asserts that
they are far from what the package computes, so the tolerance cannot hide them.

This file is also the script of the fresh-process resume: `python test_averaging.py JOBS.json`.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import compat
from keras_opt_legacy.averaging import Averaging
import problems
import reference

HERE = os.path.dirname(os.path.abspath(__file__))
X, Y = problems.data(n=640)
EMA, SWA = kol.ExponentialMovingAverage, kol.StochasticWeightAveraging
UPDATES = 55  # real updates in the reference checks


def flat(arrays):
    return problems.flat(arrays).astype(np.float64)


def averages_in(optimizer):
    """The averaging wrappers in `optimizer`'s chain, outermost first."""
    found = []
    while optimizer is not None:
        if isinstance(optimizer, Averaging):
            found.append(optimizer)
        optimizer = getattr(optimizer, 'optimizer', None)
    return found


# ---- the NumPy references -----------------------------------------------------------------------

def ema_reference(points, decay, dynamic=False, start=None, lag=False, shift=0):
    """The EMA after each update of the trajectory `points` ([0]: the parameters before the
    first update): avg <- d_t avg + (1 - d_t) p_t, d_t = min(decay, (1 + t) / (10 + t)) if
    `dynamic`. The wrong variants: `start` (an initial average other than the parameters, e.g.
    zeros), `lag` (averaging the parameters before each update), `shift` (t off by `shift`)."""
    avg = points[0].copy() if start is None else start.copy()
    out = []
    for t in range(1, len(points)):
        tt = t + shift
        d = min(decay, (1. + tt) / (10. + tt)) if dynamic else decay
        avg = d * avg + (1. - d) * points[t - 1 if lag else t]
        out.append(avg)
    return np.array(out)


def swa_reference(points, start, period, with_initial=False):
    """SWA after each update of `points` ([0]: before the first update): the mean of the
    parameters after updates start, start + period, ...; before `start`, the parameters. Also
    the count. `with_initial`: a wrong variant that also averages points[0]."""
    total, count = (points[0].copy(), 1) if with_initial else (0., 0)
    out, counts = [], []
    for t in range(1, len(points)):
        if t >= start and (t - start) % period == 0:
            total, count = total + points[t], count + 1
        out.append(total / count if count else points[t])
        counts.append(count)
    return np.array(out), counts


def numpy_trajectory(make_reference, updates, batch_size):
    """The flat float64 parameters before and after each of `updates` NumPy steps of
    `make_reference()` on `problems.batches(X, Y, batch_size)`."""
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    rule, batch_of = make_reference(), problems.batches(X, Y, batch_size)
    points = [flat(weights)]
    for i in range(updates):
        rule.step(weights, problems.numpy_gradients(weights, *batch_of(i)))
        points.append(flat(weights))
    return np.array(points)


def keras_run(optimizer, micro_batches, batch_size=16, batch_of=None):
    """`problems.compiled(optimizer)` trained `micro_batches` batches; per real update of the
    outermost average: the flat parameters, each average's values, and the average's counter.
    Asserts that between real updates no average moves. Returns (points with the initial
    parameters first, [averages per real update] per averaging wrapper, the model)."""
    model = problems.compiled(optimizer)
    compat.make_train_function(model)  # the averages exist from here on
    found = averages_in(optimizer)
    batch_of = batch_of or problems.batches(X, Y, batch_size)
    points, averages = [flat(model.get_weights())], [[] for _ in found]
    counter = found[0].iterations
    before = [flat(a.average_values()) for a in found]
    for i in range(micro_batches):
        seen = K.get_value(counter)
        model.train_on_batch(*batch_of(i))
        now = [flat(a.average_values()) for a in found]
        if K.get_value(counter) == seen:  # no real update: nothing of the averages moved
            for b, n in zip(before, now):
                np.testing.assert_array_equal(n, b)
            continue
        assert K.get_value(counter) == seen + 1
        points.append(flat(model.get_weights()))
        for values, n in zip(averages, now):
            values.append(n)
        before = now
    return np.array(points), [np.array(a) for a in averages], model


def far(a, b, margin=1e-4):
    """The largest difference between two sequences of flat arrays, which must exceed `margin`
    (a wrong variant the test must be able to tell apart)."""
    difference = np.abs(np.asarray(a) - np.asarray(b)).max()
    assert difference > margin, difference
    return difference


# ---- the averages against NumPy ------------------------------------------------------------------

EMA_CASES = [
    # (id, optimizer, NumPy rule, micro-batches per update, decay, dynamic)
    ('adam-constant', lambda: EMA(kol.Adam(0.01), decay=0.9),
     lambda: reference.Adam(lr=0.01), 1, 0.9, False),
    # decay 0.85: (1 + t)/(10 + t) is below it up to t = 49, above after: both regimes.
    ('adam-dynamic', lambda: EMA(kol.Adam(0.01), decay=0.85, dynamic_decay=True),
     lambda: reference.Adam(lr=0.01), 1, 0.85, True),
    ('accumulation-keras-adam', lambda: EMA(kol.GradientAccumulation(
        keras.optimizers.Adam(0.01), 4), decay=0.9),
     lambda: reference.Adam(lr=0.01), 4, 0.9, False),
    ('keras-sgd-nesterov-dynamic', lambda: EMA(keras.optimizers.SGD(
        0.1, momentum=0.9, nesterov=True), decay=0.95, dynamic_decay=True),
     lambda: reference.SGD(lr=0.1, momentum=0.9, nesterov=True), 1, 0.95, True),
]


@pytest.mark.parametrize('make, make_reference, steps, decay, dynamic',
                         [c[1:] for c in EMA_CASES], ids=[c[0] for c in EMA_CASES])
def test_ema_follows_the_numpy_reference(make, make_reference, steps, decay, dynamic):
    optimizer = make()
    points, (averages,), _ = keras_run(optimizer, UPDATES * steps, batch_size=64 // steps)
    assert len(averages) == UPDATES and K.get_value(optimizer.iterations) == UPDATES
    expected_points = numpy_trajectory(make_reference, UPDATES, 64)
    # The inner optimizer trains as it would alone (batch 16 x 4 = 64 under accumulation)...
    np.testing.assert_allclose(points, expected_points, rtol=0, atol=2e-5)
    assert np.abs(points[-1] - points[0]).max() > 0.1  # it trains
    # ...and the average is the reference's, all NumPy, and the EMA of the model's own
    # trajectory, to float32 rounding.
    np.testing.assert_allclose(averages, ema_reference(expected_points, decay, dynamic),
                               rtol=0, atol=2e-5)
    own = ema_reference(points, decay, dynamic)
    np.testing.assert_allclose(averages, own, rtol=0, atol=1e-6)
    # Plausibly-wrong averages are far from it.
    far(averages, ema_reference(points, decay, dynamic, start=np.zeros_like(points[0])))
    far(averages, ema_reference(points, decay, dynamic, lag=True))
    far(averages, ema_reference(points, decay, not dynamic))
    if dynamic:
        far(averages, ema_reference(points, decay, dynamic, shift=-1))  # t counted from 0
        far(averages, ema_reference(points, decay, dynamic, shift=1))
    if steps > 1:  # averaging every micro-batch: the same parameters several times
        repeated = np.concatenate([points[:1], np.repeat(points[1:], steps, axis=0)])
        far(averages, ema_reference(repeated, decay, dynamic)[steps - 1::steps])


SWA_CASES = [
    ('adam', lambda: SWA(kol.Adam(0.01), start=10, period=3), lambda: reference.Adam(lr=0.01),
     1, 10, 3),
    ('sgd-every-update', lambda: SWA(kol.SGD(0.1), start=20), lambda: reference.SGD(lr=0.1),
     1, 20, 1),
    ('accumulation-keras-sgd', lambda: SWA(kol.GradientAccumulation(
        keras.optimizers.SGD(0.1, momentum=0.9), 4), start=5, period=2),
     lambda: reference.SGD(lr=0.1, momentum=0.9), 4, 5, 2),
]


@pytest.mark.parametrize('make, make_reference, steps, start, period',
                         [c[1:] for c in SWA_CASES], ids=[c[0] for c in SWA_CASES])
def test_swa_follows_the_numpy_reference(make, make_reference, steps, start, period):
    optimizer = make()
    model = problems.compiled(optimizer)
    with pytest.raises(RuntimeError, match='no averages yet'):
        optimizer.average_values()
    K.clear_session()
    optimizer = make()
    points, (averages,), _ = keras_run(optimizer, UPDATES * steps, batch_size=64 // steps)
    expected_points = numpy_trajectory(make_reference, UPDATES, 64)
    np.testing.assert_allclose(points, expected_points, rtol=0, atol=2e-5)
    expected, counts = swa_reference(expected_points, start, period)
    np.testing.assert_allclose(averages, expected, rtol=0, atol=2e-5)
    own, counts = swa_reference(points, start, period)
    np.testing.assert_allclose(averages, own, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(averages[:start - 1], points[1:start])  # before: the params
    assert K.get_value(optimizer.averaged) == counts[-1] == (UPDATES - start) // period + 1
    far(averages, swa_reference(points, start - 1, period)[0])  # updates counted from 0
    if period > 1:
        far(averages, swa_reference(points, start, 1)[0])
    far(averages, swa_reference(points, start, period, with_initial=True)[0])
    del model


def nan_batches(bad):
    """problems.batches(X, Y, 16), with a NaN target in the batches `bad`."""
    batch_of = problems.batches(X, Y, 16)

    def batch(i):
        x, y = batch_of(i)
        if i in bad:
            y = y.copy()
            y[0] = np.nan
        return x, y
    return batch


@pytest.mark.parametrize('make, wrapper', [
    (lambda: kol.SkipNonFinite(EMA(kol.Adam(0.01), decay=0.8)), 'outside'),
    (lambda: EMA(kol.SkipNonFinite(kol.Adam(0.01)), decay=0.8, dynamic_decay=True), 'inside'),
    (lambda: kol.SkipNonFinite(SWA(kol.Adam(0.01), start=2, period=2)), 'outside'),
], ids=['skip-over-ema', 'ema-over-skip', 'skip-over-swa'])
def test_a_skipped_batch_leaves_the_average_alone(make, wrapper):
    optimizer = make()
    average = averages_in(optimizer)[0]
    bad = {3, 4, 9}
    points, (averages,), model = keras_run(optimizer, 16, batch_of=nan_batches(bad))
    assert len(averages) == 16 - len(bad) == K.get_value(average.iterations)
    assert np.all(np.isfinite(averages))
    if isinstance(average, EMA):
        d, dynamic = average.decay, average.dynamic_decay
        np.testing.assert_allclose(averages, ema_reference(points, d, dynamic), rtol=0,
                                   atol=1e-6)
        # Averaging on the skipped batches too (the unchanged parameters once more) is wrong.
        with_skipped = np.array([points[0]] + [points[sum(j not in bad for j in range(i))]
                                               for i in range(1, 17)])
        wrong = ema_reference(with_skipped, d, dynamic)[[i for i in range(16) if i not in bad]]
        far(averages, wrong)
    else:
        np.testing.assert_allclose(averages, swa_reference(points, 2, 2)[0], rtol=0, atol=1e-6)


# ---- compositions ---------------------------------------------------------------------------------

ALLOWED = {
    'multipliers-over-ema': lambda: kol.LearningRateMultipliers(
        EMA(kol.Adam(0.01), decay=0.8), {'dense_1/': 0.1}),
    'ema-over-multipliers': lambda: EMA(kol.LearningRateMultipliers(
        kol.Adam(0.01), {'dense_1/': 0.1}), decay=0.8),
    'ema-over-ema': lambda: EMA(EMA(kol.SGD(0.1), decay=0.5), decay=0.8),
    'swa-over-ema': lambda: SWA(EMA(kol.SGD(0.1), decay=0.7), start=3, period=2),
    'ema-over-lookahead': lambda: EMA(kol.Lookahead(kol.SGD(0.1, momentum=0.9), 3), 0.8),
    'ema-over-weight-decay': lambda: EMA(kol.WeightDecay(kol.Adam(0.01), 0.5), 0.8,
                                         dynamic_decay=True),
    'skip-over-ema-over-accumulation': lambda: kol.SkipNonFinite(EMA(
        kol.GradientAccumulation(keras.optimizers.RMSprop(0.01), 3), decay=0.8)),
    'ema-over-adafactor': lambda: EMA(kol.Adafactor(), decay=0.8),
}


@pytest.mark.parametrize('name', sorted(ALLOWED))
def test_allowed_compositions_average_what_the_model_holds(name):
    """Each average follows the parameters the model holds after each real update, however it
    is composed (every average of the chain is checked)."""
    optimizer = ALLOWED[name]()
    points, averages, model = keras_run(optimizer, 36)
    assert np.abs(points[-1] - points[0]).max() > 1e-2
    for average, values in zip(averages_in(optimizer), averages):
        if isinstance(average, EMA):
            expected = ema_reference(points, average.decay, average.dynamic_decay)
        else:
            expected = swa_reference(points, average.start, average.period)[0]
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)
        far(values, points[1:], 1e-3)  # an average, not the parameters


def periodic_averaging():
    from horovod_required import horovod_or_skip
    if not horovod_or_skip(skip=False):
        return None
    from keras_opt_legacy import distributed
    return lambda optimizer: distributed.PeriodicAveraging(optimizer, 2)


@pytest.mark.parametrize('outer', ['GradientAccumulation', 'Lookahead', 'WeightDecay',
                                   'PeriodicAveraging'])
@pytest.mark.parametrize('average', [
    lambda: EMA(kol.SGD()), lambda: SWA(kol.Adam(), 2),
    lambda: kol.SkipNonFinite(EMA(kol.SGD())),  # not only directly inside
    lambda: kol.LearningRateMultipliers(SWA(kol.SGD(), 3), {'kernel': 2.})],
    ids=['ema', 'swa', 'skip-over-ema', 'multipliers-over-swa'])
def test_an_average_inside_a_wrapper_that_changes_the_parameters_is_refused(outer, average):
    wrap = {'GradientAccumulation': lambda o: kol.GradientAccumulation(o, 2),
            'Lookahead': lambda o: kol.Lookahead(o),
            'WeightDecay': lambda o: kol.WeightDecay(o, 0.01),
            'PeriodicAveraging': periodic_averaging()}[outer]
    if wrap is None:
        pytest.skip('Horovod is not installed')
    inner = average()
    with pytest.raises(ValueError, match='cannot be inside %s.*Put the average outside' % outer):
        wrap(inner)


@pytest.mark.parametrize('make, error, message', [
    (lambda: EMA(kol.SGD(), decay=1.5), ValueError, 'decay'),
    (lambda: EMA(kol.SGD(), decay=-0.1), ValueError, 'decay'),
    (lambda: EMA(kol.SGD(), dynamic_decay='yes'), TypeError, 'dynamic_decay'),
    (lambda: SWA(kol.SGD(), start=0), ValueError, 'start'),
    (lambda: SWA(kol.SGD(), start=2.5), TypeError, 'start'),
    (lambda: SWA(kol.SGD(), start=2, period=0), ValueError, 'period'),
    (lambda: EMA(42), TypeError, 'expected an optimizer'),
])
def test_bad_arguments_get_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_weights_list_the_averages_and_config_round_trips():
    optimizer = EMA(kol.GradientAccumulation(keras.optimizers.Adam(0.01), 2), decay=0.7,
                    dynamic_decay=True)
    keras_run(optimizer, 4)
    names = optimizer.weight_names
    assert names[:2] == ['iterations', 'started']
    assert [n for n in names if n.startswith('average/')] == [
        'average/dense_1/kernel', 'average/dense_1/bias', 'average/dense_2/kernel',
        'average/dense_2/bias']
    np.testing.assert_array_equal(
        flat(K.batch_get_value(optimizer.weights[2:6])), flat(optimizer.average_values()))
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(clone) is EMA and clone.decay == pytest.approx(0.7) and clone.dynamic_decay
    assert type(clone.optimizer.optimizer) is keras.optimizers.Adam
    swa = keras.optimizers.deserialize(keras.optimizers.serialize(SWA(kol.SGD(), 4, 3)))
    assert (type(swa), swa.start, swa.period) == (SWA, 4, 3)


# ---- swap_weights, assign_average, reset -------------------------------------------------------

def batchnorm_model(optimizer, weights=None):
    tf.set_random_seed(0)
    model = keras.models.Sequential([
        keras.layers.Dense(8, input_shape=(problems.D,)),
        keras.layers.BatchNormalization(momentum=0.5),
        keras.layers.Activation('tanh'),
        keras.layers.Dense(1)])
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer, 'mse', metrics=['mae'])
    return model


def values(variables):
    return [np.array(v) for v in K.batch_get_value(variables)]


def assert_all_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('make', [lambda: EMA(kol.Adam(0.01), decay=0.8),
                                  lambda: SWA(kol.Adam(0.01), start=3)], ids=['ema', 'swa'])
def test_swap_weights_restores_every_weight_bitwise_also_on_an_exception(make):
    optimizer = make()
    model = batchnorm_model(optimizer)
    initial = model.get_weights()
    batch_of = problems.batches(X, Y, 16)
    problems.train(model, 8, batch_of)
    raw = values(model.weights)
    state = values(optimizer.weights)
    trainable_ids = {id(w) for w in model.trainable_weights}
    trainable = [i for i, w in enumerate(model.weights) if id(w) in trainable_ids]
    for fail in (False, True):
        raised = False
        try:
            with optimizer.swap_weights(model) as swapped:
                assert swapped is model
                inside = values(model.weights)
                assert_all_equal([inside[i] for i in trainable], optimizer.average_values())
                assert_all_equal([v for i, v in enumerate(inside) if i not in trainable],
                                 [v for i, v in enumerate(raw) if i not in trainable])
                assert far(flat(inside), flat(raw), 1e-3)  # the averages differ from the raw
                kol.update_batch_norm(model, X[:64])  # the statistics change inside too
                moved = values(model.non_trainable_weights)
                assert far(flat(moved), flat([v for i, v in enumerate(raw)
                                              if i not in trainable]), 1e-3)
                if fail:
                    raise KeyError('in the body')
        except KeyError:
            raised = True
        assert raised == fail  # the body's exception comes through
        assert_all_equal(values(model.weights), raw)
        assert_all_equal(values(optimizer.weights), state)
    # Training goes on exactly as without the swaps.
    after = []
    problems.train(model, 6, lambda i: batch_of(8 + i),
                   lambda i: after.append(values(model.weights + optimizer.weights)))
    K.clear_session()
    plain_optimizer = make()
    plain = batchnorm_model(plain_optimizer, initial)
    problems.train(plain, 8, batch_of)
    for i in range(6):
        plain.train_on_batch(*batch_of(8 + i))
        assert_all_equal(values(plain.weights + plain_optimizer.weights), after[i])


def test_swap_weights_names_the_misuse():
    optimizer = EMA(kol.Adam(0.01))
    model = problems.compiled(optimizer)
    with pytest.raises(RuntimeError, match='no averages yet'):
        with optimizer.swap_weights(model):
            pass
    model.train_on_batch(*problems.batches(X, Y, 16)(0))
    other = problems.compiled(kol.Adam(0.01))
    with pytest.raises(ValueError, match='not the optimizer of the model'):
        with optimizer.swap_weights(other):
            pass
    with pytest.raises(ValueError, match='not the optimizer of the model'):
        optimizer.assign_average(other)


def test_assign_average_keeps_the_averages_in_the_model():
    optimizer = kol.SkipNonFinite(EMA(kol.Adam(0.01), decay=0.8))
    average = optimizer.optimizer
    model = batchnorm_model(optimizer)
    problems.train(model, 8, problems.batches(X, Y, 16))
    raw, state = values(model.weights), values(optimizer.weights)
    averaged = average.average_values()
    average.assign_average(model)
    assert_all_equal(values(model.trainable_weights), averaged)
    non_trainable = {id(w) for w in model.non_trainable_weights}
    assert_all_equal(values(model.non_trainable_weights),
                     [v for w, v in zip(model.weights, raw) if id(w) in non_trainable])
    assert_all_equal(values(optimizer.weights), state)
    far(flat(values(model.weights)), flat(raw), 1e-3)
    with average.swap_weights(model):  # now the parameters equal their average
        pass
    assert_all_equal(values(model.trainable_weights), averaged)


@pytest.mark.parametrize('make', [
    lambda: EMA(kol.Adam(0.01), decay=0.8, dynamic_decay=True),
    lambda: EMA(kol.GradientAccumulation(kol.Adam(0.01), 2), decay=0.8),
    lambda: SWA(kol.Adam(0.01), start=3, period=2)], ids=['ema', 'ema-accumulation', 'swa'])
def test_reset_restarts_the_average_from_the_parameters(make):
    optimizer = make()
    average = averages_in(optimizer)[0]
    batch_of = problems.batches(X, Y, 16)
    points, _, model = keras_run(optimizer, 10, batch_of=batch_of)
    kept = flat(average.average_values())
    kol.reset_optimizer(optimizer)
    assert K.get_value(average.iterations) == 0
    np.testing.assert_array_equal(flat(average.average_values()), flat(model.get_weights()))
    # From here on, equal (bitwise) to a fresh optimizer on the model's weights.
    at_reset = model.get_weights()
    after, moved = [], []
    for i in range(10, 22):
        model.train_on_batch(*batch_of(i))
        after.append(flat(average.average_values()))
        moved.append(flat(model.get_weights()))
    K.clear_session()
    fresh = make()
    again = problems.compiled(fresh)
    again.set_weights(at_reset)
    for k, i in enumerate(range(10, 22)):
        again.train_on_batch(*batch_of(i))
        np.testing.assert_array_equal(flat(averages_in(fresh)[0].average_values()), after[k])
    # A reset that kept the old average would be far from it.
    steps = getattr(optimizer, 'optimizer', None)
    steps = getattr(steps, 'steps', 1)
    np.testing.assert_array_equal(points[-1], flat(at_reset))
    restarted = np.array([points[-1]] + moved[steps - 1::steps])
    if isinstance(average, EMA):
        np.testing.assert_allclose(after[steps - 1::steps], ema_reference(
            restarted, average.decay, average.dynamic_decay), rtol=0, atol=1e-6)
        kept_going = ema_reference(restarted, average.decay, average.dynamic_decay, start=kept)
        far(after[steps - 1::steps], kept_going)
    else:
        assert K.get_value(averages_in(fresh)[0].averaged) == 5  # updates 3, 5, ..., 11
        expected, counts = swa_reference(restarted, average.start, average.period)
        np.testing.assert_allclose(after, expected, rtol=0, atol=1e-6)
        kept_going = [(4 * kept + c * e) / (4 + c) for c, e in zip(counts, expected)]
        far(after, kept_going)  # the mean of updates 3, 5, 7, 9 before the reset kept


# ---- fresh-process resume --------------------------------------------------------------------

RESUME = {
    # (optimizer, batches before the save, after, save, load)
    'ema-over-accumulation-keras-adam': (lambda: EMA(kol.GradientAccumulation(
        keras.optimizers.Adam(0.01), 3), decay=0.8), 7, 14, 'keras', 'keras'),  # mid-cycle
    'ema-dynamic': (lambda: EMA(kol.Adam(0.01), decay=0.9, dynamic_decay=True), 6, 10,
                    'kol', 'kol'),
    'swa': (lambda: SWA(kol.Adam(0.01), start=3, period=2), 6, 10, 'keras', 'keras'),
    'skip-over-ema-over-swa': (lambda: kol.SkipNonFinite(EMA(SWA(kol.SGD(0.1), 4), 0.8)), 6,
                               8, 'kol', 'kol'),
}
SAVE = {'kol': kol.save_model, 'keras': lambda model, path: model.save(path)}
LOAD = {'kol': kol.load_model, 'keras': keras.models.load_model}


def continue_training(model, start, steps):
    """Train batches start..start+steps-1: per batch, the parameters, every average and the
    whole optimizer state, flat."""
    batch_of = problems.batches(X, Y, 16)
    found = averages_in(model.optimizer)
    runs = []
    for i in range(start, start + steps):
        model.train_on_batch(*batch_of(i))
        runs.append(np.concatenate([flat(model.get_weights())] +
                                   [flat(a.average_values()) for a in found] +
                                   [flat(K.batch_get_value(model.optimizer.weights))]))
    return np.array(runs)


def child(spec):
    """The fresh process: load each job's file and continue; writes SPEC.<name>.npy."""
    with open(spec) as f:
        jobs = json.load(f)
    for name, job in sorted(jobs.items()):
        K.clear_session()
        model = LOAD[job['load']](job['path'])
        np.save('%s.%s.npy' % (spec, name), continue_training(model, job['start'],
                                                              job['steps']))


def test_resume_in_a_fresh_process_is_exact(tmp_path):
    here, jobs = {}, {}
    for name, (make, steps, then, save, load) in sorted(RESUME.items()):
        K.clear_session()
        optimizer = make()
        model = problems.compiled(optimizer)
        problems.train(model, steps, problems.batches(X, Y, 16))
        for average in averages_in(optimizer):  # a restart from the params would show
            far(flat(average.average_values()), flat(model.get_weights()), 1e-3)
        path = str(tmp_path / ('%s.h5' % name))
        SAVE[save](model, path)
        here[name] = continue_training(model, steps, then)
        jobs[name] = dict(path=path, start=steps, steps=then, load=load)
    spec = str(tmp_path / 'jobs.json')
    with open(spec, 'w') as f:
        json.dump(jobs, f)
    subprocess.run([sys.executable, os.path.abspath(__file__), spec], check=True,
                   env=dict(os.environ, PYTHONWARNINGS='ignore'))
    for name in RESUME:
        np.testing.assert_array_equal(np.load('%s.%s.npy' % (spec, name)), here[name],
                                      err_msg=name)


# ---- update_batch_norm --------------------------------------------------------------------------

EPSILON = 0.1  # large, so that the variance's correction n / (n - (1 + eps)) shows


def two_batchnorm_model(optimizer=None):
    """Dense(8) -> BN -> tanh -> Dense(6) -> BN -> Dense(1), with gamma and beta not 1 and 0."""
    tf.set_random_seed(0)
    model = keras.models.Sequential([
        keras.layers.Dense(8, input_shape=(problems.D,)),
        keras.layers.BatchNormalization(epsilon=EPSILON, momentum=0.),
        keras.layers.Activation('tanh'),
        keras.layers.Dense(6),
        keras.layers.BatchNormalization(epsilon=EPSILON, momentum=0.),
        keras.layers.Dense(1)])
    rng = np.random.RandomState(3)
    for layer in (model.layers[1], model.layers[4]):
        size = K.int_shape(layer.gamma)[0]
        K.batch_set_value([(layer.gamma, 1. + 0.5 * rng.rand(size)),
                           (layer.beta, 0.3 * rng.randn(size))])
    if optimizer is not None:
        model.compile(optimizer, 'mse')
    return model


def numpy_batch_statistics(weights, x, correction=True):
    """The two layers' (mean, variance) of one batch in the training phase, in float64: the
    variance with Keras's correction n / (n - (1 + eps)) (or without: `correction=False`)."""
    w = [np.asarray(a, np.float64) for a in weights]
    (k1, b1, g1, be1, _, _, k2, b2, g2, be2, _, _) = w[:12]
    n = len(x)
    factor = n / (n - (1. + EPSILON)) if correction else 1.
    h = x.astype(np.float64).dot(k1) + b1
    m1, v1 = h.mean(axis=0), h.var(axis=0)
    a = np.tanh(g1 * (h - m1) / np.sqrt(v1 + EPSILON) + be1)
    h2 = a.dot(k2) + b2
    m2, v2 = h2.mean(axis=0), h2.var(axis=0)
    return [m1, v1 * factor, m2, v2 * factor]


def moving_statistics(model):
    return [np.array(v, np.float64) for v in K.batch_get_value(
        [v for layer in (model.layers[1], model.layers[4])
         for v in (layer.moving_mean, layer.moving_variance)])]


def test_update_batch_norm_is_the_cumulative_mean_of_the_batch_statistics():
    """SWA's final pass: inside swap_weights, the statistics for the averaged weights, each the
    mean over the batches (equal weights, a short last batch too: torch's update_bn) of what
    Keras feeds its moving averages."""
    optimizer = SWA(kol.Adam(0.01), start=2)
    model = two_batchnorm_model(optimizer)
    problems.train(model, 10, problems.batches(X, Y, 16))
    data = X[:100]  # batches of 32, 32, 32 and 4
    raw = moving_statistics(model)
    with optimizer.swap_weights(model):
        assert kol.update_batch_norm(model, data, batch_size=32) == 4
        found = moving_statistics(model)
        weights = model.get_weights()
        assert_all_equal(values(model.trainable_weights), optimizer.average_values())
    assert_all_equal(moving_statistics(model), raw)
    per_batch = [numpy_batch_statistics(weights, data[i:i + 32]) for i in range(0, 100, 32)]
    expected = [np.mean(s, axis=0) for s in zip(*per_batch)]
    for f, e in zip(found, expected):
        np.testing.assert_allclose(f, e, rtol=1e-5, atol=1e-6)
    # Wrong variants: weighted by sample count, the variance without the correction or with
    # n / (n - 1), the raw weights' statistics.
    sizes = np.array([32, 32, 32, 4.])
    weighted = [np.tensordot(sizes / sizes.sum(), np.array(s), axes=1) for s in zip(*per_batch)]
    uncorrected = [np.mean(s, axis=0) for s in zip(*[
        numpy_batch_statistics(weights, data[i:i + 32], False) for i in range(0, 100, 32)])]
    bessel = [np.mean(s, axis=0) for s in zip(*[
        [a * (len(data[i:i + 32]) - 1. - EPSILON) / (len(data[i:i + 32]) - 1.) if k % 2 else a
         for k, a in enumerate(numpy_batch_statistics(weights, data[i:i + 32]))]
        for i in range(0, 100, 32)])]
    with_raw = [np.mean(s, axis=0) for s in zip(*[
        numpy_batch_statistics(model.get_weights(), data[i:i + 32]) for i in range(0, 100, 32)])]
    for wrong in (weighted, uncorrected, bessel, with_raw):
        far(flat(found), flat(wrong), 1e-3)


def test_update_batch_norm_takes_what_keras_feeds_its_moving_averages():
    """With momentum 0, one training step sets the moving statistics to the batch's: equal to
    update_batch_norm on that batch alone."""
    model = two_batchnorm_model(kol.SGD(0.))
    x, y = problems.batches(X, Y, 24)(1)
    model.train_on_batch(x, y)
    keras_statistics = moving_statistics(model)
    K.batch_set_value([(v, np.zeros(K.int_shape(v))) for v in model.non_trainable_weights])
    assert kol.update_batch_norm(model, x, batch_size=24) == 1
    for f, e in zip(moving_statistics(model), keras_statistics):
        np.testing.assert_allclose(f, e, rtol=1e-6, atol=1e-7)


def test_update_batch_norm_takes_arrays_lists_and_generators():
    model = two_batchnorm_model(kol.SGD(0.1))
    results = []
    for data, kwargs in [
            (X[:96], dict(batch_size=32)),
            ([X[:96]], dict(batch_size=32)),
            ([(X[i:i + 32], Y[i:i + 32]) for i in range(0, 96, 32)], {}),
            ((X[i % 96:i % 96 + 32] for i in range(0, 10 ** 6, 32)), dict(steps=3))]:
        K.batch_set_value([(v, np.zeros(K.int_shape(v))) for v in model.non_trainable_weights])
        assert kol.update_batch_norm(model, data, **kwargs) == 3
        results.append(moving_statistics(model))
    for other in results[1:]:
        assert_all_equal(other, results[0])
    with pytest.raises(ValueError, match='holds no batch'):
        kol.update_batch_norm(model, [])
    assert kol.update_batch_norm(problems.mlp(), X) == 0  # no BatchNormalization: nothing
    inner = two_batchnorm_model()
    nested = keras.models.Sequential([inner])
    with pytest.raises(ValueError, match='nested model'):
        kol.update_batch_norm(nested, X)


# ---- callbacks.AveragedEvaluation ------------------------------------------------------------

class Probe(keras.callbacks.Callback):
    """Listed after AveragedEvaluation: at each epoch end, the logs, the averages, the raw
    weights, and an evaluation of the averages done here (with update_batch_norm if
    `batch_norm_data`)."""

    def __init__(self, average, validation, batch_norm_data=None):
        super(Probe, self).__init__()
        self.average, self.validation, self.batch_norm_data = average, validation, batch_norm_data
        self.logs, self.averages, self.raw, self.evaluated = [], [], [], []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))
        self.averages.append(self.average.average_values())
        self.raw.append(values(self.model.weights))
        with self.average.swap_weights(self.model):
            if self.batch_norm_data is not None:
                kol.update_batch_norm(self.model, self.batch_norm_data, 32)
            self.evaluated.append(self.model.evaluate(*self.validation, batch_size=32,
                                                      verbose=0))
        self.raw_evaluated = self.model.evaluate(*self.validation, batch_size=32, verbose=0)


@pytest.mark.parametrize('kind', ['mlp-ema', 'batchnorm-swa'])
def test_averaged_evaluation_reports_the_averages_and_leaves_training_alone(kind, tmp_path):
    validation = problems.data(seed=7, n=96)
    make = (lambda: EMA(kol.Adam(0.01), decay=0.9)) if kind == 'mlp-ema' else \
        (lambda: SWA(kol.Adam(0.01), start=4, period=2))

    def build(optimizer, weights=None):
        if kind == 'mlp-ema':
            model = problems.mlp(weights)
            model.compile(optimizer, 'mse', metrics=['mae'])
            return model
        return batchnorm_model(optimizer, weights)

    optimizer = make()
    model = build(optimizer)
    initial = model.get_weights()
    bn_data = X[:128] if kind == 'batchnorm-swa' else None
    every = str(tmp_path / 'every-{epoch:02d}.h5')
    best = str(tmp_path / 'best-{epoch:02d}.h5')
    worst = str(tmp_path / 'worst-{epoch:02d}.h5')
    callbacks = [kol.callbacks.AveragedEvaluation(validation, 32, batch_norm_data=bn_data,
                                                  filepath=every),
                 kol.callbacks.AveragedEvaluation(validation, 32, batch_norm_data=bn_data,
                                                  filepath=best, save_best_only=True),
                 kol.callbacks.AveragedEvaluation(validation, 32, batch_norm_data=bn_data,
                                                  filepath=worst, save_best_only=True,
                                                  mode='max'),
                 Probe(optimizer, validation, bn_data)]
    epochs = 4
    history = model.fit(X[:256], Y[:256], batch_size=32, epochs=epochs, shuffle=False,
                        verbose=0, callbacks=callbacks)
    probe = callbacks[-1]
    names = ['avg_val_' + n for n in model.metrics_names]
    assert names == ['avg_val_loss', 'avg_val_mean_absolute_error'] or \
        names == ['avg_val_loss', 'avg_val_mae']
    for epoch in range(epochs):
        reported = [probe.logs[epoch][n] for n in names]
        assert reported == list(probe.evaluated[epoch])  # the same computation: exactly
        assert [history.history[n][epoch] for n in names] == reported
    assert abs(probe.raw_evaluated[0] - probe.evaluated[-1][0]) > 1e-4  # not the raw weights
    # The files: every epoch; the improvements of avg_val_loss (min, max), with the averages.
    losses = history.history['avg_val_loss']
    improving = lambda better: [e for e in range(epochs)  # noqa: E731
                                if all(better(losses[e], losses[k]) for k in range(e))]
    expected = {'every': list(range(epochs)), 'best': improving(lambda a, b: a < b),
                'worst': improving(lambda a, b: a > b)}
    assert expected['best'] != expected['worst']
    for prefix, epochs_saved in expected.items():
        saved = sorted(n for n in os.listdir(str(tmp_path)) if n.startswith(prefix + '-'))
        assert saved == ['%s-%02d.h5' % (prefix, e + 1) for e in epochs_saved]
    for epoch in range(epochs):
        K.clear_session()
        loaded = kol.load_model(every.format(epoch=epoch + 1))
        assert_all_equal(values(loaded.trainable_weights), probe.averages[epoch])
    # Training itself: bitwise as without the callbacks (raw weights, BatchNorm statistics and
    # the optimizer's state after every epoch).
    K.clear_session()
    plain_optimizer = make()
    plain = build(plain_optimizer, initial)
    for epoch in range(epochs):
        plain.fit(X[:256], Y[:256], batch_size=32, epochs=epoch + 1, initial_epoch=epoch,
                  shuffle=False, verbose=0)
        assert_all_equal(values(plain.weights), probe.raw[epoch])
        assert_all_equal(plain_optimizer.average_values(), probe.averages[epoch])


def test_averaged_evaluation_needs_an_average():
    with pytest.raises(ValueError, match='validation_data'):
        kol.callbacks.AveragedEvaluation(X)
    model = problems.compiled(kol.Adam(0.01))
    with pytest.raises(ValueError, match='no weight average'):
        model.fit(X[:32], Y[:32], epochs=1, verbose=0,
                  callbacks=[kol.callbacks.AveragedEvaluation((X[:32], Y[:32]))])


if __name__ == '__main__':
    child(sys.argv[1])
