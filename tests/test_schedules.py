"""Learning-rate schedules: TensorFlow 1.15's own values at every step 0..2000, training that
follows the NumPy reference, exact resume in a fresh process, callbacks, bad input."""
import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import schedules
import problems
import reference
import resume

TF_SCHEDULES = tf.keras.optimizers.schedules
TF_EXPERIMENTAL = tf.keras.experimental

# (our schedule, TF's own with the same arguments): boundaries land on whole steps, staircases
# step at multiples of decay_steps, cycles and restarts happen inside 0..2000.
PAIRS = [
    ('exponential', lambda m: m.ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5), TF_SCHEDULES),
    ('exponential-staircase', lambda m: m.ExponentialDecay(0.1, 250, 0.7, staircase=True),
     TF_SCHEDULES),
    ('piecewise', lambda m: m.PiecewiseConstantDecay([10, 500, 1500], [1., .5, .1, .01]),
     TF_SCHEDULES),
    ('piecewise-one-boundary', lambda m: m.PiecewiseConstantDecay([0], [.3, .2]), TF_SCHEDULES),
    ('polynomial', lambda m: m.PolynomialDecay(0.1, 1000, end_learning_rate=0.001, power=2.),
     TF_SCHEDULES),
    ('polynomial-cycle', lambda m: m.PolynomialDecay(0.1, 300, 0.01, power=0.5, cycle=True),
     TF_SCHEDULES),
    ('inverse-time', lambda m: m.InverseTimeDecay(0.1, 50, 0.5), TF_SCHEDULES),
    ('inverse-time-staircase', lambda m: m.InverseTimeDecay(0.1, 100, 2., staircase=True),
     TF_SCHEDULES),
    ('cosine', lambda m: m.CosineDecay(0.1, 1200, alpha=0.1), TF_EXPERIMENTAL),
    ('cosine-restarts', lambda m: m.CosineDecayRestarts(0.1, 200), TF_EXPERIMENTAL),
    ('cosine-restarts-constant-period', lambda m: m.CosineDecayRestarts(
        0.1, 300, t_mul=1.0, m_mul=0.8, alpha=0.05), TF_EXPERIMENTAL),
    ('cosine-restarts-growing', lambda m: m.CosineDecayRestarts(
        0.2, 100, t_mul=1.5, m_mul=0.9), TF_EXPERIMENTAL),
]


def values(schedule, steps):
    step = tf.placeholder(tf.int64, [])
    rate = schedule(step)
    session = K.get_session()
    return np.array([session.run(rate, {step: s}) for s in steps])


@pytest.mark.parametrize('make, tf_module', [(m, t) for _, m, t in PAIRS],
                         ids=[name for name, _, _ in PAIRS])
def test_values_equal_tensorflow_at_every_step(make, tf_module):
    steps = range(2001)
    ours, theirs = values(make(schedules), steps), values(make(tf_module), steps)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)
    assert len(np.unique(ours)) > 1  # the schedule really changes over these steps


def test_warmup_ramps_linearly_then_follows_the_schedule():
    inner = schedules.ExponentialDecay(0.1, 100, 0.5)
    got = values(schedules.Warmup(inner, warmup_steps=10), range(30))
    plain = values(inner, range(30))
    ramp = np.minimum(1., (np.arange(30) + 1.) / 10)
    np.testing.assert_allclose(got, plain * ramp, rtol=1e-6)
    assert got[0] == pytest.approx(plain[0] / 10, rel=1e-6) and got[0] > 0
    np.testing.assert_allclose(got[9:], plain[9:], rtol=1e-6)
    np.testing.assert_allclose(values(schedules.Warmup(0.5, 4), range(6)),
                               [0.125, 0.25, 0.375, 0.5, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(values(schedules.Warmup(inner, 0), range(5)), plain[:5], rtol=1e-6)


def _tf_rates(make_tf, steps):
    """The rates TF's own schedule gives: the reference is driven by these, not by our code."""
    rates = values(make_tf(), range(steps))
    K.clear_session()
    return rates


@pytest.mark.parametrize('name, options', [('SGD', {'momentum': 0.9}), ('Adam', {}),
                                           ('Nadam', {}), ('Adagrad', {})])
def test_training_with_a_schedule_follows_the_reference(name, options):
    steps = 40
    rates = _tf_rates(lambda: TF_SCHEDULES.PiecewiseConstantDecay([9, 20], [0.1, 0.03, 0.01]),
                      steps)
    model = problems.mlp()
    model.compile(getattr(kol, name)(
        lr=schedules.PiecewiseConstantDecay([9, 20], [0.1, 0.03, 0.01]), **options), 'mse')
    ref = reference.REFERENCES[name](lr=lambda step: rates[step], **options)
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    batch_of = problems.batches(*problems.data())
    for i in range(steps):
        assert kol.current_learning_rate(model.optimizer) == pytest.approx(rates[i], rel=1e-6)
        x, y = batch_of(i)
        model.train_on_batch(x, y)
        ref.step(weights, problems.numpy_gradients(weights, x, y))
        np.testing.assert_allclose(problems.flat(model.get_weights()), problems.flat(weights),
                                   rtol=1e-5, atol=1e-6, err_msg='step %d' % i)


def test_config_nests_the_schedule_and_round_trips():
    lr = schedules.Warmup(schedules.CosineDecayRestarts(0.1, 50, t_mul=1.5), warmup_steps=7)
    opt = kol.Adam(learning_rate=lr, amsgrad=True)
    config = opt.get_config()
    assert config['lr']['class_name'] == 'keras_opt_legacy.Warmup'
    assert config['lr']['config']['schedule']['class_name'] == 'keras_opt_legacy.CosineDecayRestarts'
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert clone.get_config() == config
    steps = range(0, 300, 7)
    np.testing.assert_array_equal(values(clone._schedule, steps), values(lr, steps))


def test_save_load_in_a_fresh_process_continues_the_schedule(tmp_path):
    """model.save after 15 steps, keras.models.load_model in a fresh process: the next 15
    steps' rates and weights equal this process's."""
    make = lambda: kol.SGD(lr=schedules.Warmup(schedules.ExponentialDecay(0.2, 5, 0.8), 6),
                           momentum=0.5)
    run = resume.fresh_process(tmp_path, make(), 15, save='keras', load='keras', rates=True)
    rates = np.concatenate([run.before.rates, run.here.rates])
    assert len(set(np.round(rates, 7))) > 20  # warm-up then decay: the rate changes every step
    np.testing.assert_array_equal(run.there.rates, run.here.rates)
    np.testing.assert_array_equal(run.there.weights, run.here.weights)


def test_scheduled_lr_reads_but_refuses_to_be_set():
    model = problems.mlp()
    opt = kol.Adam(lr=schedules.ExponentialDecay(0.01, 1, 0.5))
    model.compile(opt, 'mse')
    x, y = problems.data()
    model.train_on_batch(x[:16], y[:16])
    assert K.get_value(opt.lr) == pytest.approx(0.005)
    assert K.get_value(opt.learning_rate) == pytest.approx(0.005)
    assert K.get_value(tf.convert_to_tensor(opt.lr)) == pytest.approx(0.005)  # e.g. in a metric
    graph_size = len(tf.get_default_graph().get_operations())
    with pytest.raises(RuntimeError, match='driven by the schedule ExponentialDecay'):
        K.set_value(opt.lr, 0.1)
    with pytest.raises(RuntimeError, match='cannot be set'):
        opt.lr = 0.1
    assert len(tf.get_default_graph().get_operations()) == graph_size  # nothing was built
    before = problems.flat(model.get_weights())
    with pytest.raises(RuntimeError, match='LearningRateScheduler or ReduceLROnPlateau'):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch: 0.1)])
    np.testing.assert_array_equal(problems.flat(model.get_weights()), before)  # failed up front
    with pytest.raises(RuntimeError, match='LearningRateScheduler or ReduceLROnPlateau'):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
            keras.callbacks.ReduceLROnPlateau(monitor='loss', patience=0, min_delta=1e9)])
    assert kol.current_learning_rate(opt) == pytest.approx(0.01 * 0.5 ** K.get_value(
        opt.iterations))


def test_current_learning_rate_of_keras_builtins_and_no_graph_growth():
    model = problems.mlp()
    opt = keras.optimizers.SGD(lr=0.1, decay=0.5)
    model.compile(opt, 'mse')
    problems.train(model, 3, problems.batches(*problems.data()))
    assert kol.current_learning_rate(opt) == pytest.approx(0.1 / (1 + 0.5 * 3))
    graph_size = len(tf.get_default_graph().get_operations())
    for _ in range(5):
        kol.current_learning_rate(opt)
    assert len(tf.get_default_graph().get_operations()) == graph_size


@pytest.mark.parametrize('make, argument', [
    (lambda: schedules.ExponentialDecay(0.1, 0, 0.5), 'decay_steps'),
    (lambda: schedules.ExponentialDecay(0.1, 10, -0.5), 'decay_rate'),
    (lambda: schedules.InverseTimeDecay(0.1, -5, 0.5), 'decay_steps'),
    (lambda: schedules.InverseTimeDecay(-0.1, 5, 0.5), 'initial_learning_rate'),
    (lambda: schedules.PolynomialDecay(0.1, 0), 'decay_steps'),
    (lambda: schedules.PolynomialDecay(0.1, 10, end_learning_rate=-1.), 'end_learning_rate'),
    (lambda: schedules.PiecewiseConstantDecay([10, 10], [1., .5, .1]), 'strictly increasing'),
    (lambda: schedules.PiecewiseConstantDecay([10, 5], [1., .5, .1]), 'strictly increasing'),
    (lambda: schedules.PiecewiseConstantDecay([10, 20], [1., .5]), 'len\\(boundaries\\) \\+ 1'),
    (lambda: schedules.PiecewiseConstantDecay([10], [1., -.5]), 'values\\[1\\]'),
    (lambda: schedules.CosineDecay(0.1, 0), 'decay_steps'),
    (lambda: schedules.CosineDecayRestarts(0.1, 10, t_mul=0.), 't_mul'),
    (lambda: schedules.Warmup(0.1, -1), 'warmup_steps'),
    (lambda: kol.SGD(lr=schedules.ExponentialDecay(0.1, 10, 0.5), decay=0.1), 'decay'),
])
def test_bad_input_fails_at_construction_naming_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize('steps, rates', [
    ([0, 1000, 2000], [0., 1e-3, 1e-4]),  # bert4keras's lr_schedule={1000: 1, 2000: 0.1}
    ([-1, 9, 10, 99], [0., 2e-5, 1.9e-5, 0.]),  # negative steps: keras-bert's warm-up
    ([5], [0.3]), ([2.5, 7.25], [0.1, 0.2])])
def test_piecewise_linear_equals_numpy_interp(steps, rates):
    at = list(range(-5, 40)) + list(range(900, 2100, 7))
    np.testing.assert_allclose(values(schedules.PiecewiseLinear(steps, rates), at),
                               np.interp(at, steps, rates), rtol=1e-6, atol=1e-12)


def test_warmup_with_shift_starts_the_schedule_after_the_warmup():
    """Without shift, Warmup(PolynomialDecay(1e-3, 100)) peaks near 7e-4 (the decay counts
    during the warm-up); with shift=True it peaks at 1e-3, then decays from there."""
    inner = schedules.PolynomialDecay(1e-3, 100, end_learning_rate=0.)
    plain = values(inner, range(200))
    shifted = values(schedules.Warmup(inner, 30, shift=True), range(200))
    expected = [plain[0] * (s + 1) / 30 if s < 30 else plain[s - 30] for s in range(200)]
    np.testing.assert_allclose(shifted, expected, rtol=1e-6)
    assert np.isclose(shifted.max(), 1e-3, rtol=1e-6)
    assert values(schedules.Warmup(inner, 30), range(200)).max() < 7.2e-4
    config = schedules.Warmup(inner, 30, shift=True).get_config()
    again = schedules.Warmup.from_config(config)
    np.testing.assert_array_equal(values(again, range(200)), shifted)


@pytest.mark.parametrize('make, argument', [
    (lambda: schedules.PiecewiseLinear([0, 0], [1., 2.]), 'strictly increasing'),
    (lambda: schedules.PiecewiseLinear([0, 1], [1.]), 'same length'),
    (lambda: schedules.PiecewiseLinear([0, 1], [1., -1.]), 'values\\[1\\]'),
    (lambda: schedules.PiecewiseLinear([0, float('nan')], [1., 1.]), 'steps\\[1\\]')])
def test_piecewise_linear_bad_input(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()
    with pytest.raises(TypeError, match='steps'):
        schedules.PiecewiseLinear(None, [1.])
