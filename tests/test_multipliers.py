"""LearningRateMultipliers (issue 16): each parameter takes exactly the step its inner optimizer
would take with `lr * factor`, in one update per batch.

The reference is independent of the wrapper: per-parameter-group copies of the model, each
compiled with its own optimizer at `lr * factor` that trains only that group's parameters (the
others are held fixed in it), all copies fed the same batch from the same weights at every step
(`per_group_trajectory`). That is what "separately configured per-layer optimizers" means, with
each copy's own step counter, slots, legacy decay and bias corrections.
"""
import collections
import math
import warnings

import numpy as np
import pytest
import keras
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import schedules
import problems
import resume
from test_keras_and_tf import ordered

STEPS = 30
X, Y = problems.data(n=256)
BATCH_OF = problems.batches(X, Y, 16)

# problems.mlp()'s parameters, in model.weights order (the first model of a fresh graph).
NAMES = ['dense_1/kernel:0', 'dense_1/bias:0', 'dense_2/kernel:0', 'dense_2/bias:0']
MULTIPLIERS = collections.OrderedDict([('dense_1/', 0.1), ('dense_2/kernel', 3.0)])
FACTORS = [0.1, 0.1, 3.0, 1.0]  # of NAMES under MULTIPLIERS (dense_2/bias unmatched: 1)


def parameters(model):
    """The MLP's parameter variables in a fixed order (kernel, bias, kernel, bias)."""
    return [w for layer in model.layers for w in (layer.kernel, layer.bias)]


def groups(factors):
    """[(factor, [parameter indices])] of a list of per-parameter factors."""
    found = collections.OrderedDict()
    for index, factor in enumerate(factors):
        found.setdefault(factor, []).append(index)
    return list(found.items())


def trajectory(make, steps=STEPS, batch_of=BATCH_OF):
    """`problems.mlp()` in a fresh graph, compiled with `make()` (a LearningRateMultipliers, or a
    wrapper around one): its flat weights after every train_on_batch step, and the optimizer."""
    K.clear_session()
    optimizer = make()
    model = problems.mlp()
    assert [p.name for p in parameters(model)] == NAMES
    model.compile(optimizer, 'mse')
    trajectory = []
    for i in range(steps):
        model.train_on_batch(*batch_of(i))
        trajectory.append(problems.flat(K.batch_get_value(parameters(model))))
    return np.array(trajectory), optimizer


def per_group_trajectory(make, factors=FACTORS, steps=STEPS, batch_of=BATCH_OF):
    """The reference: for each distinct factor k, a copy of the MLP compiled with `make(k)` (an
    optimizer at lr * k) that trains only the parameters of factor k. At every step each copy
    starts from the same current weights and batch; each parameter takes its own copy's step.
    The flat weights after every step, and the copies' optimizers."""
    K.clear_session()
    copies = []
    for factor, indices in groups(factors):
        model = problems.mlp()
        model.compile(make(factor), 'mse')
        params = parameters(model)
        # Only this group is handed to the optimizer (Keras builds the train function from
        # this list); the other parameters stay fixed in this copy.
        model._collected_trainable_weights = [params[i] for i in indices]
        copies.append((model, params, indices))
    weights = [w.astype('float32') for w in problems.initial_weights()]
    trajectory = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # Keras: "Discrepancy between trainable weights..."
        for i in range(steps):
            new = list(weights)
            for model, params, indices in copies:
                K.batch_set_value(list(zip(params, weights)))
                model.train_on_batch(*batch_of(i))
                values = K.batch_get_value(params)
                for j in indices:
                    new[j] = values[j]
            weights = new
            trajectory.append(problems.flat(weights))
    return np.array(trajectory), [model.optimizer for model, _, _ in copies]


def relative_difference(ours, reference):
    """max |ours - reference| relative to the largest weight of the reference, at each step."""
    scale = np.abs(reference).max(axis=1, keepdims=True)
    return (np.abs(ours - reference) / scale).max()


def check_equal(ours, reference):
    """`ours` equals `reference` within a relative 1e-6, and every parameter moved (by far more
    than that: the smallest factor, 0.1, made a visible difference)."""
    initial = problems.flat(problems.initial_weights())
    for index, (start, end) in enumerate(_spans()):
        moved = np.abs(reference[-1, start:end] - initial[start:end]).max()
        assert moved > 1e-4, (NAMES[index], moved)
    assert np.isfinite(ours).all()
    difference = relative_difference(ours, reference)
    print('max relative difference to the per-group optimizers: %.2e' % difference)
    assert difference <= 1e-6, difference


def _spans():
    sizes = [w.size for w in problems.initial_weights()]
    ends = np.cumsum(sizes)
    return list(zip(ends - sizes, ends))


def iterations(optimizer):
    return int(K.get_value(optimizer.iterations))


# ---- the step is the inner optimizer's at lr * factor -------------------------------------------

def scaled_cosine(k):
    return schedules.CosineDecay(0.1 * k, decay_steps=20)


# id -> (the inner optimizer at lr * k, the reference's optimizer at lr * k)
RULES = {
    'adam-fused': (lambda k: kol.Adam(lr=0.01 * k), None),
    'adam-formula': (lambda k: kol.Adam(lr=0.01 * k, fused=False), None),
    'adam-amsgrad-decay': (lambda k: kol.Adam(lr=0.01 * k, amsgrad=True, decay=0.05), None),
    'sgd-nesterov': (lambda k: kol.SGD(lr=0.05 * k, momentum=0.9, nesterov=True), None),
    'sgd-schedule': (lambda k: kol.SGD(lr=scaled_cosine(k), momentum=0.9), None),
    'nadam': (lambda k: kol.Nadam(lr=0.01 * k), None),
    'rmsprop': (lambda k: kol.RMSprop(lr=0.01 * k), None),
    'adagrad': (lambda k: kol.Adagrad(lr=0.1 * k), None),
    'adadelta': (lambda k: kol.Adadelta(lr=1.0 * k, decay=0.05), None),
    'adamax': (lambda k: kol.Adamax(lr=0.02 * k), None),
    # Not linear in the rate, but the rate is given to the rule: still its step at lr * k.
    'ftrl': (lambda k: kol.Ftrl(lr=0.5 * k), None),
    'ftrl-l1': (lambda k: kol.Ftrl(lr=0.5 * k, l1_regularization_strength=0.01), None),
    # Decoupled weight decay built in, scaled by the rate (so by lr * k per group).
    'adamw': (lambda k: kol.AdamW(lr=0.01 * k, weight_decay=0.5), None),
    'sgdw-nesterov': (lambda k: kol.SGDW(lr=0.05 * k, momentum=0.9, nesterov=True,
                                         weight_decay=0.5), None),
    # Keras's own: the reference runs Keras's class without its races (the weight-read gate,
    # and for Adam its `iterations` increment ordered last: test_keras_and_tf.ordered).
    'keras-adam': (lambda k: keras.optimizers.Adam(lr=0.01 * k),
                   lambda k: ordered(keras.optimizers.Adam)(lr=0.01 * k)),
    'keras-sgd-momentum': (lambda k: keras.optimizers.SGD(lr=0.05 * k, momentum=0.9),
                           lambda k: problems.gated(keras.optimizers.SGD)(lr=0.05 * k,
                                                                          momentum=0.9)),
    'keras-rmsprop-decay': (lambda k: keras.optimizers.RMSprop(lr=0.01 * k, decay=0.05),
                            lambda k: ordered(keras.optimizers.RMSprop)(lr=0.01 * k, decay=0.05)),
}


@pytest.mark.parametrize('rule', sorted(RULES))
def test_each_parameter_takes_the_step_of_its_own_optimizer_at_lr_times_factor(rule):
    make, make_reference = RULES[rule]
    reference, copies = per_group_trajectory(make_reference or make)
    assert all(iterations(opt) == STEPS for opt in copies)
    ours, opt = trajectory(lambda: kol.LearningRateMultipliers(make(1.), MULTIPLIERS))
    check_equal(ours, reference)
    # One update per batch: the inner optimizer counted each batch once (not once per group).
    assert iterations(opt.optimizer) == STEPS
    assert opt.factors == dict(zip(NAMES, FACTORS))


@pytest.mark.parametrize('rule', ['adam-amsgrad-decay', 'keras-adam'])
def test_the_reference_splits_the_parameters_faithfully(rule):
    """The reference's own check: its copies, each training one group at the same lr, are plain
    training (one optimizer for all parameters), bit for bit; at lr * factor they are not."""
    make, make_reference = RULES[rule]
    make_reference = make_reference or make
    plain = trajectory(lambda: make_reference(1.))[0]
    split, copies = per_group_trajectory(lambda k: make_reference(1.), factors=[1., 2., 3., 4.])
    assert len(copies) == 4
    np.testing.assert_array_equal(split, plain)
    reference, _ = per_group_trajectory(make_reference)
    assert relative_difference(plain, reference) > 1e-2


def test_factors_of_one_are_the_plain_optimizer():
    plain = trajectory(lambda: kol.Adam(lr=0.01))[0]
    ours, opt = trajectory(lambda: kol.LearningRateMultipliers(kol.Adam(lr=0.01),
                                                               {'dense_': 1.}))
    np.testing.assert_array_equal(ours, plain)
    assert opt.factors == dict.fromkeys(NAMES, 1.)


def test_a_factor_of_zero_freezes_the_parameter():
    ours, opt = trajectory(
        lambda: kol.LearningRateMultipliers(kol.Adam(lr=0.01), {'dense_1/kernel': 0.}), steps=10)
    start, end = _spans()[0]
    initial = problems.flat(problems.initial_weights())
    np.testing.assert_array_equal(ours[:, start:end], np.tile(initial[start:end], (10, 1)))
    assert np.abs(ours[-1, end:] - initial[end:]).max() > 1e-2  # the rest trains
    assert opt.factors['dense_1/kernel:0'] == 0.


# ---- under and around the other wrappers -------------------------------------------------------

ACCUMULATE = 4
UPDATES = 8


def accumulation(inner):
    return kol.GradientAccumulation(inner, ACCUMULATE)


def multipliers(inner):
    return kol.LearningRateMultipliers(inner, MULTIPLIERS)


def with_nan_batch(at):
    """BATCH_OF, but batch `at` has a NaN input (so a NaN gradient for every parameter)."""
    def batch_of(i):
        x, y = BATCH_OF(i)
        if i == at:
            x = x.copy()
            x[0, 0] = np.nan
        return x, y
    return batch_of


def innermost(optimizer):
    while hasattr(optimizer, 'optimizer'):
        optimizer = optimizer.optimizer
    return optimizer


# id -> (the optimizer under test, given the rule at lr; the reference's optimizer, given the
# rule at lr * k). 'accumulation-inside' is LRM(GA(rule)), 'accumulation-outside' GA(LRM(rule)).
# The rule is our Adam or Keras's: inside GradientAccumulation and SkipNonFinite, Keras's
# built-in is stepped inside a tf.cond branch.
WRAPPED = {
    'accumulation-inside': (lambda rule: multipliers(accumulation(rule)), accumulation),
    'accumulation-outside': (lambda rule: accumulation(multipliers(rule)), accumulation),
    'lookahead': (lambda rule: multipliers(kol.Lookahead(rule, 3)),
                  lambda rule: kol.Lookahead(rule, 3)),
    'skip-non-finite': (lambda rule: multipliers(kol.SkipNonFinite(rule)), kol.SkipNonFinite),
}
RULES_WRAPPED = {
    'adam': lambda k: kol.Adam(lr=0.01 * k),
    'keras-adam': lambda k: keras.optimizers.Adam(lr=0.01 * k),
}


@pytest.mark.parametrize('rule', sorted(RULES_WRAPPED))
@pytest.mark.parametrize('wrapped', sorted(WRAPPED))
def test_with_the_other_wrappers_in_either_order(wrapped, rule):
    """LRM(GA(rule)) and GA(LRM(rule)) equal, on the same micro-batches, per-group copies of
    GA(rule(lr * k)), and the rule counts real updates; so do LRM(Lookahead(rule)) and
    LRM(SkipNonFinite(rule)) with copies of Lookahead and SkipNonFinite (a NaN batch, skipped
    by all)."""
    make, make_reference = WRAPPED[wrapped]
    make_rule = RULES_WRAPPED[rule]
    batch_of = BATCH_OF
    if wrapped.startswith('accumulation'):
        steps, updates = ACCUMULATE * UPDATES, UPDATES
    elif wrapped == 'skip-non-finite':
        steps, updates = STEPS, STEPS - 1
        batch_of = with_nan_batch(7)
    else:
        steps, updates = STEPS, STEPS
    reference, copies = per_group_trajectory(lambda k: make_reference(make_rule(k)), steps=steps,
                                             batch_of=batch_of)
    assert all(iterations(innermost(opt)) == updates for opt in copies)
    ours, opt = trajectory(lambda: make(make_rule(1.)), steps=steps, batch_of=batch_of)
    check_equal(ours, reference)
    assert iterations(innermost(opt)) == updates
    assert iterations(opt) == steps


RATE = 0.5  # decoupled weight decay: lr * rate = 0.5% of each parameter per step (at factor 1)


@pytest.mark.parametrize('scale_by_lr', [True, False])
def test_weight_decay_inside_is_scaled_by_the_factor(scale_by_lr):
    """LRM(WeightDecay(Adam, rate)): p <- adam_step(lr * k) - lr * k * rate * p_old, as
    separate optimizers (PyTorch parameter groups) do; with scale_by_lr=False the decay,
    rate * p_old, takes no rate and so no factor, as with separate optimizers too."""
    rate = RATE if scale_by_lr else RATE * 0.01
    reference, _ = per_group_trajectory(
        lambda k: kol.WeightDecay(kol.Adam(lr=0.01 * k), rate, scale_by_lr=scale_by_lr))
    ours, _ = trajectory(lambda: kol.LearningRateMultipliers(
        kol.WeightDecay(kol.Adam(lr=0.01), rate, scale_by_lr=scale_by_lr), MULTIPLIERS))
    check_equal(ours, reference)
    if scale_by_lr:  # the decay matters: without it the reference differs
        no_decay, _ = per_group_trajectory(lambda k: kol.Adam(lr=0.01 * k))
        assert relative_difference(no_decay, reference) > 1e-3


def test_weight_decay_outside_is_not_scaled_by_the_factor():
    """WeightDecay(LRM(Adam), rate): Adam's step at lr * k, the decay lr * rate * p_old (as
    WeightDecay(Adam(lr * k), rate / k), which decays lr * k * rate / k * p_old)."""
    reference, _ = per_group_trajectory(
        lambda k: kol.WeightDecay(kol.Adam(lr=0.01 * k), RATE / k))
    ours, _ = trajectory(lambda: kol.WeightDecay(
        kol.LearningRateMultipliers(kol.Adam(lr=0.01), MULTIPLIERS), RATE))
    check_equal(ours, reference)


# ---- patterns, factors, errors -----------------------------------------------------------------

def built(optimizer):
    """problems.mlp() compiled with `optimizer`, its train function (and state) built."""
    model = problems.mlp()
    model.compile(optimizer, 'mse')
    model._make_train_function()
    return model


def test_first_matching_pattern_wins_in_insertion_order():
    for multipliers in (collections.OrderedDict([('dense_1/kernel', 0.5), ('dense_1/', 2.)]),
                        [('dense_1/kernel', 0.5), ('dense_1/', 2.)],
                        (('kernel', 0.25), ('dense_1/', 2.), ('bias', 4.))):
        K.clear_session()
        opt = kol.LearningRateMultipliers(kol.SGD(lr=0.1), multipliers)
        built(opt)
        pairs = list(multipliers.items()) if isinstance(multipliers, dict) else list(multipliers)
        expected = {}
        for name in NAMES:
            expected[name] = next((k for pattern, k in pairs if pattern in name), 1.)
        assert opt.factors == expected, multipliers
    assert expected == {'dense_1/kernel:0': 0.25, 'dense_1/bias:0': 2.,
                        'dense_2/kernel:0': 0.25, 'dense_2/bias:0': 4.}


def test_patterns_are_regular_expressions_searched_in_the_name():
    opt = kol.LearningRateMultipliers(kol.SGD(lr=0.1), {r'^dense_\d/bias:0$': 0.5,
                                                        r'_2/k': 2.})
    built(opt)
    assert opt.factors == {'dense_1/kernel:0': 1., 'dense_1/bias:0': 0.5,
                           'dense_2/kernel:0': 2., 'dense_2/bias:0': 0.5}


def test_a_pattern_that_matches_no_parameter_is_an_error_naming_it_and_changes_nothing():
    opt = kol.LearningRateMultipliers(kol.Adam(lr=0.01), collections.OrderedDict(
        [('dense_1/', 0.5), ('dense_9/kernel', 2.)]))
    model = problems.mlp()
    model.compile(opt, 'mse')
    before = K.batch_get_value(parameters(model))
    with pytest.raises(ValueError, match='dense_9/kernel'):
        model.train_on_batch(*BATCH_OF(0))
    with pytest.raises(ValueError, match='dense_9/kernel'):
        model.fit(X[:32], Y[:32], batch_size=16, verbose=0)
    with pytest.raises(ValueError, match='dense_9/kernel'):
        model._make_train_function()
    for a, b in zip(before, K.batch_get_value(parameters(model))):
        np.testing.assert_array_equal(a, b)
    assert iterations(opt.optimizer) == 0
    assert model.train_function is None


def test_a_zero_factor_over_ftrl_is_refused_at_construction():
    # Ftrl divides by its rate: a factor of 0 would make NaN weights.
    for inner in (kol.Ftrl(), kol.SkipNonFinite(kol.GradientAccumulation(kol.Ftrl(), 2))):
        with pytest.raises(ValueError, match='Ftrl'):
            kol.LearningRateMultipliers(inner, {'dense_1/': 0.})


def test_an_optimizer_without_rates_per_parameter_is_refused_at_construction():
    with pytest.raises(ValueError, match='RK4'):
        kol.LearningRateMultipliers(kol.RK4(), {'dense_1/': 0.5})


@pytest.mark.parametrize('factor', [-0.5, -1e-30, float('nan'), float('-inf')])
def test_a_negative_or_nan_factor_is_refused_at_construction(factor):
    with pytest.raises(ValueError):
        kol.LearningRateMultipliers(kol.Adam(), {'dense_1/': 0.5, 'dense_2/': factor})
    with pytest.raises(ValueError):
        kol.LearningRateMultipliers(kol.Adam(), [('dense_2/', factor)])


def test_layer_wise_decay():
    patterns = ['embeddings/', 'layer_0/', 'layer_1/']
    multipliers = kol.layer_wise_decay(patterns, 0.5)
    assert list(multipliers.items()) == [('embeddings/', 0.125), ('layer_0/', 0.25),
                                         ('layer_1/', 0.5)]
    deeper = kol.layer_wise_decay(patterns, 0.8, depth=5)
    assert list(deeper) == patterns
    for i, pattern in enumerate(patterns):
        assert math.isclose(deeper[pattern], 0.8 ** (5 - i), rel_tol=1e-12)
    # On a model: the head (matched by no pattern) keeps factor 1.
    model = keras.models.Sequential([
        keras.layers.Dense(4, input_shape=(problems.D,), name='embeddings'),
        keras.layers.Dense(4, name='layer_0'),
        keras.layers.Dense(4, name='layer_1'),
        keras.layers.Dense(1, name='head')])
    opt = kol.LearningRateMultipliers(kol.Adam(), multipliers)
    model.compile(opt, 'mse')
    model._make_train_function()
    expected = {}
    for layer, factor in zip(['embeddings', 'layer_0', 'layer_1', 'head'],
                             [0.125, 0.25, 0.5, 1.]):
        expected.update({layer + '/kernel:0': factor, layer + '/bias:0': factor})
    assert opt.factors == expected


# ---- saving and resuming ------------------------------------------------------------------------

# Order matters here (dense_1/kernel would get 2.0 if the patterns came back sorted).
OVERLAPPING = collections.OrderedDict([('dense_1/kernel', 0.5), ('dense_1/', 2.),
                                       ('dense_2/kernel', 3.)])


def test_save_and_load_keep_the_multipliers_and_the_state(tmp_path):
    path = str(tmp_path / 'model.h5')
    opt = kol.LearningRateMultipliers(kol.Adam(lr=0.01), OVERLAPPING)
    model = problems.mlp()
    model.compile(opt, 'mse')
    problems.train(model, 5, BATCH_OF)
    config = keras.optimizers.serialize(opt)
    factors = dict(opt.factors)
    kol.save_model(model, path)
    state = K.batch_get_value(opt.weights)
    K.clear_session()
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, kol.LearningRateMultipliers)
    assert keras.optimizers.serialize(loaded.optimizer) == config
    assert loaded.optimizer.factors == factors == {
        'dense_1/kernel:0': 0.5, 'dense_1/bias:0': 2., 'dense_2/kernel:0': 3.,
        'dense_2/bias:0': 1.}
    assert iterations(loaded.optimizer.optimizer) == 5
    for a, b in zip(state, K.batch_get_value(loaded.optimizer.weights)):
        np.testing.assert_array_equal(a, b)


def test_config_round_trips_with_pairs_and_the_inner_optimizer():
    opt = kol.LearningRateMultipliers(
        kol.GradientAccumulation(keras.optimizers.Adam(lr=0.02), 4),
        [('dense_2/', 0.25), ('dense_', 4.)])
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(clone) is kol.LearningRateMultipliers
    assert type(clone.optimizer.optimizer) is keras.optimizers.Adam
    assert keras.optimizers.serialize(clone) == keras.optimizers.serialize(opt)
    built(clone)
    assert clone.factors == {'dense_1/kernel:0': 4., 'dense_1/bias:0': 4.,
                             'dense_2/kernel:0': 0.25, 'dense_2/bias:0': 0.25}


@pytest.mark.parametrize('make, save, load', [
    (lambda: kol.LearningRateMultipliers(kol.Adam(lr=0.01, decay=0.05), OVERLAPPING),
     'kol', 'keras'),
    (lambda: kol.LearningRateMultipliers(
        kol.GradientAccumulation(keras.optimizers.Nadam(lr=0.01), 4), OVERLAPPING),
     'keras', 'kol'),
], ids=['adam-kol-save-keras-load', 'accumulated-keras-nadam-keras-save-kol-load'])
def test_resume_in_a_fresh_process_is_exact(tmp_path, make, save, load):
    """Saved after 6 batches (mid-cycle for the accumulation), loaded in a fresh process: the
    next 10 steps equal this process's, bit for bit."""
    run = resume.fresh_process(tmp_path, make(), 6, 10, data_size=len(X), save=save, load=load)
    assert run.there.optimizer == run.here.optimizer == 'keras_opt_legacy.LearningRateMultipliers'
    assert np.abs(run.here.weights[-1] - run.before.weights[0]).max() > 1e-3
    np.testing.assert_array_equal(run.there.weights, run.here.weights)
