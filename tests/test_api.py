"""The optimizer API contract: construction checks, lr/learning_rate, weights, config and saving,
and the four ways to train (fit, fit_generator, train_on_batch, apply_gradients)."""
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
import catalog
import problems
import reference
import resume


# ---- construction ----------------------------------------------------------------------------

@pytest.mark.parametrize('name, kwargs, argument', [
    ('SGD', {'lr': -0.1}, 'lr'),
    ('Adam', {'learning_rate': -1e-3}, 'lr'),
    ('SGD', {'momentum': -0.5}, 'momentum'),
    ('SGD', {'decay': -1e-4}, 'decay'),
    ('Adam', {'beta_1': 1.0}, 'beta_1'),
    ('Adam', {'beta_2': -0.1}, 'beta_2'),
    ('Adamax', {'beta_1': 1.5}, 'beta_1'),
    ('Nadam', {'beta_2': 1.0}, 'beta_2'),
    ('Adam', {'epsilon': -1e-8}, 'epsilon'),
    ('RMSprop', {'rho': -0.9}, 'rho'),
    ('Adadelta', {'rho': 1.2}, 'rho'),
    ('Adagrad', {'lr': float('nan')}, 'lr'),
    ('Nadam', {'schedule_decay': -0.004}, 'schedule_decay'),
    ('Ftrl', {'learning_rate_power': 0.5}, 'learning_rate_power'),
    ('Ftrl', {'l1_regularization_strength': -1.}, 'l1_regularization_strength'),
    ('Ftrl', {'initial_accumulator_value': -0.1}, 'initial_accumulator_value'),
    ('SGD', {'clipnorm': -1.}, 'clipnorm'),
    ('RMSprop', {'clipvalue': -1.}, 'clipvalue'),
])
def test_invalid_hyperparameter_fails_at_construction_naming_it(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        getattr(kol, name)(**kwargs)


@pytest.mark.parametrize('name, kwargs, argument', [
    ('Adam', {'lr': '0.001'}, 'lr'),
    ('SGD', {'nesterov': 'yes'}, 'nesterov'),
    ('Adam', {'amsgrad': 1}, 'amsgrad'),
    ('Adam', {'betta_1': 0.9}, 'betta_1'),
    ('SGD', {'lr': 0.1, 'learning_rate': 0.2}, 'not both'),
])
def test_wrong_type_or_unknown_keyword_is_a_type_error(name, kwargs, argument):
    with pytest.raises(TypeError, match=argument):
        getattr(kol, name)(**kwargs)


def test_learning_rate_is_an_alias_of_lr():
    opt = kol.Adam(learning_rate=0.02)
    assert opt.learning_rate is opt.lr
    assert K.get_value(opt.lr) == pytest.approx(0.02)
    assert kol.SGD(0.3).get_config()['lr'] == pytest.approx(0.3)  # positional, as Keras


# ---- lr as a Keras variable: set_value and the callbacks that use it --------------------------

def test_set_value_on_lr_changes_the_next_step():
    model = problems.mlp()
    model.compile(kol.SGD(lr=0.1), 'mse')
    x, y = problems.batches(*problems.data())(0)
    K.set_value(model.optimizer.lr, 0.)
    before = problems.flat(model.get_weights())
    model.train_on_batch(x, y)
    assert np.array_equal(problems.flat(model.get_weights()), before)
    model.optimizer.learning_rate = 0.1  # the attribute setter writes the same variable
    assert K.get_value(model.optimizer.lr) == pytest.approx(0.1)
    model.train_on_batch(x, y)
    assert not np.array_equal(problems.flat(model.get_weights()), before)


def test_learning_rate_scheduler_and_reduce_on_plateau_drive_our_lr():
    x, y = problems.data()
    model = problems.mlp()
    model.compile(kol.Adam(lr=0.01), 'mse')
    seen = []
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=[
        keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 / (epoch + 1)),
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs: seen.append(K.get_value(model.optimizer.lr)))])
    np.testing.assert_allclose(seen, [0.01, 0.005, 0.01 / 3], rtol=1e-6)

    plateau = keras.callbacks.ReduceLROnPlateau(monitor='loss', factor=0.5, patience=0,
                                                min_delta=1e9)  # every epoch after the first "plateaus"
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[plateau])
    assert K.get_value(model.optimizer.lr) == pytest.approx(0.01 / 3 / 4, rel=1e-6)


# ---- weights ---------------------------------------------------------------------------------

def _trained(opt, steps=3):
    model = problems.mlp()
    model.compile(opt, 'mse')
    return problems.train(model, steps, problems.batches(*problems.data()))


@pytest.mark.parametrize('entry, options', catalog.cases('all-slots'))
def test_weights_are_iterations_then_every_slot(entry, options):
    opt = catalog.make(entry, options)
    assert opt.weights == []  # as Keras: no state before training builds it
    params = _trained(opt).trainable_weights
    scalars = list(entry.scalars)
    assert tuple(opt.slot_names) == catalog.slots(entry, options)
    assert opt.weights[0] is opt.iterations
    assert opt.weight_names[:1 + len(scalars)] == ['iterations'] + scalars
    slots = sum(catalog.has_slot(entry, options, slot, K.int_shape(p))
                for slot in opt.slot_names for p in params)
    assert len(opt.weights) == 1 + len(scalars) + slots
    assert len(set(opt.weight_names)) == len(opt.weight_names)
    assert K.get_value(opt.iterations) == 3
    # Every variable the optimizer created is in `weights` (nothing hidden), besides the
    # hyperparameters, which live in the config.
    created = [v for v in tf.global_variables() if v.name.startswith(('training/', 'keras_opt'))
               or '/iterations' in v.name]
    hidden = set(created) - set(opt.weights)
    assert not hidden, hidden


def test_set_weights_round_trip_including_the_step_count():
    opt = kol.Adam(lr=0.01)
    model = _trained(opt, steps=5)
    state = opt.get_weights()
    state[0] = np.int64(123)
    opt.set_weights(state)
    assert K.get_value(opt.iterations) == 123
    for a, b in zip(opt.get_weights(), state):
        np.testing.assert_array_equal(a, b)
    del model


@pytest.mark.parametrize('corrupt, message', [
    (lambda s: s[:-1], 'has 9 state arrays'),
    (lambda s: s[:2] + [np.zeros((4, 5), 'float32')] + s[3:], r"'m/dense_\d+/bias' has shape"),
    (lambda s: s[:1] + [s[1].astype(np.complex64)] + s[2:], 'dtype'),
    (lambda s: [np.float32(2.5)] + s[1:], 'counter'),
])
def test_set_weights_validates_everything_before_assigning_anything(corrupt, message):
    opt = kol.Adam(lr=0.01)
    _trained(opt)
    before = opt.get_weights()
    bad = corrupt([np.full_like(w, 7) for w in before])
    with pytest.raises(ValueError, match=message):
        opt.set_weights(bad)
    for a, b in zip(opt.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_recompiling_with_the_same_optimizer_keeps_its_state_and_adds_no_variables():
    opt = kol.Adam(lr=0.01)
    model = _trained(opt)
    state = opt.get_weights()
    count = len(tf.global_variables())
    model.compile(opt, 'mse')
    model.train_on_batch(*problems.batches(*problems.data())(0))
    assert len(tf.global_variables()) == count
    assert K.get_value(opt.iterations) == state[0] + 1


# ---- config and saving -----------------------------------------------------------------------

# Every argument other than its default (catalog kind 'config').
NON_DEFAULT = catalog.cases('config')


@pytest.mark.parametrize('entry, options', NON_DEFAULT)
def test_config_round_trips_exactly(entry, options):
    opt = catalog.make(entry, options)
    config = opt.get_config()
    for key, value in options.items():
        assert config[key] == pytest.approx(value), key
    clone = type(opt).from_config(config)
    assert clone.get_config() == config
    assert type(clone) is type(opt)
    via_keras = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(via_keras) is type(opt) and via_keras.get_config() == config


def test_custom_objects_lists_every_class_under_its_saved_name():
    objects = kol.custom_objects()
    for entry in catalog.ENTRIES:
        cls = entry.cls
        assert objects[cls.__name__] is cls
        assert cls.__name__ == 'keras_opt_legacy.' + entry.name


@pytest.mark.parametrize('entry, options', NON_DEFAULT)
def test_save_and_load_in_a_fresh_process_resumes_exactly(tmp_path, entry, options):
    """model.save, then keras.models.load_model in a fresh process (no custom_objects:
    importing the package suffices) loads our class and continues exactly."""
    opt = catalog.make(entry, options)
    run = resume.fresh_process(tmp_path, opt, 5, save='keras', load='keras')
    assert run.there.optimizer == type(opt).__name__
    np.testing.assert_array_equal(run.there.weights, run.here.weights)


def test_keras_builtins_still_load_as_keras_builtins(tmp_path):
    model = problems.mlp()
    model.compile(keras.optimizers.Adam(), 'mse')
    problems.train(model, 1, problems.batches(*problems.data()))
    path = str(tmp_path / 'keras.h5')
    model.save(path)
    assert type(keras.models.load_model(path).optimizer) is keras.optimizers.Adam


# ---- the four ways to train ------------------------------------------------------------------

def _trajectory_with(train):
    model = problems.mlp()
    model.compile(kol.Adam(lr=0.01), 'mse')
    train(model)
    return problems.flat(model.get_weights())


def test_fit_fit_generator_train_on_batch_and_apply_gradients_agree():
    x, y = problems.data()
    batch_of = problems.batches(x, y)
    steps = 8  # two epochs of four batches

    by_batch = _trajectory_with(lambda m: problems.train(m, steps, batch_of))
    by_fit = _trajectory_with(lambda m: m.fit(x, y, batch_size=16, epochs=2, shuffle=False,
                                              verbose=0))
    by_generator = _trajectory_with(lambda m: m.fit_generator(
        (batch_of(i) for i in range(steps)), steps_per_epoch=4, epochs=2, verbose=0))
    np.testing.assert_array_equal(by_fit, by_batch)
    np.testing.assert_array_equal(by_generator, by_batch)

    # A raw session loop: gradients from tf.gradients, one apply op run per step.
    weights = [tf.Variable(w) for w in problems.initial_weights()]
    x_in, y_in = tf.placeholder(tf.float32, [None, problems.D]), tf.placeholder(tf.float32)
    out = tf.matmul(tf.tanh(tf.matmul(x_in, weights[0]) + weights[1]), weights[2]) + weights[3]
    loss = tf.reduce_mean(tf.square(out - y_in))
    opt = kol.Adam(lr=0.01)
    train_op = opt.apply_gradients(zip(tf.gradients(loss, weights), weights))
    session = K.get_session()
    session.run(tf.variables_initializer(weights + opt.weights))
    ref = reference.Adam(lr=0.01)
    expected = [w.astype(np.float64) for w in problems.initial_weights()]
    for i in range(steps):
        xb, yb = batch_of(i)
        session.run(train_op, {x_in: xb, y_in: yb})
        ref.step(expected, problems.numpy_gradients(expected, xb, yb))
    raw = problems.flat(session.run(weights))
    np.testing.assert_allclose(raw, problems.flat(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw, by_batch, rtol=1e-5, atol=1e-6)
    assert session.run(opt.iterations) == steps


def test_apply_gradients_rejects_missing_gradients():
    v = tf.Variable([1.])
    with pytest.raises(ValueError, match='None'):
        kol.SGD().apply_gradients([(None, v)])


def test_distributed_without_horovod_says_how_to_install_it():
    code = ('import sys\nsys.modules["horovod"] = None  # as if not installed\n'
            'import keras_opt_legacy.distributed\n')
    done = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert done.returncode != 0
    assert 'ImportError: keras_opt_legacy.distributed needs Horovod' in done.stdout
    assert '`make horovod`' in done.stdout
