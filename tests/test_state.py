"""Optimizer state: reset, the other reset routes, strict loading (by name, from Keras's own
checkpoints, running no code), exact resume, crash-safe checkpoints, the non-finite guard."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import builtin, schedules
from keras_opt_legacy.callbacks import Checkpoint
import catalog
import problems
import resume

X, Y = problems.data(n=256)
BATCH_OF = problems.batches(X, Y, 16)
N = 6


def compiled(optimizer, weights=None):
    model = problems.mlp(weights)
    model.compile(optimizer, 'mse')
    return model


def train(model, steps, start=0):
    problems.train(model, steps, lambda i: BATCH_OF(start + i))
    return problems.flat(model.get_weights())


# ---- reset -----------------------------------------------------------------------------------

@pytest.mark.parametrize('entry, options', catalog.cases('reset'))
def test_after_reset_the_next_steps_equal_a_fresh_optimizer(entry, options):
    make = lambda: catalog.make(entry, options)  # noqa: E731
    model = compiled(make())
    train(model, N)
    weights_at_reset = model.get_weights()
    assert kol.reset_optimizer(model.optimizer) is True
    np.testing.assert_array_equal(problems.flat(model.get_weights()),
                                  problems.flat(weights_at_reset))  # model weights untouched
    after_reset = train(model, 2 * N, start=N)
    fresh = compiled(make(), weights_at_reset)
    np.testing.assert_array_equal(train(fresh, 2 * N, start=N), after_reset)


@pytest.mark.parametrize('entry, options', catalog.cases('all-slots', lambda e: e.keras))
def test_reset_works_on_keras_builtins(entry, options):
    name = entry.keras
    optimizer = getattr(keras.optimizers, name)(**options)
    model = compiled(optimizer)
    train(model, N)
    weights_at_reset = model.get_weights()
    assert kol.reset_optimizer(optimizer)
    assert K.get_value(optimizer.iterations) == 0
    for w in optimizer.weights:  # Keras 2.3 lists Nadam's m_schedule too
        assert w is getattr(optimizer, 'm_schedule', None) or not np.any(K.get_value(w)), w.name
    if name == 'Nadam':
        assert K.get_value(optimizer.m_schedule) == 1.
    np.testing.assert_array_equal(problems.flat(model.get_weights()),
                                  problems.flat(weights_at_reset))
    if not entry.keras_races:  # deterministic with the gate only
        K.clear_session()
        gated = problems.gated(getattr(keras.optimizers, name))
        model = compiled(gated(**options))
        train(model, N)
        weights_at_reset = model.get_weights()
        kol.reset_optimizer(model.optimizer)
        fresh = compiled(gated(**options), weights_at_reset)
        np.testing.assert_array_equal(train(model, N, start=N), train(fresh, N, start=N))


def test_repeated_resets_add_nothing_to_the_graph_and_keep_iterations_keeps_counting():
    optimizer = kol.Nadam()
    model = compiled(optimizer)
    train(model, N)
    kol.reset_optimizer(optimizer, keep_iterations=True)
    assert K.get_value(optimizer.iterations) == N
    assert K.get_value(optimizer.m_schedule) != 1.  # Nadam's product over the steps is kept
    assert not any(np.any(K.get_value(w)) for w in optimizer.weights[2:])
    optimizer.reset()
    assert K.get_value(optimizer.iterations) == 0 and K.get_value(optimizer.m_schedule) == 1.
    size = len(tf.get_default_graph().get_operations())
    for _ in range(5):
        optimizer.reset()
        kol.reset_optimizer(optimizer, keep_iterations=True)
    assert len(tf.get_default_graph().get_operations()) == size


def test_reset_before_training_warns_and_does_nothing():
    optimizer = kol.Adam()
    compiled(optimizer)
    with pytest.warns(UserWarning, match='no state yet'):
        assert kol.reset_optimizer(optimizer) is False
    with pytest.warns(UserWarning, match='no state yet'):
        assert kol.reset_optimizer(keras.optimizers.Adam()) is False


def test_the_other_two_routes_give_a_fresh_trajectory_too():
    """Recompiling with a new optimizer keeps the model's weights; set_weights to the initial
    state rewinds the same optimizer. Both then train like a fresh optimizer."""
    model = compiled(kol.Adam(0.01))
    train(model, N)
    weights_at_reset = model.get_weights()
    expected = train(compiled(kol.Adam(0.01), weights_at_reset), N, start=N)

    model.compile(kol.Adam(0.01), 'mse')  # route 1: a new optimizer, same weights
    np.testing.assert_array_equal(train(model, N, start=N), expected)

    optimizer = kol.Adam(0.01)  # route 2: set_weights to the state it had before training
    model = compiled(optimizer, weights_at_reset)
    model._make_train_function()  # builds the state (as the first fit would)
    initial = optimizer.get_weights()
    train(model, 3, start=50)
    model.set_weights(weights_at_reset)
    optimizer.set_weights(initial)
    np.testing.assert_array_equal(train(model, N, start=N), expected)


# ---- strict loading --------------------------------------------------------------------------

def test_strict_loading_matches_by_name_and_resumes(tmp_path):
    path = str(tmp_path / 'm.h5')
    model = compiled(kol.GradientAccumulation(kol.Nadam(), 4))
    train(model, N)
    kol.save_model(model, path)
    expected = train(model, N, start=N)

    other = compiled(kol.GradientAccumulation(kol.Nadam(), 4))
    other.load_weights(path)
    kol.load_optimizer_state(other, path)
    np.testing.assert_array_equal(train(other, N, start=N), expected)


def test_strict_loading_lists_every_mismatch_and_assigns_nothing(tmp_path):
    path = str(tmp_path / 'm.h5')
    model = compiled(kol.Adam(0.01))
    train(model, N)
    kol.save_model(model, path)

    other = compiled(kol.Adamax())
    train(other, 2)
    with pytest.raises(ValueError, match=r'(?s)saved by the optimizer keras_opt_legacy.Adam; '
                       r'the model is compiled with keras_opt_legacy.Adamax.*u/dense_\d+/kernel: '
                       r'missing from the file.*v/dense_\d+/kernel: in the file, not in the'):
        kol.load_optimizer_state(other, path)
    plain = str(tmp_path / 'plain.h5')
    model.save(plain)  # no names: only the same class can be matched (by our layout)
    with pytest.raises(ValueError, match='saved with the optimizer keras_opt_legacy.Adam; the '
                       'model is compiled with keras_opt_legacy.Adamax'):
        kol.load_optimizer_state(other, plain)

    other = keras.models.Sequential([keras.layers.Dense(3, input_shape=(problems.D,)),
                                     keras.layers.Dense(1)])
    other.compile(kol.Adam(0.01, amsgrad=True), 'mse')
    other.train_on_batch(*BATCH_OF(0))
    before = other.optimizer.get_weights()
    with pytest.raises(ValueError) as error:
        kol.load_optimizer_state(other, path)
    message = str(error.value)
    assert 'nothing was loaded' in message
    assert 'shape (5, 4) in the file, (5, 3) in the optimizer' in message
    assert 'vhat/' in message and 'missing from the file' in message
    for a, b in zip(other.optimizer.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('entry, options', catalog.cases('keras-checkpoint'))
def test_keras_builtin_checkpoints_load_into_ours(tmp_path, entry, options):
    name = entry.keras
    path = str(tmp_path / 'keras.h5')
    keras_model = compiled(getattr(keras.optimizers, name)(**options))
    train(keras_model, N)
    keras_model.save(path)
    params = keras_model._collected_trainable_weights
    saved = dict(zip(builtin.weight_names(name, len(keras_model.optimizer.weights), params),
                     keras_model.optimizer.get_weights()))

    ours = compiled(catalog.make(entry, options))
    ours.load_weights(path)
    kol.load_optimizer_state(ours, path)
    state = dict(zip(ours.optimizer.weight_names, ours.optimizer.get_weights()))
    for state_name, value in state.items():
        key = state_name.replace('dense_3', 'dense_1').replace('dense_4', 'dense_2')
        if key in saved:
            np.testing.assert_array_equal(value, saved[key], err_msg=state_name)
        elif state_name == 'm_schedule':  # not saved by Keras 2.2: recomputed from the step count
            race_free = compiled(kol.Nadam())
            train(race_free, N)
            assert value == pytest.approx(K.get_value(race_free.optimizer.m_schedule), rel=1e-6)
            # (Keras's own value drifts from it: its steps read `iterations` before or after
            # the increment, at random; about 0.1% after 6 steps here.)
        else:  # not saved by Keras 2.2
            assert (state_name, entry.name, value) == ('iterations', 'RMSprop', 0)
    before = problems.flat(ours.get_weights())
    after = train(ours, N, start=N)
    assert np.all(np.isfinite(after)) and not np.array_equal(after, before)


BOOBY_TRAP = r'''
import sys, keras, keras_opt_legacy as kol
sys.path.insert(0, sys.argv[2])
import problems
marker = sys.argv[3]
layer = keras.layers.Lambda(eval("lambda x: __import__('os').makedirs(%r, exist_ok=True) or x"
                                 % marker))
model = keras.models.Sequential([keras.layers.Dense(4, input_shape=(problems.D,)), layer,
                                 keras.layers.Dense(1)])
model.compile(kol.Adam(), 'mse')
model.train_on_batch(*problems.batches(*problems.data())(0))
kol.save_model(model, sys.argv[1])
'''


def test_strict_loading_runs_no_code_from_the_file(tmp_path):
    path, marker = str(tmp_path / 'trap.h5'), str(tmp_path / 'code-ran')
    script = tmp_path / 'make.py'
    script.write_text(BOOBY_TRAP)
    subprocess.run([sys.executable, str(script), path, os.path.dirname(__file__), marker],
                   check=True)
    os.rmdir(marker)  # it ran while the file was made

    model = keras.models.Sequential([keras.layers.Dense(4, input_shape=(problems.D,)),
                                     keras.layers.Lambda(lambda x: x), keras.layers.Dense(1)])
    model.compile(kol.Adam(), 'mse')
    model.train_on_batch(*BATCH_OF(0))
    kol.load_optimizer_state(model, path)
    assert not os.path.exists(marker)  # ours read arrays only

    keras.models.load_model(path)  # Keras's loader rebuilds the Lambda from its bytecode...
    assert os.path.exists(marker)  # ...and runs it: the file really was booby-trapped


# ---- exact resume in a fresh process ---------------------------------------------------------

SCHEDULES = [schedules.ExponentialDecay(0.05, 3, 0.7, staircase=True),
             schedules.PiecewiseConstantDecay([2, 7], [0.05, 0.02, 0.01]),
             schedules.PolynomialDecay(0.05, 4, 0.001, power=2., cycle=True),
             schedules.InverseTimeDecay(0.05, 2, 0.5), schedules.CosineDecay(0.05, 9),
             schedules.CosineDecayRestarts(0.05, 3, t_mul=1.5, m_mul=0.9),
             schedules.Warmup(schedules.CosineDecay(0.05, 9), 4),
             schedules.Warmup(schedules.PolynomialDecay(0.05, 9), 3, shift=True),
             schedules.PiecewiseLinear([-1, 3, 8], [0., 0.05, 0.01])]


@pytest.mark.parametrize('schedule', SCHEDULES, ids=['%s-%d' % (type(s).__name__, i)
                                                      for i, s in enumerate(SCHEDULES)])
def test_every_schedule_resumes_exactly_in_a_fresh_process(tmp_path, schedule):
    check_fresh_process_resume(tmp_path, lambda: kol.Adam(lr=schedule))


def check_fresh_process_resume(tmp_path, make, steps=N):
    """kol.save_model after `steps` batches, kol.load_model in a fresh process (which injects
    an optimizer that needs it): the continuation equals this process's, step by step."""
    run = resume.fresh_process(tmp_path, make(), steps, data_size=len(X))
    np.testing.assert_array_equal(run.there.weights, run.here.weights)


@pytest.mark.parametrize('entry, options', catalog.cases('resume'))
def test_every_wrapper_inject_optimizer_and_new_rule_resumes_exactly_in_a_fresh_process(
        tmp_path, entry, options):
    check_fresh_process_resume(tmp_path, lambda: catalog.make(entry, options),
                               steps=7)  # 7 batches: mid-cycle


# ---- crash-safe checkpoints ------------------------------------------------------------------

WRITER = r'''
import os, sys, time
sys.path.insert(0, sys.argv[2])
import numpy as np, keras, keras_opt_legacy as kol, problems
from keras_opt_legacy.callbacks import Checkpoint
directory, mode = sys.argv[1], sys.argv[3]
x, y = problems.data(n=256)
if mode == 'resume':
    model, epoch = Checkpoint.load_latest(directory)
else:
    model, epoch = problems.mlp(), 0
    model.compile(kol.GradientAccumulation(kol.Adam(0.01), 3), 'mse')
callbacks = []
if mode == 'crash':
    checkpoint = Checkpoint(directory, keep=2)
    callbacks = [checkpoint]
    original = keras.backend.batch_get_value
    def hang_on_the_second_save(ops, calls=[0]):
        # Keras's saver calls this between writing the model and the optimizer state.
        if len(ops) == len(model.optimizer.weights) and Checkpoint.checkpoints(directory):
            open(os.path.join(directory, '..', 'saving'), 'w').close()
            time.sleep(600)
        return original(ops)
    keras.backend.batch_get_value = hang_on_the_second_save
model.fit(x, y, batch_size=16, epochs=3, initial_epoch=epoch, shuffle=False, verbose=0,
          callbacks=callbacks)
np.save(os.path.join(directory, '..', mode + '.npy'), problems.flat(model.get_weights()))
'''


def test_a_writer_killed_mid_save_leaves_a_checkpoint_that_resumes_exactly(tmp_path):
    directory = str(tmp_path / 'checkpoints')
    os.makedirs(directory)
    script = tmp_path / 'writer.py'
    script.write_text(WRITER)
    run = lambda mode, **kw: subprocess.Popen(
        [sys.executable, str(script), directory, os.path.dirname(__file__), mode], **kw)

    writer = run('crash')
    deadline = time.time() + 120
    while not (tmp_path / 'saving').exists():
        assert writer.poll() is None and time.time() < deadline, 'the writer never got to save'
        time.sleep(0.1)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()

    left = sorted(os.listdir(directory))
    assert [n for n in left if n.endswith('.tmp')], left  # the half-written file
    assert Checkpoint.checkpoints(directory) == [os.path.join(directory, 'checkpoint-00000016.h5')]
    assert run('resume').wait() == 0
    assert run('uninterrupted').wait() == 0
    np.testing.assert_array_equal(np.load(str(tmp_path / 'resume.npy')),
                                  np.load(str(tmp_path / 'uninterrupted.npy')))


def test_checkpoint_keeps_the_newest_k(tmp_path):
    model = compiled(kol.Adam())
    checkpoint = Checkpoint(str(tmp_path), keep=2, every_batches=3)
    model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[checkpoint])
    assert [os.path.basename(p) for p in Checkpoint.checkpoints(str(tmp_path))] == [
        'checkpoint-00000012.h5', 'checkpoint-00000015.h5']
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith('.tmp')]


# ---- the non-finite guard --------------------------------------------------------------------

@pytest.mark.parametrize('make_inner', [lambda: kol.Adam(0.01), lambda: keras.optimizers.Nadam(),
                                        lambda: kol.GradientAccumulation(kol.Adam(0.01), 2)],
                         ids=['ours', 'keras', 'accumulation'])
def test_a_non_finite_batch_changes_nothing_and_is_counted(make_inner):
    optimizer = kol.SkipNonFinite(make_inner())
    model = compiled(optimizer)
    train(model, 3)
    x, y = BATCH_OF(3)
    x = x.copy()
    x[0, 0] = np.nan
    before = [K.get_value(w) for w in model.weights + optimizer.weights]
    model.train_on_batch(x, y)
    after = [K.get_value(w) for w in model.weights + optimizer.weights]
    for name, a, b in zip([w.name for w in model.weights] + optimizer.weight_names[1:],
                          before[:len(model.weights)] + before[len(model.weights) + 1:],
                          after[:len(model.weights)] + after[len(model.weights) + 1:]):
        if name != 'skipped':
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert K.get_value(optimizer.skipped) == 1
    train(model, 3, start=4)
    assert K.get_value(optimizer.skipped) == 1
    assert np.all(np.isfinite(problems.flat(model.get_weights())))
