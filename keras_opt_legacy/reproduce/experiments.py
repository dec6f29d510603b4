"""The experiments: each checks one claim of the classic posts with a measurement.

Every experiment takes the implementation it checks as a parameter (so a test can hand it a
broken one and see the verdict flip) and returns a `Result`: the claim, the measured figures,
and a verdict computed from them.
"""
import collections
import contextlib
import os
import sys
import tempfile

import h5py
import numpy as np
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import compat
from keras_opt_legacy.reproduce import data as D
from keras_opt_legacy.reproduce import posts

class Result(collections.namedtuple('Result', 'name claim measured verdict summary plots')):
    """An experiment's outcome; `verdict` is True (reproduced), False (not) or None (failed)."""

    def __new__(cls, name, claim, measured, verdict, summary, plots):
        verdict = None if verdict is None else bool(verdict)  # not a NumPy bool
        return super(Result, cls).__new__(cls, name, claim, measured, verdict, summary, plots)


def train(model, data, steps, size, start=0, every_step=None):
    """Train on `steps` batches in order; return the loss of each."""
    losses = []
    for i in range(start, start + steps):
        losses.append(float(model.train_on_batch(*D.batch(data, i, size))))
        if every_step:
            every_step(i)
    return losses


def full_loss(model, data):
    return float(model.evaluate(data.x, data.y, batch_size=512, verbose=0))


def weights(model):
    return D.flat(model.get_weights())


def handwritten_sgd(data, out, quick, handwritten=posts.HandwrittenSGD):
    """1. A hand-written SGD in the get_updates style trains exactly like Keras's SGD.

    Both race in TF1 (an update may overwrite a weight before the backward pass reads it), so
    as they are, even Keras's SGD differs from itself between runs; with only that race removed
    (`posts.race_free`) the arithmetic can be compared exactly."""
    steps = 100 if quick else 400

    def trajectory(optimizer_class):
        K.clear_session()
        model = D.model(data, optimizer_class(lr=0.1))
        points = []
        losses = train(model, data, steps, 32, every_step=lambda i: points.append(weights(model)))
        return losses, np.array(points)

    race_free_losses, race_free_hand = trajectory(posts.race_free(handwritten))
    race_free_keras = trajectory(posts.race_free(keras.optimizers.SGD))[1]
    hand, keras_sgd, keras_again = [trajectory(c)[1] for c in (
        handwritten, keras.optimizers.SGD, keras.optimizers.SGD)]
    difference = lambda a, b: np.abs(a - b).max(axis=1)
    exact = difference(race_free_hand, race_free_keras)
    plots = [out.plot('handwritten_sgd', 'Hand-written SGD vs keras.optimizers.SGD', 'batch', {
        'hand-written vs Keras, race removed': np.maximum(exact, 1e-12),
        'hand-written vs Keras, as they are': np.maximum(difference(hand, keras_sgd), 1e-12),
        'Keras vs Keras (a second run)': np.maximum(difference(keras_sgd, keras_again), 1e-12)},
        ylabel='max |weight difference| (1e-12 = equal)', log=True)]
    measured = {'steps': steps, 'max_difference_race_removed': float(exact.max()),
                'max_difference_as_they_are': float(difference(hand, keras_sgd).max()),
                'keras_sgd_vs_itself': float(difference(keras_sgd, keras_again).max()),
                'loss': [race_free_losses[0], race_free_losses[-1]]}
    return Result('handwritten_sgd', 'A hand-written get_updates SGD trains exactly like '
                  "Keras's SGD", measured, exact.max() == 0 and race_free_losses[-1] <
                  race_free_losses[0],
                  'equal to the bit with the TF1 weight-read race removed (as they are: %.1e '
                  'apart, Keras vs itself %.1e)' % (measured['max_difference_as_they_are'],
                                                    measured['keras_sgd_vs_itself']), plots)


def get_updates_once(data, out, quick, adagrad=keras.optimizers.Adagrad):
    """2. get_updates runs once per model; slots are variables persisting across batches;
    `optimizer.weights` is what model.save stores."""
    calls = []

    class Counting(adagrad):
        def get_updates(self, loss, params):
            calls.append(1)
            return super(Counting, self).get_updates(loss, params)

    K.clear_session()
    optimizer = Counting(lr=0.05)
    model = D.model(data, optimizer)
    model.fit(data.x, data.y, batch_size=64, epochs=2 if quick else 4, verbose=0)
    accumulators = []
    for i in range(3):
        model.train_on_batch(*D.batch(data, i, 64))
        accumulators.append(D.flat(K.batch_get_value(optimizer.weights)))
    growing = bool(np.all(accumulators[1] >= accumulators[0]) and
                   np.all(accumulators[2] >= accumulators[1]) and
                   np.any(accumulators[2] > accumulators[1]) and np.all(accumulators[0] >= 0))

    def momentum_effect():  # with slots reset to zero each step, momentum would change nothing
        trajectories = []
        for momentum in (0., 0.9):
            K.clear_session()
            net = D.model(data, keras.optimizers.SGD(lr=0.05, momentum=momentum))
            train(net, data, 5, 64)
            trajectories.append(weights(net))
        return float(np.abs(trajectories[0] - trajectories[1]).max())
    momentum_difference = momentum_effect()

    K.clear_session()
    optimizer = keras.optimizers.Adam()
    model = D.model(data, optimizer)
    train(model, data, 3, 64)
    with tempfile.TemporaryDirectory() as scratch:  # a scratch file, not a result
        path = os.path.join(scratch, 'model.h5')
        model.save(path)
        with h5py.File(path, 'r') as f:
            group = f['optimizer_weights']
            saved = [np.array(group[n]) for n in group.attrs['weight_names']]
    in_memory = K.batch_get_value(optimizer.weights)
    saves_weights = len(saved) == len(in_memory) and all(
        np.array_equal(a, b) for a, b in zip(saved, in_memory))
    measured = {'get_updates_calls': len(calls), 'adagrad_accumulators_grow': growing,
                'momentum_changes_trajectory_by': momentum_difference,
                'model_save_stores_optimizer_weights': saves_weights,
                'saved_arrays': len(saved)}
    verdict = len(calls) == 1 and growing and momentum_difference > 1e-4 and saves_weights
    return Result('get_updates_once', 'get_updates runs once per model, slots persist, '
                  'optimizer.weights is what model.save stores', measured, verdict,
                  '%d call(s); accumulators grow: %s; save stores weights: %s'
                  % (len(calls), growing, saves_weights), [])


def soft_batch(data, out, quick, naive=posts.NaiveSoftBatchSGD, fixed=posts.FixedSoftBatchSGD,
               accumulation=kol.GradientAccumulation):
    """3. The blog's soft batch moves the weights on every batch; the fix and
    GradientAccumulation at 16 x 4 equal batch 64."""
    updates = 10 if quick else 40
    K.clear_session()  # the large batch, without the weight-read race (see handwritten_sgd)
    large = D.model(data, posts.race_free(keras.optimizers.SGD)(lr=0.5))
    reference = []
    train(large, data, updates, 64, every_step=lambda i: reference.append(weights(large)))
    K.clear_session()
    large_adam = D.model(data, kol.Adam(0.01))
    train(large_adam, data, updates, 64)
    large_adam = weights(large_adam)

    def small_batches(make_optimizer):
        K.clear_session()
        model = D.model(data, make_optimizer())
        moved, distances, before = 0, [], weights(model)
        for i in range(4 * updates):  # the quarters of the large batches, in order
            x, y = D.batch(data, i // 4, 64)
            model.train_on_batch(x[i % 4 * 16:][:16], y[i % 4 * 16:][:16])
            now = weights(model)
            moved += not np.array_equal(now, before)
            before = now
            if i % 4 == 3:
                distances.append(float(np.abs(now - reference[i // 4]).max()))
        return moved / (4. * updates), distances, now

    runs = {'naive (blog)': small_batches(lambda: naive(lr=0.5, steps=4)),
            'fixed (blog + fixes)': small_batches(lambda: posts.race_free(fixed)(lr=0.5, steps=4)),
            'GradientAccumulation(SGD)': small_batches(
                lambda: accumulation(keras.optimizers.SGD(0.5), 4))}
    adam = small_batches(lambda: accumulation(kol.Adam(0.01), 4))[2]
    measured = {name: {'fraction_of_batches_moving_weights': fraction,
                       'max_difference_to_batch_64': max(distances)}
                for name, (fraction, distances, _) in runs.items()}
    measured['GradientAccumulation(Adam)'] = {
        'max_difference_to_batch_64': float(np.abs(adam - large_adam).max())}
    naive_moves_every_batch = measured['naive (blog)']['fraction_of_batches_moving_weights'] > 0.9
    equal = [m['max_difference_to_batch_64'] <= 1e-5 for name, m in measured.items()
             if name != 'naive (blog)']
    plots = [out.plot('soft_batch', 'Soft batch 16 x 4 vs batch 64', 'real update', {
        name: np.maximum(distances, 1e-12) for name, (_, distances, _) in runs.items()},
        ylabel='max |w - w(batch 64)|', log=True)]
    return Result('soft_batch', "The blog's soft batch moves weights every batch; the fix and "
                  'GradientAccumulation at 16x4 equal batch 64', measured,
                  naive_moves_every_batch and all(equal),
                  'naive moves on %.0f%% of batches; fixed/accumulation differ from batch 64 by '
                  '<= %.1e' % (100 * measured['naive (blog)']['fraction_of_batches_moving_weights'],
                               max(m['max_difference_to_batch_64'] for name, m in measured.items()
                                   if name != 'naive (blog)')), plots)


def runge_kutta(data, out, quick, heun=None):
    """4. Heun via inject(model) trains, but at the same number of gradient evaluations it is
    not better than SGD; RK4 and the adaptive methods added."""
    evaluations = 120 if quick else 600
    lr = 0.5
    methods = [('SGD', lambda: kol.SGD(lr)), ('Heun', heun or (lambda: kol.Heun(lr))),
               ('RK4', lambda: kol.RK4(lr)), ('RK23', lambda: kol.RK23(lr)),
               ('RK45', lambda: kol.RK45(lr))]
    curves, final = {}, {}
    for name, make in methods:
        K.clear_session()
        optimizer = make()
        model = D.model(data, optimizer)
        if getattr(optimizer, 'needs_inject', False):
            optimizer.inject(model)
        per_step = getattr(optimizer, 'evaluations_per_step', 1)  # gradient evaluations
        losses = []
        for i in range(evaluations // per_step):
            model.train_on_batch(*D.batch(data, i, 64))
            if i % max(1, 10 // per_step) == 0:
                losses.append(((i + 1) * per_step, full_loss(model, data)))
        curves[name] = losses
        final[name] = full_loss(model, data)
    start = full_loss(D.model(data, keras.optimizers.SGD()), data)
    heun_trains = final['Heun'] < 0.9 * start
    heun_not_better = final['Heun'] >= final['SGD']
    plots = [out.plot('runge_kutta', 'Loss at equal gradient evaluations', 'gradient evaluations',
                  {name: curve for name, curve in curves.items()}, ylabel='loss (all data)',
                  xy=True)]
    measured = {'gradient_evaluations': evaluations, 'initial_loss': start, 'final_loss': final}
    return Result('runge_kutta', 'Heun via inject(model) trains, and at equal gradient '
                  'evaluations is not better than SGD', measured, heun_trains and heun_not_better,
                  'final loss after %d evaluations: %s' % (evaluations, ', '.join(
                      '%s %.3f' % kv for kv in final.items())), plots)


def reset(data, out, quick, reset_optimizer=kol.reset_optimizer):
    """5. Recompiling with a new optimizer, set_weights to the initial state, and re-running the
    state's initializers all give a fresh optimizer's trajectory."""
    steps = 20 if quick else 60

    def trained(optimizer, initial=None, start=0):
        model = D.model(data, optimizer, initial)
        train(model, data, steps, 32, start=start)
        return model

    K.clear_session()
    at_reset = trained(kol.Adam(0.01)).get_weights()
    fresh = weights(trained(kol.Adam(0.01), at_reset, start=steps))

    def recompile():
        model = trained(kol.Adam(0.01))
        model.compile(kol.Adam(0.01), 'categorical_crossentropy')
        return model

    def set_initial_state():
        optimizer = kol.Adam(0.01)
        model = D.model(data, optimizer, at_reset)
        compat.make_train_function(model)  # builds the state, as the first fit would
        initial = optimizer.get_weights()
        train(model, data, 5, 32, start=500)
        model.set_weights(at_reset)
        optimizer.set_weights(initial)
        return model

    def initializers():
        model = trained(kol.Adam(0.01))
        reset_optimizer(model.optimizer)
        return model

    differences = {}
    for name, route in [('recompile with a new optimizer', recompile),
                        ('set_weights to initial values', set_initial_state),
                        ('variables_initializer (reset_optimizer)', initializers)]:
        K.clear_session()
        model = route()
        train(model, data, steps, 32, start=steps)
        differences[name] = float(np.abs(weights(model) - fresh).max())

    K.clear_session()  # the route users are told first, with a Keras optimizer: what it costs
    keras_optimizer = keras.optimizers.Adam()
    model = D.model(data, keras_optimizer)
    train(model, data, 3, 32)
    variables = len(tf.global_variables())
    model.compile(keras_optimizer, 'categorical_crossentropy')
    train(model, data, 1, 32)
    measured = {'max_difference_to_fresh_optimizer': differences,
                'same_keras_optimizer_recompiled': {
                    'iterations_kept': int(K.get_value(keras_optimizer.iterations)),
                    'orphaned_variables': len(tf.global_variables()) - variables}}
    return Result('reset', 'Recompiling with a new optimizer, set_weights to initial values and '
                  'the variables_initializer route all give a fresh trajectory', measured,
                  all(d == 0 for d in differences.values()),
                  'max difference to a fresh optimizer: %s' % ', '.join(
                      '%.1e' % d for d in differences.values()), [])


def weights_round_trip(data, out, quick, adam=kol.Adam):
    """6. get_weights/set_weights round-trip the whole optimizer state, iteration count
    included."""
    steps = 10 if quick else 40
    K.clear_session()
    optimizer = adam(0.01)
    model = D.model(data, optimizer)
    train(model, data, steps, 32)
    state, params = optimizer.get_weights(), model.get_weights()
    expected = train(model, data, steps, 32, start=steps)

    K.clear_session()
    copy = adam(0.01)
    other = D.model(data, copy, params)
    compat.make_train_function(other)
    copy.set_weights(state)
    continued = train(other, data, steps, 32, start=steps)
    state[0] = np.int64(1000)
    copy.set_weights(state)
    iterations = int(K.get_value(copy.iterations))
    measured = {'continued_loss_equal': continued == expected,
                'iterations_after_setting_1000': iterations}
    return Result('weights_round_trip', 'get_weights/set_weights round-trip the optimizer '
                  'state, including the iteration count', measured,
                  continued == expected and iterations == 1000,
                  'continued identically: %s; iterations set to %d' % (continued == expected,
                                                                       iterations), [])


def schedules(data, out, quick, ours=kol.schedules):
    """7. The four documented schedules, in the graph, equal TF's own."""
    steps = np.arange(0, 301 if quick else 1001)
    pairs = {
        'ExponentialDecay': lambda m: m.ExponentialDecay(0.1, 60, 0.6, staircase=True),
        'PiecewiseConstantDecay': lambda m: m.PiecewiseConstantDecay([100, 200], [0.08, 0.05,
                                                                                 0.03]),
        'PolynomialDecay': lambda m: m.PolynomialDecay(0.1, 150, 0.01, power=2., cycle=True),
        'InverseTimeDecay': lambda m: m.InverseTimeDecay(0.1, 20, 0.5)}
    K.clear_session()
    step = tf.placeholder(tf.int64, [])
    session = K.get_session()
    curves, errors = {}, {}
    for name, make in pairs.items():
        rates = [make(ours)(step), make(tf.keras.optimizers.schedules)(step)]
        values = np.array([session.run(rates, {step: s}) for s in steps])
        errors[name] = float(np.max(np.abs(values[:, 0] - values[:, 1]) / values[:, 1]))
        curves[name + ' (ours)'] = np.stack([steps, values[:, 0]], axis=1)
        curves[name + ' (TF)'] = np.stack([steps, values[:, 1]], axis=1)
    plots = [out.plot('schedules', 'Schedules: keras_opt_legacy vs TensorFlow 1.15', 'step', curves,
                      ylabel='learning rate', xy=True, dashed_every_second=True)]
    return Result('schedules', 'The four documented schedules equal TensorFlow\'s own',
                  {'max_relative_difference': errors}, max(errors.values()) <= 1e-6,
                  'max relative difference %.1e over %d steps' % (max(errors.values()),
                                                                  len(steps)), plots)


# ---- weight decay: bert4keras's recipe --------------------------------------------------------

# Keras's own functions that importing bert4keras replaces or adds (bert4keras.backend assigns
# them on keras.backend); and the module alias it installs.
_BERT4KERAS_PATCHES = ('symbolic', 'logsumexp', 'reshape', 'flatten', 'where')
_MISSING = object()
_BERT4KERAS_K = {}


@contextlib.contextmanager
def bert4keras_optimizers():
    """(bert4keras.optimizers, None), or (None, why) if it cannot be imported; Keras is left as
    it was found afterwards: bert4keras patches keras.backend when imported (its own `K.where`
    etc., which its piecewise linear rate needs while the graph is built) and registers every
    class its `extend_with_*` make in Keras's custom objects."""
    saved = {name: getattr(K, name, _MISSING) for name in _BERT4KERAS_PATCHES}
    saved_module = sys.modules.get('tensorflow.keras.backend', _MISSING)
    saved_objects = dict(keras.utils.get_custom_objects())
    try:
        try:
            import bert4keras.backend
            import bert4keras.optimizers
        except Exception as error:  # noqa: BLE001 -- not installed, or not importable here
            yield None, '%s: %s' % (type(error).__name__, error)
            return
        if not _BERT4KERAS_K:  # what importing it made of keras.backend, the first time seen
            _BERT4KERAS_K.update((name, getattr(K, name)) for name in _BERT4KERAS_PATCHES)
        for name, value in _BERT4KERAS_K.items():  # also after a previous call restored Keras
            setattr(K, name, value)
        yield bert4keras.optimizers, None
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                if hasattr(K, name):
                    delattr(K, name)
            else:
                setattr(K, name, value)
        if saved_module is _MISSING:
            sys.modules.pop('tensorflow.keras.backend', None)
        else:
            sys.modules['tensorflow.keras.backend'] = saved_module
        objects = keras.utils.get_custom_objects()
        objects.clear()
        objects.update(saved_objects)


def bert4keras_piecewise_linear(t, schedule):
    """bert4keras 0.11.5's `piecewise_linear(t, schedule)` (from_zero=True) in NumPy: the points
    of `schedule` ({step: multiplier}) sorted, (0, 0) put first if no point is at step 0; linear
    between the points, the last multiplier after the last point."""
    points = sorted(schedule.items())
    if points[0][0] != 0:
        points = [(0, 0.)] + points
    steps, values = zip(*points)
    return float(np.interp(t, steps, values))


def digits_model_gradients(weights, x, y):
    """The gradient of `data.model`'s loss (Dense tanh -> softmax, mean categorical
    cross-entropy) in NumPy, by hand (Keras's clipping of the probabilities to [1e-7, 1 - 1e-7]
    left out)."""
    w1, b1, w2, b2 = weights
    hidden = np.tanh(x.dot(w1) + b1)
    logits = hidden.dot(w2) + b2
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d_logits = (p - y) / len(x)
    d_hidden = d_logits.dot(w2.T) * (1. - hidden ** 2)
    return [x.T.dot(d_hidden), d_hidden.sum(axis=0), hidden.T.dot(d_logits), d_logits.sum(axis=0)]


class NumpyAdam(object):
    """Keras's Adam formula in float64 with the decay term of bert4keras's recipe kept apart:
    `step(weights, grads, f, t)` -> (Adam's step, -f * rate * p_old) per parameter, at the rate
    f, t the 1-based step count."""

    def __init__(self, rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.rate, self.beta_1, self.beta_2, self.epsilon = rate, beta_1, beta_2, epsilon
        self.m = self.v = None

    def step(self, weights, grads, f, t):
        if self.m is None:
            self.m = [np.zeros_like(w) for w in weights]
            self.v = [np.zeros_like(w) for w in weights]
        lr_t = f * np.sqrt(1. - self.beta_2 ** t) / (1. - self.beta_1 ** t)
        steps, decays = [], []
        for k, (w, g) in enumerate(zip(weights, grads)):
            self.m[k] = self.beta_1 * self.m[k] + (1. - self.beta_1) * g
            self.v[k] = self.beta_2 * self.v[k] + (1. - self.beta_2) * g * g
            steps.append(-lr_t * self.m[k] / (np.sqrt(self.v[k]) + self.epsilon))
            decays.append(-f * self.rate * w)
        return steps, decays


def recipe_in_numpy(data, steps, size, lr, rate, schedule, decayed):
    """The trajectory (flat weights after each step) of bert4keras's recipe, computed in float64:
    Keras's Adam formula at the rate f = lr * piecewise_linear(iterations, schedule), iterations
    counting the updates before this one, and the decay p -= f * rate * p_old of the parameters
    flagged in `decayed`. Gradients by `digits_model_gradients`."""
    weights = [w.astype(np.float64) for w in D.initial_weights(data)]
    adam = NumpyAdam(rate)
    points = []
    for i in range(steps):
        x, y = (a.astype(np.float64) for a in D.batch(data, i, size))
        adam_steps, decays = adam.step(weights, digits_model_gradients(weights, x, y),
                                       lr * bert4keras_piecewise_linear(i, schedule), i + 1)
        weights = [w + a + (d if decay else 0.) for w, a, d, decay in zip(
            weights, adam_steps, decays, decayed)]
        points.append(D.flat(weights))
    return np.array(points)


def decay_found(data, points, size, lr, rate, schedule, groups):
    """How much of the decay term each group of parameters took, in a trajectory `points` (flat
    weights after each step) of Adam at bert4keras's piecewise-linear rate: each step taken minus
    Adam's step from the same weights (NumPy, gradients and moments from the trajectory's own
    weights), projected on the decay term -f * rate * p_old, by least squares over all steps.
    1: decayed at `rate`, 0: not decayed. `groups`: a group name per parameter."""
    shapes = [w.shape for w in D.initial_weights(data)]
    bounds = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])
    unflat = lambda flat: [flat[bounds[k]:bounds[k + 1]].reshape(shape).astype(np.float64)
                           for k, shape in enumerate(shapes)]
    adam = NumpyAdam(rate)
    found, size_of = collections.defaultdict(float), collections.defaultdict(float)
    before = [w.astype(np.float64) for w in D.initial_weights(data)]
    for i in range(len(points)):
        x, y = (a.astype(np.float64) for a in D.batch(data, i, size))
        after = unflat(points[i])
        adam_steps, decays = adam.step(before, digits_model_gradients(before, x, y),
                                       lr * bert4keras_piecewise_linear(i, schedule), i + 1)
        for group, b, a, step, decay in zip(groups, before, after, adam_steps, decays):
            found[group] += float(np.sum((a - b - step) * decay))
            size_of[group] += float(np.sum(decay * decay))
        before = after
    return {group: found[group] / size_of[group] for group in found}


def weight_decay(data, out, quick, wrapper=kol.WeightDecay, adam=kol.Adam,
                 piecewise_linear=kol.schedules.PiecewiseLinear):
    """8. bert4keras's weight decay + piecewise-linear rate recipe (0.11.5's
    extend_with_weight_decay + extend_with_piecewise_linear_lr on Adam, weight_decay_rate=0.01,
    exclude_from_weight_decay=['Norm', 'bias'], lr_schedule={1000: 1, 2000: 0.1} scaled to the
    run) is WeightDecay(Adam(lr=PiecewiseLinear([0, s1, s2], [0, lr, 0.1 * lr])), 0.01,
    exclude=['bias']): it follows the recipe computed in NumPy, and bert4keras's own optimizer
    (over our Adam, and over Keras's with its two races removed; as it is, Keras's Adam reads
    `iterations` unordered against its increment, so bert4keras's rate multiplier and Adam's bias
    correction are sometimes a step late and the run differs from itself).

    With exclude=['bias'] the biases are not decayed: the decay each parameter group took is
    measured from the trajectories (the steps minus Adam's own, projected on the decay term),
    next to the kernel and bias norms of three runs (no decay, exclude=['bias'], everything
    decayed) at 10x the recipe's rate, where the effect shows on a plot."""
    steps, size, lr, rate = (60 if quick else 300), 64, 0.01, 0.01
    s1, s2 = steps // 3, 2 * steps // 3
    schedule = {s1: 1., s2: 0.1}  # bert4keras's lr_schedule={1000: 1, 2000: 0.1}, scaled down
    shapes = [w.shape for w in D.initial_weights(data)]
    kernels = [len(shape) == 2 for shape in shapes]

    def ours(decay, exclude):
        def make():
            inner = adam(lr=piecewise_linear([0, s1, s2], [0., lr, 0.1 * lr]))
            return inner if decay is None else wrapper(inner, decay, exclude=exclude)
        return make

    def trajectory(make, decayed=None):
        K.clear_session()
        model = D.model(data, make())
        points = []
        train(model, data, steps, size, every_step=lambda i: points.append(weights(model)))
        if decayed is not None:
            decayed.extend(getattr(model.optimizer, 'decayed_names', ['?']))
        return np.array(points)

    def relative(a, b):  # per step: max |a - b| over all weights / max |b|
        return np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)

    # (a) the recipe: ours, NumPy, bert4keras
    decayed = []
    recipe = trajectory(ours(rate, ['bias']), decayed)
    numpy_recipe = recipe_in_numpy(data, steps, size, lr, rate, schedule, kernels)
    numpy_all = recipe_in_numpy(data, steps, size, lr, rate, schedule, [True] * len(shapes))
    to_numpy = relative(recipe, numpy_recipe)
    curves = {'ours vs NumPy': to_numpy}
    measured = {'steps': steps, 'batch': size, 'lr': lr, 'weight_decay_rate': rate,
                'lr_schedule (bert4keras)': {str(k): v for k, v in schedule.items()},
                'ours': 'WeightDecay(Adam(lr=PiecewiseLinear([0, %d, %d], [0, %g, %g])), %g, '
                        "exclude=['bias'])" % (s1, s2, lr, 0.1 * lr, rate),
                'decayed by ours': decayed,
                'relative difference': 'per step, max |w - w_other| over all weights / '
                                       'max |w_other|; reported: its maximum over the steps',
                'max_relative_difference': {
                    'ours vs NumPy': float(to_numpy.max()),
                    'ours vs NumPy decaying the biases too': float(
                        relative(recipe, numpy_all).max())}}
    differences = measured['max_relative_difference']
    with bert4keras_optimizers() as (bert4keras, missing):
        if bert4keras is None:
            measured['bert4keras'] = 'not importable (make clients installs it): ' + missing
        else:
            def recipe_over(base):
                with_decay = bert4keras.extend_with_weight_decay(base, 'AdamW')
                optimizer_class = bert4keras.extend_with_piecewise_linear_lr(with_decay,
                                                                             'AdamWLR')
                return lambda: optimizer_class(lr=lr, weight_decay_rate=rate,
                                               exclude_from_weight_decay=['Norm', 'bias'],
                                               lr_schedule=schedule)
            over_ours = trajectory(recipe_over(adam))
            over_keras = trajectory(recipe_over(posts.race_free(bert4keras.Adam,
                                                                counter_last=True)))
            as_is = [trajectory(recipe_over(bert4keras.Adam)) for _ in range(2)]
            for name, points in [('bert4keras over our Adam', over_ours),
                                 ("bert4keras over Keras's Adam, races removed", over_keras)]:
                curves['ours vs ' + name] = relative(recipe, points)
                differences['ours vs ' + name] = float(curves['ours vs ' + name].max())
            name = "ours vs bert4keras over Keras's Adam as it is (racy)"
            curves[name] = relative(recipe, as_is[0])
            differences[name] = float(curves[name].max())
            differences["bert4keras over Keras's Adam as it is (racy), run vs run"] = float(
                relative(as_is[0], as_is[1]).max())
            measured['bert4keras'] = ('bert4keras %s; its Adam is keras.optimizers.Adam under '
                                      'standalone Keras' % getattr(
                                          sys.modules.get('bert4keras'), '__version__', '?'))
    compared = [d for name, d in differences.items() if name.startswith('ours vs') and
                'decaying the biases' not in name and 'as it is' not in name]
    recipe_followed = max(compared) <= 1e-5

    # (b) the norms: no decay, decay without the biases, decay of everything
    norm_rate = 0.1  # 10x the recipe's, so that the effect shows on the plot
    runs = collections.OrderedDict([
        ('no decay', trajectory(ours(None, ()))),
        ("exclude=['bias']", trajectory(ours(norm_rate, ['bias']))),
        ('decay everything', trajectory(ours(norm_rate, ())))])
    bounds = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])

    def norm(points, which):
        return np.sqrt(sum((points[:, bounds[k]:bounds[k + 1]] ** 2).sum(axis=1)
                           for k in range(len(shapes)) if kernels[k] == which))
    kernel_norms = {name: norm(points, True) for name, points in runs.items()}
    bias_norms = {name: norm(points, False) for name, points in runs.items()}
    final = {part: {name: float(n[-1]) for name, n in norms.items()}
             for part, norms in (('kernels', kernel_norms), ('biases', bias_norms))}
    groups = ['kernels' if kernel else 'biases' for kernel in kernels]
    found = {name: decay_found(data, points, size, lr, norm_rate, schedule, groups)
             for name, points in runs.items()}
    expected = {'no decay': {'kernels': 0., 'biases': 0.},
                "exclude=['bias']": {'kernels': 1., 'biases': 0.},
                'decay everything': {'kernels': 1., 'biases': 1.}}
    measured['norms'] = {'weight_decay_rate': norm_rate, 'final': final,
                         'decay found (1: decayed at the rate, 0: not decayed)': found}
    k, b = final['kernels'], final['biases']
    biases_apart = {name: b[name] / b['no decay'] - 1. for name in b}
    kernels_decayed = k["exclude=['bias']"] < k['no decay'] and k['decay everything'] < k[
        'no decay']
    decay_where_expected = all(abs(found[run][group] - expected[run][group]) <= 1e-3
                               for run in expected for group in expected[run])
    plots = [
        out.plot('weight_decay_recipe', "bert4keras's AdamW + piecewise-linear rate: ours vs "
                 'the others', 'step', {name: np.maximum(c, 1e-12) for name, c in curves.items()},
                 ylabel='max |w - w_other| / max |w_other| (1e-12 = equal)', log=True),
        out.panels('weight_decay_norms', [
            ('kernels', kernel_norms, 'L2 norm of the kernels'),
            ('biases', bias_norms, 'L2 norm of the biases')], 'step',
            title='Weight norms, Adam + piecewise-linear rate, decay %g' % norm_rate)]
    bert4keras_part = (', vs bert4keras %.1e (over our Adam; over Keras\'s Adam, races removed: '
                       '%.1e; as it is, it differs from itself by %.1e)' % (
                           differences['ours vs bert4keras over our Adam'],
                           differences["ours vs bert4keras over Keras's Adam, races removed"],
                           differences["bert4keras over Keras's Adam as it is (racy), run vs "
                                       'run'])
                       if 'ours vs bert4keras over our Adam' in differences else
                       ' (bert4keras not importable: not compared)')
    summary = ('recipe vs NumPy %.1e max rel. difference%s; decay %g: kernel norm %.3g -> '
               "%.3g, bias norm %+.1f%% (exclude=['bias']) / %+.1f%% (all decayed), decay found "
               "in the biases %.3f / %.3f" % (
                   differences['ours vs NumPy'], bert4keras_part, norm_rate, k['no decay'],
                   k["exclude=['bias']"], 100 * biases_apart["exclude=['bias']"],
                   100 * biases_apart['decay everything'],
                   round(found["exclude=['bias']"]['biases'], 3) + 0.,
                   round(found['decay everything']['biases'], 3) + 0.))
    return Result('weight_decay', "bert4keras's weight decay + piecewise-linear rate recipe equals "
                  "WeightDecay(Adam(lr=PiecewiseLinear)), exclude=['bias'] (NumPy, bert4keras); "
                  'the excluded biases are not decayed', measured,
                  recipe_followed and kernels_decayed and decay_where_expected, summary,
                  plots)


# ---- weight averaging: EMA (bert4keras's post) and SWA (Izmailov et al. 2018) ----------------

def weight_averaging(data, out, quick, ema=kol.ExponentialMovingAverage,
                     swa=kol.StochasticWeightAveraging):
    """9. With a noisy learning rate (SGD at a high constant rate, batch 8), the weights'
    exponential moving average (bert4keras's EMA post: decay 0.999, starting from the initial
    weights) and their stochastic weight average (the SWA paper: a constant rate, one model per
    epoch from half-way) reach a lower validation loss than the raw weights.

    Each run trains SGD wrapped in both, `ema(swa(SGD(lr), start, period), decay)`, so the three
    weights share one trajectory; every epoch (160 batches) the validation loss is measured on
    the raw weights and, through `swap_weights`, on each average (the MLP has no BatchNorm: SWA
    needs no `update_batch_norm` pass). A single run's final raw loss is one draw of a noisy
    process, so several runs (seeds: initial weights and batch order) are compared, on their
    final validation loss. The same at half the rate, for contrast; the verdict is on the
    noisy rate, and also needs the averages of the first run to equal NumPy's (to float32
    rounding), recomputed from the raw weights recorded after every step."""
    size, every, decay = 8, 160, 0.999
    epochs, seeds, contrast_seeds = (6, 3, 1) if quick else (10, 5, 2)
    start = every * (epochs // 2)  # SWA: the models at the ends of the epochs of the second half
    order = np.random.RandomState(0).permutation(len(data.x))
    cut = len(data.x) * 3 // 4
    validation = order[cut:][:1000]
    x_val, y_val = data.x[validation], data.y[validation]
    names = ('raw', 'EMA', 'SWA')

    def run(lr, seed, record=False):
        K.clear_session()
        rows = order[:cut][np.random.RandomState(seed).permutation(cut)]
        training = D.Data(data.name, data.x[rows], data.y[rows])
        swa_optimizer = swa(kol.SGD(lr), start=start, period=every)
        optimizer = ema(swa_optimizer, decay=decay)
        model = D.model(training, weights=D.initial_weights(training, seed=seed))
        model.compile(optimizer, 'categorical_crossentropy')
        evaluate = lambda: model.evaluate(x_val, y_val, batch_size=512, verbose=0)  # noqa: E731
        points = [weights(model).astype(np.float64)]
        curves = collections.OrderedDict((name, []) for name in names)
        for epoch in range(epochs):
            for i in range(epoch * every, (epoch + 1) * every):
                model.train_on_batch(*D.batch(training, i, size))
                if record:
                    points.append(weights(model).astype(np.float64))
            curves['raw'].append(evaluate())
            for name, average in (('EMA', optimizer), ('SWA', swa_optimizer)):
                with average.swap_weights(model):
                    curves[name].append(evaluate())
        to_numpy = None
        if record:  # max |ours - NumPy| / max |NumPy|
            ema_numpy = points[0]
            for p in points[1:]:
                ema_numpy = decay * ema_numpy + (1. - decay) * p
            swa_numpy = np.mean(points[start::every], axis=0)
            to_numpy = {name: float(np.abs(D.flat(a.average_values()) - b).max() /
                                    np.abs(b).max())
                        for name, a, b in (('EMA', optimizer, ema_numpy),
                                           ('SWA', swa_optimizer, swa_numpy))}
        return np.array([curves[name] for name in names]), to_numpy  # [name, epoch]

    noisy_lr, calm_lr = 1.0, 0.5
    measured = {'optimizer': 'ema(swa(SGD(lr), start=%d, period=%d), decay=%g), batch %d'
                             % (start, every, decay, size),
                'epochs (of %d batches)' % every: epochs,
                'training / validation samples': [cut, len(x_val)],
                'noisy rate': noisy_lr, 'contrast rate': calm_lr}
    curves, exact = {}, {}
    for lr, runs in ((noisy_lr, seeds), (calm_lr, contrast_seeds)):
        results = [run(lr, seed, record=(lr == noisy_lr and seed == 0)) for seed in range(runs)]
        if results[0][1] is not None:
            exact = results[0][1]
        losses = np.array([r[0] for r in results])  # [seed, name, epoch]
        curves[lr] = losses
        finals = losses[:, :, -1]
        measured['lr %g' % lr] = {
            'final validation loss, mean over seeds': {
                n: float(finals[:, k].mean()) for k, n in enumerate(names)},
            'final validation loss per seed': {n: finals[:, k] for k, n in enumerate(names)},
            'seeds where the average beats the raw weights': {
                n: int((finals[:, k] < finals[:, 0]).sum()) for k, n in enumerate(names) if k},
            'seeds': runs,
            'validation loss per epoch, first seed': {
                n: losses[0, k] for k, n in enumerate(names)}}
    measured['max |ours - NumPy| / max |NumPy| (first noisy run)'] = exact
    noisy = measured['lr %g' % noisy_lr]['final validation loss, mean over seeds']
    calm = measured['lr %g' % calm_lr]['final validation loss, mean over seeds']
    # float32: two roundings per step over the EMA's horizon of ~1/(1 - decay) steps
    averages_exact = max(exact.values()) <= 1e-4
    verdict = noisy['EMA'] < noisy['raw'] and noisy['SWA'] < noisy['raw'] and averages_exact
    steps = every * np.arange(1, epochs + 1)

    def panel(title, losses):
        return (title, collections.OrderedDict(
            (n, np.stack([steps, losses[k]], axis=1)) for k, n in enumerate(names)),
            'validation loss')
    plots = [out.panels('weight_averaging', [
        panel('lr %g (noisy), first seed' % noisy_lr, curves[noisy_lr][0]),
        panel('lr %g (noisy), mean of %d seeds' % (noisy_lr, seeds),
              curves[noisy_lr].mean(axis=0)),
        panel('lr %g (contrast), %s' % (calm_lr, 'mean of %d seeds' % contrast_seeds
                                         if contrast_seeds > 1 else 'first seed'),
              curves[calm_lr].mean(axis=0))], 'step (batch of %d)' % size, log=True, xy=True,
        title='Raw vs EMA (decay %g) vs SWA (from step %d, every %d) weights, SGD at a constant '
              'rate' % (decay, start, every))]

    def change(losses, name):
        return 100. * (losses[name] / losses['raw'] - 1.)
    wins = measured['lr %g' % noisy_lr]['seeds where the average beats the raw weights']
    summary = ('lr %g, final validation loss (mean of %d seeds): raw %.3f, EMA %.3f (%+.0f%%, '
               'better in %d/%d), SWA %.3f (%+.0f%%, %d/%d); lr %g (%d seed%s): raw %.3f, EMA '
               '%+.0f%%, SWA %+.0f%%; averages vs NumPy <= %.0e (relative)' % (
                   noisy_lr, seeds, noisy['raw'], noisy['EMA'], change(noisy, 'EMA'),
                   wins['EMA'], seeds, noisy['SWA'], change(noisy, 'SWA'), wins['SWA'], seeds,
                   calm_lr, contrast_seeds, 's' if contrast_seeds > 1 else '', calm['raw'],
                   change(calm, 'EMA'), change(calm, 'SWA'), max(exact.values())))
    return Result('weight_averaging', 'With a noisy learning rate, the EMA weights (bert4keras\'s '
                  'post) and the SWA weights (Izmailov et al. 2018) reach a lower validation loss '
                  'than the raw weights', measured, verdict, summary, plots)


# ---- the rules of issue 18 at their default rates ----------------------------------------------

def state_size(optimizer):
    """The numbers an optimizer keeps: the sizes of `optimizer.weights`, the step counter left
    out."""
    return sum(int(np.prod(K.int_shape(w))) for w in optimizer.weights
               if w is not optimizer.iterations)


def factored_size(shapes):
    """Adafactor's memory claim for parameters of `shapes`: n + m numbers for an n x m matrix (per
    leading index of a higher-rank one: its last two dimensions are factored), a vector's size
    for a vector."""
    return sum(int(np.prod(shape[:-2])) * (shape[-2] + shape[-1]) if len(shape) >= 2
               else int(np.prod(shape)) for shape in shapes)


NEW_RULES = ('RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound', 'Yogi', 'AdaBelief', 'Lion')


def new_rules(data, out, quick, adafactor=kol.Adafactor, only=None):
    """10. The rules of issue 18 (RAdam, LAMB, LARS, Adafactor, AdaBound, Yogi, AdaBelief, Lion),
    with Adam and SGD for scale, each built with its defaults (Adafactor: lr=None, its relative
    step), train the digits classifier; the state each keeps is measured. Adafactor's memory
    claim (Shazeer & Stern 2018): an n x m kernel keeps n + m second-moment numbers where Adam
    keeps 2nm, and it still trains.

    All runs start from the same weights and see the same batches (32, in order); the loss is
    measured on all the data every few steps. State: the sizes of `optimizer.weights` less the
    step counter. The verdict is on Adafactor's claim (its state is exactly n + m per kernel plus
    its vectors, and it halves the initial loss); for every rule the table says whether it
    halved the loss at its default rate. `only`: a subset of the optimizers' names (Adam and
    Adafactor among them), for tests."""
    steps, every, size = (300, 25, 32) if quick else (1200, 25, 32)
    makers = collections.OrderedDict(
        [('SGD', kol.SGD), ('Adam', kol.Adam)] +
        [(name, adafactor if name == 'Adafactor' else getattr(kol, name)) for name in NEW_RULES])
    if only is not None:
        makers = collections.OrderedDict((name, make) for name, make in makers.items()
                                         if name in only)
    shapes = [w.shape for w in D.initial_weights(data)]
    curves, per_rule = collections.OrderedDict(), collections.OrderedDict()
    for name, make in makers.items():
        K.clear_session()
        optimizer = make()
        model = D.model(data, optimizer)
        points = [(0, full_loss(model, data))]

        def record(i):
            if (i + 1) % every == 0:
                points.append((i + 1, full_loss(model, data)))
        train(model, data, steps, size, every_step=record)
        config = optimizer.get_config()
        predicted = model.predict(data.x, batch_size=512).argmax(axis=1)
        curves[name] = np.array(points)
        per_rule[name] = {
            'default lr': config['lr'],
            'final loss': points[-1][1],
            'final accuracy': float(np.mean(predicted == data.y.argmax(axis=1))),
            'state numbers': state_size(optimizer),
            'state / Adam': None,  # filled below
            'halves the loss': points[-1][1] < 0.5 * points[0][1]}
    initial = curves['Adam'][0, 1]
    adam_state = per_rule['Adam']['state numbers']
    for row in per_rule.values():
        row['state / Adam'] = row['state numbers'] / float(adam_state)
    claimed = factored_size(shapes)
    factor = per_rule['Adafactor']
    state_as_claimed = factor['state numbers'] == claimed
    verdict = state_as_claimed and factor['halves the loss']
    params = sum(int(np.prod(shape)) for shape in shapes)
    measured = {
        'steps': steps, 'batch': size, 'parameters': params,
        'shapes': [list(shape) for shape in shapes],
        'initial loss': initial,
        'Adafactor state claimed (n + m per kernel, vectors in full)': claimed,
        'Adam state (2 per parameter)': 2 * params,
        'per rule': per_rule,
        'loss on all data every %d steps' % (steps // 12): collections.OrderedDict(
            (name, [round(float(loss), 4) for step, loss in curve if step % (steps // 12) == 0])
            for name, curve in curves.items()),
        'table': {
            'columns': ['optimizer', 'default lr', 'final loss', 'final accuracy',
                        'state (numbers)', 'state / Adam', 'halves the loss'],
            'rows': [[name, 'None (relative step)' if r['default lr'] is None else
                      '%g' % r['default lr'], '%.4f' % r['final loss'],
                      '%.3f' % r['final accuracy'], '%d' % r['state numbers'],
                      '%.3f' % r['state / Adam'], 'yes' if r['halves the loss'] else 'no']
                     for name, r in per_rule.items()]}}
    plots = [out.plot('new_rules', 'Default rates on %s (batch %d)' % (data.name, size), 'step',
                      curves, ylabel='loss on all the data', log=True, xy=True),
             out.bars('new_rules_state', 'Optimizer state per rule (%d parameters)' % params,
                      collections.OrderedDict((name, r['state numbers'])
                                              for name, r in per_rule.items()),
                      ylabel='numbers kept (step counter excluded)')]
    slow = [name for name, r in per_rule.items() if not r['halves the loss']]
    summary = ('Adafactor keeps %d numbers (claim n + m per kernel: %d) vs Adam %d (%.1f%%), '
               'final loss %.3f vs Adam %.3f (from %.3f); %d steps at default rates, final loss: '
               '%s; not halving the loss: %s' % (
                   factor['state numbers'], claimed, adam_state, 100. * factor['state / Adam'],
                   factor['final loss'], per_rule['Adam']['final loss'], initial, steps,
                   ', '.join('%s %.3f' % (name, r['final loss']) for name, r in per_rule.items()),
                   ', '.join(slow) or 'none'))
    return Result('new_rules', 'Adafactor keeps n + m second-moment numbers per n x m kernel '
                  '(Adam: 2nm) and still trains; every rule of issue 18 at its default rate: loss '
                  'and state (table)', measured, verdict, summary, plots)


EXPERIMENTS = collections.OrderedDict((f.__name__, f) for f in [
    handwritten_sgd, get_updates_once, soft_batch, runge_kutta, reset, weights_round_trip,
    schedules, weight_decay, weight_averaging, new_rules])
