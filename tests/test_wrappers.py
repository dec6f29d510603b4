"""Gradient accumulation equals the large batch (for ours and Keras's built-ins), Lookahead
follows its reference, the wrappers compose in either order, and state saves and resumes."""
import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy.reproduce.posts import NaiveSoftBatchSGD
import catalog
import problems
import reference
import resume

X, Y = problems.data(n=640)
UPDATES = 12

# Catalog kind 'accumulation': every rule with a Keras counterpart.
CONFIGS = catalog.cases('accumulation')


def trained(optimizer, batch_size, steps):
    model = problems.mlp()
    model.compile(optimizer, 'mse')
    return problems.train(model, steps, problems.batches(X, Y, batch_size))


def weights_of(model):
    return problems.flat(model.get_weights())


def check_equals_large_batch(make_large, make_inner):
    large = weights_of(trained(make_large(), 64, UPDATES))
    K.clear_session()
    model = trained(kol.GradientAccumulation(make_inner(), 4), 16, 4 * UPDATES)
    assert np.abs(large - problems.flat(problems.initial_weights())).max() > 1e-2  # it trains
    np.testing.assert_allclose(weights_of(model), large, rtol=0, atol=1e-5)
    inner = model.optimizer.optimizer
    assert K.get_value(inner.iterations) == UPDATES  # real updates, not micro-batches
    assert K.get_value(model.optimizer.iterations) == 4 * UPDATES


@pytest.mark.parametrize('entry, options', CONFIGS)
def test_accumulating_ours_equals_the_large_batch(entry, options):
    check_equals_large_batch(lambda: catalog.make(entry, options),
                             lambda: catalog.make(entry, options))


@pytest.mark.parametrize('entry, options', CONFIGS)
def test_accumulating_keras_builtins_equals_the_large_batch(entry, options):
    """The large batch runs Keras's own arithmetic without its races: Keras's class with the
    gradient gate, or for the optimizers that read `iterations` (Keras 2.2.4's versions read it
    unordered: the entry's `keras_races`) ours (the same formulas)."""
    keras_class = getattr(keras.optimizers, entry.keras)
    large = (lambda: catalog.make(entry, options)) if entry.keras_races else \
        (lambda: problems.gated(keras_class)(**options))
    check_equals_large_batch(large, lambda: keras_class(**options))


def test_nothing_of_the_inner_optimizer_moves_between_updates():
    opt = kol.GradientAccumulation(keras.optimizers.Nadam(), 4)
    model = trained(opt, 16, 5)  # one real update, then one micro-batch into the next cycle
    batch_of = problems.batches(X, Y, 16)
    for i in range(5, 7):
        before = [K.get_value(w) for w in model.weights + opt.optimizer.weights +
                  [opt.optimizer.m_schedule, opt.optimizer.iterations]]
        model.train_on_batch(*batch_of(i))
        after = [K.get_value(w) for w in model.weights + opt.optimizer.weights +
                 [opt.optimizer.m_schedule, opt.optimizer.iterations]]
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


def test_the_naive_blog_version_moves_the_weights_on_every_batch():
    model = trained(NaiveSoftBatchSGD(lr=0.1, steps=4), 16, 1)
    batch_of = problems.batches(X, Y, 16)
    moved = []
    for i in range(1, 8):
        before = weights_of(model)
        model.train_on_batch(*batch_of(i))
        moved.append(not np.array_equal(weights_of(model), before))
    assert all(moved)  # it should have moved on 1 batch in 4
    K.clear_session()
    model = trained(kol.GradientAccumulation(kol.SGD(lr=0.1), 4), 16, 1)
    moved = []
    for i in range(1, 8):
        before = weights_of(model)
        model.train_on_batch(*batch_of(i))
        moved.append(not np.array_equal(weights_of(model), before))
    assert moved == [False, False, True, False, False, False, True]


def lookahead_reference(make_inner_ref, sync_period, slow_step, steps, batch_size):
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    slow = [w.copy() for w in weights]
    inner = make_inner_ref()
    batch_of = problems.batches(X, Y, batch_size)
    for i in range(steps):
        inner.step(weights, problems.numpy_gradients(weights, *batch_of(i)))
        if (i + 1) % sync_period == 0:
            for w, s in zip(weights, slow):
                s += slow_step * (w - s)
                w[...] = s
    return problems.flat(weights)


def test_lookahead_follows_its_reference():
    model = trained(kol.Lookahead(kol.SGD(lr=0.1, momentum=0.9), sync_period=3, slow_step=0.4),
                    16, 20)
    expected = lookahead_reference(lambda: reference.SGD(lr=0.1, momentum=0.9), 3, 0.4, 20, 16)
    np.testing.assert_allclose(weights_of(model), expected, rtol=1e-5, atol=1e-6)


def test_wrappers_compose_in_either_order():
    large = weights_of(trained(kol.Lookahead(kol.Adam(0.01), 3), 64, UPDATES))
    K.clear_session()
    accumulate_lookahead = trained(
        kol.GradientAccumulation(kol.Lookahead(kol.Adam(0.01), 3), 4), 16, 4 * UPDATES)
    np.testing.assert_allclose(weights_of(accumulate_lookahead), large, atol=1e-5, rtol=0)
    K.clear_session()
    lookahead_accumulate = trained(
        kol.Lookahead(kol.GradientAccumulation(kol.Adam(0.01), 4), 3), 16, 4 * UPDATES)
    np.testing.assert_allclose(weights_of(lookahead_accumulate), large, atol=1e-5, rtol=0)
    assert K.get_value(lookahead_accumulate.optimizer.iterations) == UPDATES
    expected = lookahead_reference(lambda: reference.Adam(lr=0.01), 3, 0.5, UPDATES, 64)
    np.testing.assert_allclose(large, expected, rtol=1e-5, atol=1e-6)


def test_weights_list_every_piece_of_state():
    opt = kol.GradientAccumulation(kol.Lookahead(keras.optimizers.RMSprop(decay=0.1), 2), 3)
    trained(opt, 16, 4)
    names = opt.weight_names
    assert names[0] == 'iterations' and names[1].startswith('accumulator/')
    assert 'inner/iterations' in names and 'inner/inner/iterations' in names  # Keras omits it
    assert sum(n.startswith('inner/slow/') for n in names) == 4
    assert sum(n.startswith('inner/inner/accumulator/') for n in names) == 4
    assert 'inner/started' in names  # Lookahead's slow weights hold the parameters
    assert len(opt.weights) == len(names) == len(set(names)) == (1 + 4) + (2 + 4) + (1 + 4)
    assert len({id(w) for w in opt.weights}) == len(opt.weights)


@pytest.mark.parametrize('make', [
    lambda: kol.GradientAccumulation(kol.Nadam(), 4),
    lambda: kol.GradientAccumulation(keras.optimizers.Adam(amsgrad=True), 4),
    lambda: kol.Lookahead(kol.GradientAccumulation(keras.optimizers.Nadam(), 4), 2),
    lambda: kol.GradientAccumulation(kol.Lookahead(kol.RMSprop(decay=0.1), 2), 4),
], ids=['ours', 'keras-adam', 'lookahead-over-keras-nadam', 'lookahead-inside'])
def test_save_mid_cycle_and_resume_in_a_fresh_process(tmp_path, make):
    """model.save after 6 micro-batches (mid-cycle), keras.models.load_model in a fresh
    process: its next 14 steps equal this process's."""
    run = resume.fresh_process(tmp_path, make(), 6, 14, data_size=len(X), save='keras',
                               load='keras')
    np.testing.assert_array_equal(run.there.weights, run.here.weights)


def test_config_round_trips_with_the_inner_optimizer():
    opt = kol.Lookahead(kol.GradientAccumulation(keras.optimizers.Adam(lr=0.02), 8), 7, 0.3)
    config = keras.optimizers.serialize(opt)
    clone = keras.optimizers.deserialize(config)
    assert type(clone.optimizer.optimizer) is keras.optimizers.Adam
    assert keras.optimizers.serialize(clone) == config
    assert clone.optimizer.steps == 8 and clone.sync_period == 7


def test_lr_reaches_the_inner_optimizer():
    opt = kol.GradientAccumulation(keras.optimizers.SGD(lr=0.1, decay=1.), 2)
    model = trained(opt, 16, 4)
    assert kol.current_learning_rate(opt) == pytest.approx(0.1 / (1 + 2))  # 2 real updates
    K.set_value(model.optimizer.lr, 0.5)
    assert K.get_value(opt.optimizer.lr) == pytest.approx(0.5)


@pytest.mark.parametrize('make, error, message', [
    (lambda: kol.GradientAccumulation(kol.Adam(), 0), ValueError, 'steps'),
    (lambda: kol.GradientAccumulation(kol.Adam(), 2.5), TypeError, 'steps'),
    (lambda: kol.GradientAccumulation(kol.Adam(), True), TypeError, 'steps'),
    (lambda: kol.GradientAccumulation(42, 4), TypeError, 'expected an optimizer'),
    (lambda: kol.GradientAccumulation(keras.optimizers.TFOptimizer(
        tf.train.AdamOptimizer()), 4), TypeError, 'TFOptimizer'),
    (lambda: kol.Lookahead(kol.Adam(), sync_period=0), ValueError, 'sync_period'),
    (lambda: kol.Lookahead(kol.Adam(), slow_step=1.5), ValueError, 'slow_step'),
])
def test_bad_input_gets_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


def batchnorm_model(optimizer):
    model = keras.models.Sequential([
        keras.layers.Dense(8, input_shape=(problems.D,)),
        keras.layers.BatchNormalization(momentum=0.5),
        keras.layers.Dense(1)])
    model.compile(optimizer, 'mse', metrics=['mae'])
    return model


def moving_mean_changes(model, batches):
    moving_mean = model.layers[1].moving_mean
    batch_of = problems.batches(X, Y, 16)
    changed = []
    for i in range(batches):
        before = K.get_value(moving_mean)
        loss, mae = model.train_on_batch(*batch_of(i))
        assert np.isfinite(loss) and mae > 0  # loss and metrics come back as usual
        changed.append(not np.array_equal(before, K.get_value(moving_mean)))
    return changed


def test_batchnorm_statistics_update_every_batch_by_default():
    model = batchnorm_model(kol.GradientAccumulation(kol.Adam(0.01), 4))
    assert moving_mean_changes(model, 8) == [True] * 8


def test_batchnorm_statistics_can_update_only_with_the_real_update():
    opt = kol.GradientAccumulation(kol.Adam(0.01), 4, model_updates='with_update')
    model = batchnorm_model(opt)
    with pytest.raises(RuntimeError, match=r'opt.inject\(model\)'):
        model.train_on_batch(*problems.batches(X, Y, 16)(0))  # never injected: fails loudly
    assert K.get_value(opt.iterations) == 0
    opt.inject(model)
    assert moving_mean_changes(model, 8) == [False, False, False, True] * 2
    model.compile(opt, 'mse')  # a recompile drops the injected train function...
    with pytest.raises(RuntimeError, match=r'opt.inject\(model\)'):
        model.fit(X[:16], Y[:16], verbose=0)  # ...and training says so


def test_with_update_statistics_equal_the_large_batch_count_of_averaging_steps():
    """Once per real update, from the statistics of the batch that applies it: the moving mean
    equals the one a model fed only those batches would compute."""
    opt = kol.GradientAccumulation(kol.SGD(0.), 4, model_updates='with_update')  # weights fixed
    model = batchnorm_model(opt)
    initial = model.get_weights()
    opt.inject(model)
    batch_of = problems.batches(X, Y, 16)
    problems.train(model, 8, batch_of)
    gated = K.get_value(model.layers[1].moving_mean)
    assert not np.allclose(gated, 0)
    K.clear_session()
    plain = batchnorm_model(kol.SGD(0.))
    plain.set_weights(initial)
    for i in (3, 7):
        plain.train_on_batch(*batch_of(i))
    np.testing.assert_allclose(gated, K.get_value(plain.layers[1].moving_mean), rtol=1e-6)


def test_inject_names_the_fix_on_misuse():
    opt = kol.GradientAccumulation(kol.Adam(), 4, model_updates='with_update')
    model = problems.mlp()
    with pytest.raises(RuntimeError, match='model.compile'):
        opt.inject(model)
    model.compile(kol.Adam(), 'mse')
    with pytest.raises(ValueError, match='another optimizer'):
        opt.inject(model)
    with pytest.raises(ValueError, match='model_updates'):
        kol.GradientAccumulation(kol.Adam(), 4, model_updates='sometimes')
    for outer in (kol.Lookahead, kol.SkipNonFinite):  # it would lose its inject silently
        with pytest.raises(ValueError, match='must be the outermost optimizer'):
            outer(kol.GradientAccumulation(kol.Adam(), 4, model_updates='with_update'))
