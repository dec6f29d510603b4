"""Runge-Kutta optimizers: each method's step equals one step of its Butcher tableau computed in
NumPy (the adaptive ones with their step-size controller), Heun equals its two-function form, the
model's state updates and stateful metrics run once per batch, and training, misuse, state and
config behave as for the other optimizers."""
import numpy as np
import pytest
import keras
import scipy.integrate
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import compat, runge_kutta as rk
import problems

# ---- NumPy references, independent of the implementation --------------------------------------

# Butcher tableaux from the literature: a as strictly lower rows, b, and for the embedded pairs
# the lower-order weights and their order.
TABLEAUX = {
    'Heun': ([[], [1]], [1 / 2, 1 / 2]),
    'Midpoint': ([[], [1 / 2]], [0, 1]),
    'RK4': ([[], [1 / 2], [0, 1 / 2], [0, 0, 1]], [1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    'RK23': ([[], [1 / 2], [0, 3 / 4], [2 / 9, 1 / 3, 4 / 9]], [2 / 9, 1 / 3, 4 / 9, 0],
             [7 / 24, 1 / 4, 1 / 3, 1 / 8], 2),
    'RK45': ([[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
              [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
              [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
              [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]],
             [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0],
             [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40], 4),
}
ORDERS = {'Heun': 2, 'Midpoint': 2, 'RK4': 4, 'RK23': 3, 'RK45': 5}
FIXED, ADAPTIVE = ['Heun', 'Midpoint', 'RK4'], ['RK23', 'RK45']
ALL = FIXED + ADAPTIVE


def rk_step(grad, p, h, a, b, b_embedded=None):
    """One step of dp/dt = -grad(p) (p flat, float64): (new p, embedded solution or None)."""
    ks = []
    for row in a:
        ks.append(-grad(p + h * sum((a_ij * k for a_ij, k in zip(row, ks)), np.zeros_like(p))))
    combine = lambda weights: p + h * sum(w * k for w, k in zip(weights, ks))  # noqa: E731
    return combine(b), None if b_embedded is None else combine(b_embedded)


def adaptive_step(grad, p, h, name, rtol, atol, min_step, max_step, safety=0.9, min_factor=0.2,
                  max_factor=10.):
    """(new p, accepted, new h, err) of the documented controller."""
    a, b, b_embedded, q = TABLEAUX[name]
    new, embedded = rk_step(grad, p, h, a, b, b_embedded)
    scale = atol + rtol * np.maximum(np.abs(p), np.abs(new))
    err = np.sqrt(np.mean(((new - embedded) / scale) ** 2))
    accepted = err <= 1 or h <= min_step
    factor = np.clip(safety * err ** (-1. / (q + 1)), min_factor, max_factor)
    return new if accepted else p, accepted, float(np.clip(h * factor, min_step, max_step)), err


def test_the_reference_tableaux_have_their_order():
    """Local error ~ h^(order+1) on a nonlinear 2-d gradient flow (embedded pairs: both orders);
    a wrong coefficient lowers the order. (Dormand-Prince approaches 6 from above, hence the
    asymmetric bounds.)"""
    def grad(p):
        x, y = p
        return np.array([x * (x * x + y * y) + 0.5 * np.cos(x) * y,
                         y * (x * x + y * y) + 0.5 * np.sin(x)])
    p0 = np.array([0.7, -0.4])

    def local_errors(h, name):
        exact = scipy.integrate.solve_ivp(lambda t, p: -grad(p), (0, h), p0, method='DOP853',
                                          rtol=1e-13, atol=1e-15).y[:, -1]
        return [np.linalg.norm(step - exact) for step in rk_step(grad, p0, h, *TABLEAUX[name][:3])
                if step is not None]
    for name in ALL:
        orders = [ORDERS[name]] + ([TABLEAUX[name][3]] if name in ADAPTIVE else [])
        for order, coarse, fine in zip(orders, local_errors(0.1, name), local_errors(0.05, name)):
            assert order + 0.6 < np.log2(coarse / fine) < order + 1.6, name


# ---- problems: a Keras model and the gradient of its loss in NumPy ------------------------------

class Problem(object):
    """A Keras model with fixed initial weights, and the gradient of its loss in NumPy on batch i
    (`batch_of(i)`) as a function of the flat weights."""

    def __init__(self, make_model, initial, grad, batch_of):
        self.make_model, self.initial = make_model, initial
        self.grad, self.batch_of = grad, batch_of

    def model(self, optimizer, inject=True, **compile_kwargs):
        model = self.make_model()
        model.set_weights(self.initial)
        model.compile(optimizer, 'mse', **compile_kwargs)
        if inject:
            optimizer.inject(model)
        return model

    def batch_grad(self, i):
        """The gradient on batch i as a function of the flat weights."""
        x, y = self.batch_of(i)
        return lambda p: self.grad(p, x, y)

    def start(self):
        return problems.flat(self.initial).astype(np.float64)


def quadratic(x, y, w):
    """Dense(1, no bias) with MSE on the fixed (x, y): L(w) = mean((x w - y)^2)."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32).reshape(-1, 1)
    return Problem(
        lambda: keras.models.Sequential([keras.layers.Dense(1, use_bias=False,
                                                            input_shape=(x.shape[1],))]),
        [np.asarray(w, np.float32).reshape(-1, 1)],
        lambda p, x, y: 2. / len(x) * x.T.dot(x.dot(p.reshape(-1, 1)) - y).ravel(),
        lambda i: (x, y))


def random_quadratic():
    rng = np.random.RandomState(3)
    return quadratic(rng.randn(8, 3) * [0.5, 1., 2.], rng.randn(8), rng.randn(3))


def stiff_quadratic():
    """L = (w1^2 + 1e4 w2^2)/2: a huge curvature direction."""
    return quadratic([[1., 0.], [0., 100.]], [0., 0.], [1., 1.])


def easy_quadratic():
    """L = 0.01 (w1^2 + w2^2)/2: small and smooth."""
    return quadratic([[0.1, 0.], [0., 0.1]], [0., 0.], [1., 1.])


X, Y = problems.data()
SHAPES = [w.shape for w in problems.initial_weights()]


def unflat(p):
    sizes = np.cumsum([int(np.prod(s)) for s in SHAPES])[:-1]
    return [part.reshape(s) for part, s in zip(np.split(p, sizes), SHAPES)]


def mlp(kernel_constraint=None):
    return Problem(lambda: problems.mlp(kernel_constraint=kernel_constraint),
                   problems.initial_weights(),
                   lambda p, x, y: problems.flat(problems.numpy_gradients(unflat(p), x, y)),
                   problems.batches(X, Y, 16))


PROBLEMS = {'quadratic': random_quadratic, 'mlp': mlp}
LR = {'quadratic': 0.05, 'mlp': 0.5}


def weights_of(model):
    return problems.flat(model.get_weights())


# ---- each step equals the tableau's step ------------------------------------------------------

@pytest.mark.parametrize('problem', sorted(PROBLEMS))
@pytest.mark.parametrize('name', FIXED)
def test_fixed_step_equals_the_tableau_in_numpy(name, problem):
    problem, lr = PROBLEMS[problem](), LR[problem]
    model = problem.model(getattr(rk, name)(lr=lr))
    p = problem.start()
    for i in range(3):
        grad = problem.batch_grad(i)
        expected, _ = rk_step(grad, p, lr, *TABLEAUX[name][:2])
        assert np.abs(expected - (p - lr * grad(p))).max() > 1e-4  # not a gradient-descent step
        model.train_on_batch(*problem.batch_of(i))
        np.testing.assert_allclose(weights_of(model), expected, rtol=0, atol=1e-6)
        p = expected
    assert K.get_value(model.optimizer.iterations) == 3


ADAPTIVE_SETTINGS = {'quadratic': dict(lr=1.5, rtol=1e-3, atol=1e-3, min_step=1e-3, max_step=3.),
                     'mlp': dict(lr=1.0, rtol=1e-2, atol=1e-3, min_step=1e-4, max_step=4.)}


@pytest.mark.parametrize('problem', sorted(PROBLEMS))
@pytest.mark.parametrize('name', ADAPTIVE)
def test_adaptive_step_and_controller_equal_numpy(name, problem):
    settings = ADAPTIVE_SETTINGS[problem]
    problem = PROBLEMS[problem]()
    opt = getattr(rk, name)(**settings)
    model = problem.model(opt)
    p, h = problem.start(), settings['lr']
    decisions = []
    for i in range(6):
        before = weights_of(model)
        p, accepted, h, err = adaptive_step(problem.batch_grad(i), p, h, name,
                                            *[settings[k] for k in ('rtol', 'atol', 'min_step',
                                                                    'max_step')])
        assert abs(err - 1) > 0.05  # a clear decision: float32 rounding cannot flip it
        model.train_on_batch(*problem.batch_of(i))
        decisions.append(accepted)
        if not accepted:
            np.testing.assert_array_equal(weights_of(model), before)  # stays exactly at p_n
        np.testing.assert_allclose(weights_of(model), p, rtol=0, atol=1e-6)
        assert K.get_value(opt.step_size) == pytest.approx(h, rel=1e-5)
        assert kol.current_learning_rate(opt) == pytest.approx(h, rel=1e-5)
    assert True in decisions and False in decisions  # both branches were exercised


def test_heun_equals_the_two_function_formulation():
    lr, p = 0.5, mlp().start()
    model = mlp().model(rk.Heun(lr=lr))
    for i in range(5):
        grad = mlp().batch_grad(i)
        tilde = p - lr * grad(p)
        p = tilde - lr / 2 * (grad(tilde) - grad(p))
        model.train_on_batch(*mlp().batch_of(i))
        np.testing.assert_allclose(weights_of(model), p, rtol=0, atol=1e-6)


def test_the_one_stage_tableau_is_sgd():
    euler = mlp().model(rk.RungeKutta(lr=0.3, a=[[0]], b=[1]))
    sgd = mlp().model(kol.SGD(lr=0.3), inject=False)
    for i in range(4):
        euler.train_on_batch(*mlp().batch_of(i))
        sgd.train_on_batch(*mlp().batch_of(i))
    assert not np.allclose(weights_of(sgd), mlp().start())
    np.testing.assert_array_equal(weights_of(euler), weights_of(sgd))


@pytest.mark.parametrize('options, rate', [
    ({'lr': 0.4, 'decay': 0.5}, lambda n: 0.4 / (1 + 0.5 * n)),
    ({'lr': kol.schedules.ExponentialDecay(0.4, 1, 0.5)}, lambda n: 0.4 * 0.5 ** n),
], ids=['decay', 'schedule'])
def test_fixed_methods_follow_the_learning_rate_schedule(options, rate):
    model = mlp().model(rk.RK4(**options))
    p = mlp().start()
    for i in range(3):
        p, _ = rk_step(mlp().batch_grad(i), p, rate(i), *TABLEAUX['RK4'][:2])
        model.train_on_batch(*mlp().batch_of(i))
        np.testing.assert_allclose(weights_of(model), p, rtol=0, atol=1e-6)


def test_constraints_apply_to_the_new_parameters_not_to_the_stage_points():
    problem = mlp(kernel_constraint=keras.constraints.NonNeg())
    model = problem.model(rk.Heun(lr=0.5))
    p, last = problem.start(), slice(-5, -1)  # the constrained kernel (4 entries, before b2)
    clipped = False
    for i in range(3):
        p, _ = rk_step(problem.batch_grad(i), p, 0.5, *TABLEAUX['Heun'][:2])
        clipped |= bool(np.any(p[last] < 0))
        p[last] = np.maximum(p[last], 0)
        model.train_on_batch(*problem.batch_of(i))
        np.testing.assert_allclose(weights_of(model), p, rtol=0, atol=1e-6)
    assert clipped


def test_every_stage_uses_the_gradients_of_get_gradients():
    """As Horovod wraps an optimizer: a subclass overriding get_gradients, rebuilt from the
    config. Doubling the gradient doubles the vector field: the step of twice the lr."""
    calls = []

    def get_gradients(self, loss, params):
        calls.append(1)
        return [2. * g for g in rk.RK4.get_gradients(self, loss, params)]
    cls = type(rk.RK4.__name__, (rk.RK4,), {'get_gradients': get_gradients})
    doubled = mlp().model(cls.from_config(rk.RK4(lr=0.1).get_config()))
    plain = mlp().model(rk.RK4(lr=0.2))
    for i in range(3):
        doubled.train_on_batch(*mlp().batch_of(i))
        plain.train_on_batch(*mlp().batch_of(i))
    np.testing.assert_allclose(weights_of(doubled), weights_of(plain), rtol=0, atol=1e-6)
    assert len(calls) == 1  # built once, shared by the four stage functions


# ---- once per batch: model state updates, stateful metrics, loss and metrics ------------------

class BatchCount(keras.layers.Layer):
    """A stateful metric counting the runs of its update (Keras 2.2's protocol)."""

    def __init__(self):
        super(BatchCount, self).__init__(name='batch_count')
        self.stateful = True
        self.count = K.variable(0., name='count')

    def reset_states(self):
        K.set_value(self.count, 0.)

    def __call__(self, y_true, y_pred):
        self.add_update(K.update_add(self.count, 1.), inputs=[y_true, y_pred])
        return self.count * 1.


if compat.KERAS_23:
    class BatchCount(keras.metrics.Metric):  # noqa: F811
        """The same with Keras 2.3's stateful metrics, which are Metric objects."""

        def __init__(self):
            super(BatchCount, self).__init__(name='batch_count')
            self.count = self.add_weight('count', initializer='zeros')

        def update_state(self, y_true, y_pred, sample_weight=None):
            return [K.update_add(self.count, 1.)]

        def result(self):
            return self.count * 1.


def batchnorm_model(optimizer, inject):
    model = keras.models.Sequential([
        keras.layers.Dense(8, input_shape=(problems.D,)),
        keras.layers.BatchNormalization(momentum=0.5),
        keras.layers.Dense(1)])
    count = BatchCount()
    model.compile(optimizer, 'mse', metrics=['mae', count])
    if inject:
        optimizer.inject(model)
    return model, count


@pytest.mark.parametrize('name', ['Heun', 'RK45'])
def test_model_state_and_stateful_metrics_update_once_per_batch_at_the_start(name):
    model, count = batchnorm_model(getattr(rk, name)(lr=0.2), inject=True)
    initial = model.get_weights()
    loss, mae, _ = model.train_on_batch(*mlp().batch_of(0), **compat.KEEP_METRICS)
    after_one = [K.get_value(w) for w in model.layers[1].non_trainable_weights]
    for i in range(1, 3):
        model.train_on_batch(*mlp().batch_of(i), **compat.KEEP_METRICS)
    assert K.get_value(count.count) == 3
    K.clear_session()
    plain, _ = batchnorm_model(keras.optimizers.SGD(0.), inject=False)
    plain.set_weights(initial)
    plain_loss, plain_mae, _ = plain.train_on_batch(*mlp().batch_of(0))
    moving = [K.get_value(w) for w in plain.layers[1].non_trainable_weights]
    assert not np.allclose(moving[0], 0)  # the statistics moved (once)
    for got, expected in zip(after_one, moving):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (loss, mae) == pytest.approx((plain_loss, plain_mae), rel=1e-6)  # at p_n


# ---- adaptive step sizes ----------------------------------------------------------------------

def step_sizes(opt, problem, steps):
    model = problem.model(opt)
    sizes = []
    for i in range(steps):
        model.train_on_batch(*problem.batch_of(i))
        sizes.append(float(K.get_value(opt.step_size)))
    return model, sizes


@pytest.mark.parametrize('name', ADAPTIVE)
def test_the_step_size_grows_on_an_easy_problem(name):
    _, sizes = step_sizes(getattr(rk, name)(lr=0.01, min_step=1e-3, max_step=2.),
                          easy_quadratic(), 5)
    assert sizes == sorted(sizes) and sizes[0] > 0.01
    assert sizes[-1] == pytest.approx(2.)  # up to max_step, not beyond


@pytest.mark.parametrize('name', ADAPTIVE)
def test_the_step_size_shrinks_on_a_stiff_problem(name):
    opt = getattr(rk, name)(lr=0.1, min_step=1e-5, max_step=1.)
    model, sizes = step_sizes(opt, stiff_quadratic(), 30)
    assert all(1e-5 <= h <= 1. for h in sizes)
    assert max(sizes[-10:]) < 1e-2  # the stability limit is about 3e-4
    assert np.abs(weights_of(model)).max() < 1  # and it converges, not blows up


def test_at_min_step_every_finite_step_is_accepted():
    problem = stiff_quadratic()
    opt = rk.RK23(lr=1e-3, min_step=1e-3, max_step=1e-3, atol=1e-9, rtol=0.)
    model = problem.model(opt)
    p, accepted, h, err = adaptive_step(problem.batch_grad(0), problem.start(), 1e-3, 'RK23',
                                        0., 1e-9, 1e-3, 1e-3)
    assert accepted is True and err > 10 and h == 1e-3
    model.train_on_batch(*problem.batch_of(0))
    assert not np.array_equal(weights_of(model), problem.start())
    np.testing.assert_allclose(weights_of(model), p, rtol=1e-6)  # |p| ~ 100: relative
    assert K.get_value(opt.step_size) == pytest.approx(1e-3)


def test_a_non_finite_error_estimate_is_rejected_with_min_factor():
    problem = stiff_quadratic()
    opt = rk.RK23(lr=1e30, max_step=1e30)  # the stages overflow
    model = problem.model(opt)
    model.train_on_batch(*problem.batch_of(0))
    np.testing.assert_array_equal(weights_of(model), problem.start())
    assert K.get_value(opt.step_size) == pytest.approx(0.2e30)


def test_the_step_size_set_from_outside_is_clipped_into_the_bounds():
    problem = easy_quadratic()
    opt = rk.RK23(lr=0.1, max_step=0.5)
    model = problem.model(opt)
    K.set_value(opt.lr, 100.)  # e.g. a callback
    model.train_on_batch(*problem.batch_of(0))
    p, _, h, _ = adaptive_step(problem.batch_grad(0), problem.start(), 0.5, 'RK23',
                               1e-3, 1e-6, 1e-6, 0.5)
    np.testing.assert_allclose(weights_of(model), p, rtol=0, atol=1e-6)
    assert K.get_value(opt.lr) == pytest.approx(h)


# ---- the ways to train ------------------------------------------------------------------------

def test_fit_with_validation_and_callbacks_feeds_every_stage_the_same_batch():
    """fit without shuffling follows the NumPy Heun on the same batches in order."""
    count = BatchCount()
    model = mlp().model(rk.Heun(lr=0.5), metrics=[count])
    counts = []  # after each training batch (validation resets and runs the metric too)
    history = model.fit(X, Y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                        validation_data=(X[:32], Y[:32]),
                        callbacks=[keras.callbacks.EarlyStopping(patience=5),
                                   keras.callbacks.LambdaCallback(on_batch_end=lambda batch, logs:
                                                                  counts.append(K.get_value(
                                                                      count.count)))])
    assert counts == [1, 2, 3, 4] * 3  # one metric update per batch, reset every epoch
    assert history.history['loss'][-1] < history.history['loss'][0]
    assert len(history.history['val_loss']) == 3
    p = mlp().start()
    for i in range(12):
        p, _ = rk_step(mlp().batch_grad(i), p, 0.5, *TABLEAUX['Heun'][:2])
    np.testing.assert_allclose(weights_of(model), p, rtol=0, atol=1e-5)


@pytest.mark.parametrize('name', ALL)
def test_fit_fit_generator_and_train_on_batch_reduce_the_loss(name):
    opt = getattr(rk, name)(lr=0.2)
    model = mlp().model(opt, metrics=['mae'])
    first = model.evaluate(X, Y, verbose=0)[0]
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0)

    def generator():
        while True:
            for i in range(4):
                yield mlp().batch_of(i)
    model.fit_generator(generator(), steps_per_epoch=4, epochs=2, verbose=0)
    for i in range(4):
        loss, mae = model.train_on_batch(*mlp().batch_of(i))
        assert np.isfinite(loss) and mae > 0
    assert K.get_value(opt.iterations) == 8 + 8 + 4
    assert model.evaluate(X, Y, verbose=0)[0] < 0.8 * first


@pytest.mark.parametrize('name', ['Heun', 'RK23'])
def test_sparse_gradients_train_only_the_rows_in_the_batch(name):
    model = keras.models.Sequential([keras.layers.Embedding(10, 3, input_length=2),
                                     keras.layers.Flatten(), keras.layers.Dense(1)])
    rng = np.random.RandomState(0)  # fixed: from some random starts RK23 rejects every step
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape) for w in model.get_weights()])
    opt = getattr(rk, name)(lr=0.1)
    model.compile(opt, 'mse')
    opt.inject(model)
    x, y = np.array([[1, 2], [3, 1]] * 4), np.arange(8.).reshape(8, 1)
    before = model.get_weights()[0]
    losses = [model.train_on_batch(x, y) for _ in range(5)]
    after = model.get_weights()[0]
    assert losses[-1] < losses[0]
    moved = np.any(after != before, axis=1)
    assert list(np.flatnonzero(moved)) == [1, 2, 3]


# ---- misuse ------------------------------------------------------------------------------------

def test_training_without_inject_fails_and_trains_nothing():
    opt = rk.RK4()
    model = mlp().model(opt, inject=False)
    with pytest.raises(RuntimeError, match=r'opt\.inject\(model\)'):
        model.fit(X, Y, verbose=0)
    with pytest.raises(RuntimeError, match=r'opt\.inject\(model\)'):
        model.train_on_batch(*mlp().batch_of(0))
    np.testing.assert_array_equal(weights_of(model), mlp().start())
    opt.inject(model)
    model.train_on_batch(*mlp().batch_of(0))
    model.compile(opt, 'mse')  # a recompile drops the injected train function...
    with pytest.raises(RuntimeError, match=r'opt\.inject\(model\)'):
        model.fit_generator(iter([mlp().batch_of(0)]), steps_per_epoch=1, verbose=0)  # ...loudly
    assert K.get_value(opt.iterations) == 1


def test_inject_names_the_fix_on_misuse():
    opt = rk.Heun()
    model = mlp().make_model()
    with pytest.raises(RuntimeError, match='model.compile'):
        opt.inject(model)
    model.compile(kol.Adam(), 'mse')
    with pytest.raises(ValueError, match='another optimizer.*opt.inject'):
        opt.inject(model)


def test_other_ways_to_apply_it_fail_clearly():
    model, opt = mlp().make_model(), rk.RK23()
    with pytest.raises(ValueError, match=r'must be the outermost optimizer'):
        kol.GradientAccumulation(opt, 2)
    with pytest.raises(TypeError, match=r'opt\.inject\(model\)'):
        opt.apply_gradients([(K.zeros((1,)), model.weights[-1])])


@pytest.mark.parametrize('make, error, argument', [
    (lambda: rk.Heun(lr=-0.1), ValueError, 'lr'),
    (lambda: rk.RK4(decay=-1.), ValueError, 'decay'),
    (lambda: rk.Midpoint(clipnorm=-1.), ValueError, 'clipnorm'),
    (lambda: rk.Heun(momentum=0.9), TypeError, 'momentum'),
    (lambda: rk.Heun(a=[[], [1]], b=[0.5, 0.5]), TypeError, 'own tableau'),
    (lambda: rk.RungeKutta(b=[1]), TypeError, 'a'),
    (lambda: rk.RungeKutta(a=[[], [1]], b=[0.5, 0.6]), ValueError, 'b must sum to 1'),
    (lambda: rk.RungeKutta(a=[[], [1]], b=[1]), ValueError, 'a must have 1 rows'),
    (lambda: rk.RungeKutta(a=[[0, 1], [1]], b=[0.5, 0.5]), ValueError, 'strictly lower'),
    (lambda: rk.RungeKutta(a=[[], ['x']], b=[0.5, 0.5]), TypeError, 'a must'),
    (lambda: rk.RungeKutta(a=[[], [float('inf')]], b=[0.5, 0.5]), ValueError, 'a must'),
    (lambda: rk.AdaptiveRungeKutta(a=[[], [1]], b=[0.5, 0.5], b_embedded=[1], error_order=1),
     ValueError, 'b_embedded'),
    (lambda: rk.AdaptiveRungeKutta(a=[[], [1]], b=[0.5, 0.5], b_embedded=[1, 0],
                                   error_order=0), ValueError, 'error_order'),
    (lambda: rk.RK23(rtol=-1e-3), ValueError, 'rtol'),
    (lambda: rk.RK23(atol=0.), ValueError, 'atol'),
    (lambda: rk.RK45(min_step=0.), ValueError, 'min_step'),
    (lambda: rk.RK45(min_step=0.1, max_step=0.01), ValueError, 'max_step'),
    (lambda: rk.RK45(lr=2., max_step=1.), ValueError, 'lr'),
    (lambda: rk.RK23(safety=1.5), ValueError, 'safety'),
    (lambda: rk.RK23(min_factor=2.), ValueError, 'min_factor'),
    (lambda: rk.RK23(max_factor=0.5), ValueError, 'max_factor'),
    (lambda: rk.RK23(decay=0.1), ValueError, 'lr.*without decay'),
    (lambda: rk.RK23(lr=kol.schedules.ExponentialDecay(0.1, 10, 0.5)), ValueError, 'lr'),
    (lambda: rk.RK23(safety='high'), TypeError, 'safety'),
])
def test_invalid_hyperparameters_fail_at_construction_naming_them(make, error, argument):
    with pytest.raises(error, match=argument):
        make()


# ---- state and config --------------------------------------------------------------------------

def make(name):
    return getattr(rk, name)(lr=0.3, **({'rtol': 1e-2, 'atol': 1e-3} if name in ADAPTIVE else {}))


@pytest.mark.parametrize('name', ALL)
def test_weights_list_and_name_all_state(name):
    opt = make(name)
    mlp().model(opt).train_on_batch(*mlp().batch_of(0))
    stages = len(TABLEAUX[name][1])
    assert opt.evaluations_per_step == stages
    scalars = ['iterations'] + (['step_size'] if name in ADAPTIVE else [])
    assert opt.weight_names[:len(scalars)] == scalars
    # p_n is kept where a later stage moves from it (3+ stages) or a step may be rejected.
    start = {'start'} if stages > 2 or name in ADAPTIVE else set()
    slots = start | {'g%d' % j for j in range(1, stages)}
    assert len(opt.weights) == len(opt.weight_names) == len(scalars) + 4 * len(slots)
    assert len(set(opt.weight_names)) == len(opt.weight_names)
    assert {n.split('/')[0] for n in opt.weight_names[len(scalars):]} == slots


@pytest.mark.parametrize('name', ALL)
def test_get_and_set_weights_restore_the_trajectory_exactly(name):
    opt = make(name)
    model = mlp().model(opt)
    problems.train(model, 3, mlp().batch_of)
    snapshot = model.get_weights(), opt.get_weights()
    later = lambda i: mlp().batch_of(i + 3)  # noqa: E731
    first = weights_of(problems.train(model, 4, later)), opt.get_weights()
    model.set_weights(snapshot[0])
    opt.set_weights(snapshot[1])
    second = weights_of(problems.train(model, 4, later)), opt.get_weights()
    np.testing.assert_array_equal(first[0], second[0])
    for a, b in zip(first[1], second[1]):
        np.testing.assert_array_equal(a, b)


def test_save_and_load_model_resumes_exactly(tmp_path):
    model = mlp().model(make('RK23'))
    problems.train(model, 3, mlp().batch_of)
    path = str(tmp_path / 'model.h5')
    model.save(path)
    later = lambda i: mlp().batch_of(i + 3)  # noqa: E731
    expected = weights_of(problems.train(model, 4, later))
    K.clear_session()
    with pytest.raises(RuntimeError, match=r'opt\.inject\(model\)'):
        keras.models.load_model(path)  # Keras's own: stops while restoring the state
    K.clear_session()
    loaded = kol.load_model(path)
    assert K.get_value(loaded.optimizer.iterations) == 3
    np.testing.assert_array_equal(weights_of(problems.train(loaded, 4, later)), expected)


GENERAL = {'RungeKutta': dict(a=[[], [0.5]], b=[0., 1.]),
           'AdaptiveRungeKutta': dict(a=TABLEAUX['RK23'][0], b=TABLEAUX['RK23'][1],
                                      b_embedded=TABLEAUX['RK23'][2], error_order=2)}


@pytest.mark.parametrize('name', ALL + sorted(GENERAL))
def test_config_round_trips(name):
    options = dict(GENERAL.get(name, {}), lr=0.25, clipnorm=2.)
    if name in ADAPTIVE + ['AdaptiveRungeKutta']:
        options.update(rtol=1e-2, atol=1e-4, min_step=1e-3, max_step=0.5, safety=0.8,
                       min_factor=0.1, max_factor=5.)
    else:
        options.update(decay=0.01)
    opt = getattr(rk, name)(**options)
    config = opt.get_config()
    clone = type(opt).from_config(config)
    assert clone.get_config() == config
    for key, value in options.items():
        expected = [list(map(float, row)) + [0.] * (len(options['b']) - len(row))
                    for row in value] if key == 'a' else value
        assert np.allclose(np.asarray(config[key], dtype=float), expected), key
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is type(opt) and restored.get_config() == config
