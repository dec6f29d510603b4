"""The rules of issue 18 (RAdam, LAMB, LARS, Adafactor, AdaBound, Yogi, AdaBelief, Lion): what the
catalog-driven tests (reference match, properties, determinism, state, API, gradient contract)
do not already cover.

- LARS against TensorFlow's own `tf.contrib.opt.LARSOptimizer`, run by Keras's `TFOptimizer` on
  the same Keras model (fused and formula paths; Nesterov; skip_list).
- Adafactor's state size (an n x m kernel keeps n + m second-moment numbers, Adam 2nm) and its
  relative step (lr=None: min(0.01, 1/sqrt(t)), read-only).
- Every wrapper around every rule trains, saves (`model.save`) and loads
  (`keras.models.load_model`, no custom_objects) and continues exactly.
- Ranger = Lookahead(RAdam(), sync_period=6, slow_step=0.5) against a NumPy composition.
- LearningRateMultipliers over the new rules whose step is not simply proportional to the rate.
- Edge cases: RAdam on both sides of its threshold, step by step; LAMB with zero-norm parameters;
  a LAMB exclusion pattern that matches nothing.

Two AdaBound defects found here are fixed (a session read while the update was built, which
failed inside the wrappers that create state from the parameters; LearningRateMultipliers
scaled its bounds by the factor): the tests of those cases failed before the fix.
"""
import math

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import compat, ops
import problems
import reference_rules as RR
import resume

RULES = ['RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound', 'Yogi', 'AdaBelief', 'Lion']
STEPS = 30


def relative(ours, theirs):
    """max |ours - theirs| over every step, relative to the largest |weight| of that step."""
    return float((np.abs(ours - theirs) / np.abs(theirs).max(axis=1, keepdims=True)).max())


def trajectory(make, steps=STEPS, weights=None):
    """`problems.mlp(weights)` trained with the optimizer `make()` builds, in a fresh graph: the
    flat weights after each step."""
    K.clear_session()
    model = problems.mlp(weights)
    model.compile(make(), 'mse')
    batch_of = problems.batches(*problems.data())
    points = []
    for i in range(steps):
        model.train_on_batch(*batch_of(i))
        points.append(problems.flat(model.get_weights()))
    return np.array(points)


def numpy_trajectory(ref, steps=STEPS, weights=None, names=None, after_step=None):
    """The same training in NumPy: `ref` (a reference_rules class) stepped on
    `problems.numpy_gradients`; `after_step(i, weights)` may change the weights in place."""
    weights = [w.astype(np.float64) for w in (weights or problems.initial_weights())]
    batch_of = problems.batches(*problems.data())
    points = []
    for i in range(steps):
        ref.step(weights, problems.numpy_gradients(weights, *batch_of(i)), names=names)
        if after_step is not None:
            after_step(i, weights)
        points.append(problems.flat(weights))
    return np.array(points)


NAMES = ['dense_1/kernel:0', 'dense_1/bias:0', 'dense_2/kernel:0', 'dense_2/bias:0']


# ---- LARS is tf.contrib.opt.LARSOptimizer ------------------------------------------------------

class GatedTFOptimizer(keras.optimizers.TFOptimizer):
    """Keras's TFOptimizer with TF's apply_gradients waiting for every gradient and the loss.
    Ungated it has the race of Keras's built-ins: an update may assign a weight (TF1 ref
    variables alias `W/read`) before the backward pass of another layer, or the loss, has read
    it. (It did not show in a few runs of this small model; the gate makes the reference sure.)
    As Keras's, `iterations` counts the batches; TF's LARS keeps no step count."""

    def get_updates(self, loss, params):
        grads = ops.after_all([g for g, _ in self.optimizer.compute_gradients(loss, params)],
                              also=[loss])
        with tf.control_dependencies(grads):
            update = self.optimizer.apply_gradients(list(zip(grads, params)))
        self.updates = [K.update_add(self.iterations, 1), update]
        return self.updates


LARS_OPTIONS = [
    dict(lr=5.),
    dict(lr=5., nesterov=True, weight_decay=0.01),
    dict(lr=0.1, eeta=0.05, skip_list=['bias']),
    dict(lr=1., momentum=0.5, eeta=0.01, epsilon=1e-6, nesterov=True, skip_list=['dense_2/']),
]


@pytest.mark.parametrize('options', LARS_OPTIONS,
                         ids=lambda o: ','.join('%s=%s' % kv for kv in sorted(o.items())))
def test_lars_is_tf_contrib_lars(options):
    """30 steps of the same Keras model: ours (TF's ApplyMomentum kernel, and the formula graph)
    and tf.contrib.opt.LARSOptimizer through TFOptimizer. Measured: equal to the bit on TF 1.15
    (the norms, the trust ratio and the momentum step are the same ops). TF 1.14's LARS is the
    earlier version (no weight decay in the gradient, the momentum of the unscaled gradient:
    fixed in 1.15), which the rule does not follow (the issue names 1.15's): there the NumPy
    reference of the catalog checks the rule."""
    if compat.TF_VERSION < (1, 15):
        pytest.skip('TensorFlow %s: tf.contrib.opt.LARSOptimizer predates 1.15\'s (the rule '
                    'follows 1.15\'s)' % tf.__version__)
    theirs_options = dict(options)
    lr = theirs_options.pop('lr')
    nesterov = theirs_options.pop('nesterov', False)
    theirs = trajectory(lambda: GatedTFOptimizer(tf.contrib.opt.LARSOptimizer(
        lr, use_nesterov=nesterov, **theirs_options)))
    moved = np.abs(theirs[-1] - problems.flat(problems.initial_weights())).max()
    assert moved > 0.1, moved  # it trains, far more than the tolerance
    for fused in (True, False):
        ours = trajectory(lambda: kol.LARS(fused=fused, **options))
        assert relative(ours, theirs) <= 1e-6, (fused, relative(ours, theirs))
    if 'skip_list' in options:  # the skipped parameters take the plain rate: it matters
        unskipped = dict(options)
        del unskipped['skip_list']
        assert relative(trajectory(lambda: kol.LARS(**unskipped)), theirs) > 1e-3


# ---- Adafactor: state size and relative step ---------------------------------------------------

def state_numbers(make, layers):
    """{state name: number of values} of the optimizer `make()` builds on a model of `layers()`,
    after one step; the step counter left out."""
    K.clear_session()
    optimizer = make()
    model = keras.models.Sequential(layers())
    model.compile(optimizer, 'mse')
    shape = (4,) + model.input_shape[1:]
    model.train_on_batch(np.ones(shape, 'float32'), np.zeros((4,) + model.output_shape[1:],
                                                              'float32'))
    names = optimizer.weight_names
    assert names[0] == 'iterations'
    return {name: int(np.prod(K.int_shape(w))) for name, w in zip(names[1:],
                                                                  optimizer.weights[1:])}


def dense(n, m):
    return lambda: [keras.layers.Dense(m, input_shape=(n,))]


@pytest.mark.parametrize('n, m', [(20, 30), (300, 7)])
def test_adafactor_keeps_n_plus_m_second_moments_of_an_n_by_m_kernel(n, m):
    state = state_numbers(lambda: kol.Adafactor(), dense(n, m))
    assert state == {'vr/dense_1/kernel': n, 'vc/dense_1/kernel': m, 'v/dense_1/bias': m}
    adam = state_numbers(lambda: kol.Adam(), dense(n, m))
    assert sum(adam.values()) == 2 * (n * m + m)
    # beta_1 > 0 adds a first moment per parameter; factored=False keeps full second moments.
    with_m = state_numbers(lambda: kol.Adafactor(beta_1=0.9), dense(n, m))
    assert sum(with_m.values()) == n + m + m + (n * m + m)
    unfactored = state_numbers(lambda: kol.Adafactor(factored=False), dense(n, m))
    assert sum(unfactored.values()) == n * m + m
    # A kernel with a dimension under min_dim_size_to_factor is not factored.
    small = min(n, m)
    assert state_numbers(lambda: kol.Adafactor(min_dim_size_to_factor=small + 1),
                         dense(n, m)) == {'v/dense_1/kernel': n * m, 'v/dense_1/bias': m}


def test_adafactor_factors_the_last_two_dimensions_of_a_convolution_kernel():
    layers = lambda: [keras.layers.Conv2D(8, 3, input_shape=(6, 6, 4)), keras.layers.Flatten()]
    state = state_numbers(lambda: kol.Adafactor(), layers)
    assert state == {'vr/conv2d_1/kernel': 3 * 3 * 4, 'vc/conv2d_1/kernel': 3 * 3 * 8,
                     'v/conv2d_1/bias': 8}
    assert sum(state_numbers(lambda: kol.Adam(), layers).values()) == 2 * (3 * 3 * 4 * 8 + 8)


@pytest.mark.parametrize('parameter_scale, factor', [(True, 1.), (False, 0.05)])
def test_adafactor_relative_step_is_min_of_0_01_and_one_over_sqrt_t(parameter_scale, factor):
    K.clear_session()
    optimizer = kol.Adafactor(multiply_by_parameter_scale=parameter_scale)
    assert optimizer.get_config()['lr'] is None
    model = problems.compiled(optimizer)
    problems.train(model, 3, problems.batches(*problems.data()))
    assert kol.current_learning_rate(optimizer) == pytest.approx(0.01 * factor)
    for t in (1, 100, 10000, 10001, 40000, 10 ** 6):  # t: the 1-based step about to be taken
        K.set_value(optimizer.iterations, t - 1)
        assert kol.current_learning_rate(optimizer) == pytest.approx(
            min(0.01, 1. / math.sqrt(t)) * factor, rel=1e-6), t
    assert K.get_value(optimizer.lr) == pytest.approx(0.001 * factor)  # readable
    with pytest.raises(RuntimeError, match='cannot be set'):
        K.set_value(optimizer.lr, 0.1)
    with pytest.raises(RuntimeError, match='cannot be set'):
        model.fit(*problems.data(), epochs=1, verbose=0, callbacks=[
            keras.callbacks.LearningRateScheduler(lambda epoch: 0.1)])
    again = kol.Adafactor.from_config(optimizer.get_config())
    assert again.relative_step and again.get_config() == optimizer.get_config()


def test_adafactor_relative_step_past_step_10000_follows_the_reference():
    """The reference-match tests run 30 steps, where the relative step is 0.01 throughout:
    here from step 40000 on, where it is 1/sqrt(t) (and the decay 1 - t^-0.8 near 1)."""
    start = 39999
    K.clear_session()
    optimizer = kol.Adafactor()
    model = problems.compiled(optimizer)
    model._make_train_function()
    K.set_value(optimizer.iterations, start)
    ref = RR.Adafactor()
    ref.iterations = start
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    batch_of = problems.batches(*problems.data())
    for i in range(10):
        assert kol.current_learning_rate(optimizer) == pytest.approx(
            1. / math.sqrt(start + i + 1), rel=1e-6)
        model.train_on_batch(*batch_of(i))
        ref.step(weights, problems.numpy_gradients(weights, *batch_of(i)))
        np.testing.assert_allclose(problems.flat(model.get_weights()), problems.flat(weights),
                                   rtol=1e-5, atol=1e-6, err_msg='step %d' % i)
    assert np.abs(problems.flat(weights) -
                  problems.flat(problems.initial_weights())).max() > 1e-3


# ---- every wrapper around every rule -----------------------------------------------------------

WRAPPERS = {
    'GradientAccumulation': lambda rule: kol.GradientAccumulation(rule, 2),
    'Lookahead': lambda rule: kol.Lookahead(rule, sync_period=2),
    'SkipNonFinite': lambda rule: kol.SkipNonFinite(rule),
    'WeightDecay': lambda rule: kol.WeightDecay(rule, 0.1, exclude=['bias']),
    'LearningRateMultipliers': lambda rule: kol.LearningRateMultipliers(rule, {'dense_1/': 0.5}),
    'ExponentialMovingAverage': lambda rule: kol.ExponentialMovingAverage(rule, decay=0.5),
}
RATES = {'RAdam': 0.01, 'LAMB': 0.01, 'LARS': 5., 'Adafactor': None, 'AdaBound': 0.01,
         'Yogi': 0.01, 'AdaBelief': 0.01, 'Lion': 0.002}


WRAPPED = [pytest.param(wrapper, name, id='%s-%s' % (wrapper, name))
           for wrapper in sorted(WRAPPERS) for name in RULES]


@pytest.mark.parametrize('wrapper, name', WRAPPED)
def test_every_wrapper_around_every_rule_trains_saves_and_loads(tmp_path, wrapper, name):
    """3 steps (GradientAccumulation: saved mid-cycle), model.save, 3 steps more; then
    keras.models.load_model in this process (no custom_objects) continues the same 3 steps to
    the bit. (Fresh-process resume: the catalog's 'resume' kind.)"""
    K.clear_session()
    optimizer = WRAPPERS[wrapper](getattr(kol, name)(lr=RATES[name]))
    path = str(tmp_path / 'model.h5')
    _, here = resume.save_and_continue(optimizer, path, 3, 3, save='keras')
    config = optimizer.get_config()
    assert np.all(np.isfinite(here.weights))
    assert np.abs(here.weights[-1] - problems.flat(problems.initial_weights())).max() > 1e-4
    K.clear_session()
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(optimizer)
    assert type(loaded.optimizer.optimizer) is getattr(kol, name)
    assert loaded.optimizer.get_config() == config
    there = resume.train(loaded, 3, 3, resume.batches())
    np.testing.assert_array_equal(there.weights, here.weights)


# LearningRateMultipliers: "each parameter takes exactly the step of its own rate lr * factor"
# (test_multipliers.py checks the Keras-era rules against per-group copies). Here the new rules
# whose step is not simply proportional to the rate: LARS (trust ratio, fused kernel), Adafactor
# (parameter scale, first moment of the scaled step), AdaBound (bounds). The others (RAdam, LAMB,
# Yogi, AdaBelief, Lion) measured equal too, to 0 (Lion 3e-9), in a one-off run.
# AdaBound's bounds are final_lr * lr / initial_lr: an AdaBound built at lr * k has bounds at
# final_lr (as the authors' code per parameter group), and so has each parameter inside the
# wrapper (its factor scales the initial rate too).
MULTIPLIED = {
    'LARS': lambda k: kol.LARS(lr=5. * k),
    'Adafactor': lambda k: kol.Adafactor(lr=0.01 * k, beta_1=0.9),
    'AdaBound': lambda k: kol.AdaBound(lr=0.01 * k, final_lr=0.05, gamma=0.1),
}


@pytest.mark.parametrize('name', sorted(MULTIPLIED))
def test_multipliers_give_each_parameter_the_step_of_the_rule_at_lr_times_factor(name):
    import test_multipliers as TM
    steps = 12
    expected, _ = TM.per_group_trajectory(MULTIPLIED[name], steps=steps)
    ours, _ = TM.trajectory(lambda: kol.LearningRateMultipliers(MULTIPLIED[name](1.),
                                                                TM.MULTIPLIERS), steps=steps)
    assert np.abs(expected[-1] - problems.flat(problems.initial_weights())).max() > 1e-3
    assert TM.relative_difference(ours, expected) <= 1e-6


def test_adabound_resumes_exactly_after_its_rate_was_changed(tmp_path):
    """ReduceLROnPlateau, LearningRateScheduler or K.set_value change `lr` during training; the
    bounds are final_lr * lr / (initial rate), so the initial rate is state: the model saved
    after the change must continue as the one in memory."""
    K.clear_session()
    model = problems.compiled(kol.AdaBound(lr=0.01, final_lr=0.05, gamma=0.1))
    batch_of = resume.batches()
    resume.train(model, 0, 5, batch_of)
    K.set_value(model.optimizer.lr, 0.005)
    path = str(tmp_path / 'model.h5')
    model.save(path)
    here = resume.train(model, 5, 5, batch_of)
    K.clear_session()
    there = resume.train(keras.models.load_model(path), 5, 5, batch_of)
    np.testing.assert_array_equal(there.weights, here.weights)


# ---- Ranger: Lookahead(RAdam(), sync_period=6, slow_step=0.5) ------------------------------------

def lookahead_in_numpy(sync_period, slow_step):
    """`after_step` of numpy_trajectory: Lookahead's sync (every `sync_period` steps the slow
    weights move `slow_step` of the way to the fast ones, and the fast ones start from there)."""
    slow = [w.astype(np.float64) for w in problems.initial_weights()]

    def after_step(i, weights):
        if (i + 1) % sync_period == 0:
            for w, s in zip(weights, slow):
                s += slow_step * (w - s)
                w[...] = s
    return after_step


@pytest.mark.parametrize('options', [{}, {'lr': 0.01}], ids=['defaults', 'lr=0.01'])
def test_ranger_recipe_follows_radam_and_lookahead_in_numpy(options):
    """24 steps: four syncs, the first one at step 6, where RAdam's rectified step begins."""
    steps = 24
    ranger = trajectory(lambda: kol.Lookahead(kol.RAdam(**options), sync_period=6,
                                              slow_step=0.5), steps)
    expected = numpy_trajectory(RR.RAdam(**options), steps,
                                after_step=lookahead_in_numpy(6, 0.5))
    np.testing.assert_allclose(ranger, expected, rtol=1e-5, atol=1e-6)
    radam_alone = numpy_trajectory(RR.RAdam(**options), steps)
    assert np.abs(ranger[-1] - radam_alone[-1]).max() > 1e-4  # the syncs change the trajectory
    np.testing.assert_allclose(ranger[:5], radam_alone[:5], rtol=1e-5, atol=1e-6)


# ---- RAdam: both sides of the threshold --------------------------------------------------------

def rho(beta_2, t):
    rho_inf = 2. / (1. - beta_2) - 1.
    return rho_inf, rho_inf - 2. * t * beta_2 ** t / (1. - beta_2 ** t)


# beta_2 -> (the first step where rho_t >= 5, None: never; the relative tolerance of the
# rectified step). With beta_2 = 0.999, rho_t = 1999 - 2 t b2^t/(1-b2^t) cancels to about 6 near
# the threshold: in float32 (as TF Addons computes it too) its error of about 1e-4 makes r_t off
# by up to 2e-3 relative there (measured 1.8e-3 at t = 6; a step of lr * 0.026, so 5e-6 of lr).
THRESHOLDS = {0.999: (6, 3e-3), 0.8: (7, 1e-5), 0.7: (10, 1e-5), 0.5: (None, None)}


@pytest.mark.parametrize('beta_2', sorted(THRESHOLDS, reverse=True))
def test_radam_switches_to_the_rectified_step_where_rho_t_reaches_5(beta_2):
    """A constant gradient g = 3 on one weight: m_t = (1-b1^t) g and v_t = (1-b2^t) g^2, so the
    momentum step lr/(1-b1^t) m_t is lr g = 0.3 exactly, and the rectified step
    lr r_t sqrt(1-b2^t)/(1-b1^t) m_t/(sqrt(v_t)+eps) is lr r_t (to eps): each step shows its
    side of the threshold (with beta_2 = 0.5, rho_inf = 3: never rectified)."""
    lr, g, steps = 0.1, 3., 12
    first_rectified, tolerance = THRESHOLDS[beta_2]
    K.clear_session()
    weight = K.variable(np.zeros(1, 'float32'))
    update = kol.RAdam(lr=lr, beta_2=beta_2).apply_gradients(
        [(tf.constant([g], 'float32'), weight)])
    session = K.get_session()
    taken = []
    for _ in range(steps):
        before = K.get_value(weight)[0]
        session.run(update)
        taken.append(float(before - K.get_value(weight)[0]))
    sides = []
    for t, step in enumerate(taken, 1):
        rho_inf, rho_t = rho(beta_2, t)
        if rho_t < 5.:
            assert step == pytest.approx(lr * g, rel=1e-6), t
            sides.append('momentum')
        else:
            r_t = math.sqrt((rho_t - 4.) * (rho_t - 2.) * rho_inf /
                            ((rho_inf - 4.) * (rho_inf - 2.) * rho_t))
            assert step == pytest.approx(lr * r_t, rel=tolerance), t
            sides.append('rectified')
    switch = first_rectified or steps + 1
    assert sides == ['momentum'] * (switch - 1) + ['rectified'] * (steps - switch + 1)
    if first_rectified:
        assert taken[switch - 1] < 0.5 * taken[switch - 2]  # a visible drop


# ---- LAMB: zero norms and exclusions -----------------------------------------------------------

@pytest.mark.parametrize('options', [{}, {'weight_decay_rate': 0.1},
                                     {'weight_decay_rate': 0.1,
                                      'exclude_from_weight_decay': ['bias']}],
                         ids=['no-decay', 'decay', 'decay-biases-excluded'])
def test_lamb_with_zero_norm_parameters_follows_the_reference(options):
    """The output layer starts at zero: ||p|| = 0 there on the first step, and the first layer's
    gradient is zero then (||r|| = 0 without decay): the trust ratio is 1 in both cases."""
    start = problems.initial_weights()
    start[2][...] = 0.
    start[3][...] = 0.
    ours = trajectory(lambda: kol.LAMB(lr=0.01, **options), weights=start)
    expected = numpy_trajectory(RR.LAMB(lr=0.01, **options), weights=start, names=NAMES)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert np.all(ours[0][:problems.D * problems.H] == start[0].ravel()) == (not options), \
        'without decay the first layer does not move on the first step (r = 0)'
    assert np.abs(ours[-1] - problems.flat(start)).max() > 1e-2


@pytest.mark.parametrize('argument', ['exclude_from_weight_decay',
                                      'exclude_from_layer_adaptation'])
def test_lamb_exclusion_that_matches_nothing_is_an_error_naming_it(argument):
    K.clear_session()
    optimizer = kol.LAMB(weight_decay_rate=0.01, **{argument: ['bias', 'LayerNorm']})
    model = problems.mlp()
    model.compile(optimizer, 'mse')
    with pytest.raises(ValueError, match="%s: the pattern 'LayerNorm' matches no parameter"
                       % argument):
        model.train_on_batch(*problems.batches(*problems.data())(0))
    np.testing.assert_array_equal(problems.flat(model.get_weights()),
                                  problems.flat(problems.initial_weights()))
