"""Ours against the implementations we claim to match: Keras 2.2.4's own optimizers (bitwise with
fused=False, once Keras's races are removed) and TensorFlow 1.15's tf.train optimizers in a raw TF
graph (bitwise where ours runs the same fused kernel with the same inputs).

Both of our paths are compared: fused=False (the Keras-formula graph) and fused=True (the default:
TF's fused kernel for plain SGD, Adam, Adamax, Adadelta and Ftrl; the kernel library's op for
momentum SGD, RMSprop, Nadam and Adam(amsgrad=True), the formula's arithmetic in one pass; with
KERAS_OPT_LEGACY_KERNELS=0 TF's kernels in part or in-place updates)."""
import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import compat
import catalog
import problems

STEPS = 40


def ordered(keras_class):
    """`problems.gated(keras_class)` with Keras's `iterations` increment (and Nadam's m_schedule
    assign) moved after all its other updates.

    The gate alone is not enough: with decay (and always in Adam/Adamax/Nadam) Keras 2.2.4 reads
    `iterations` unordered against its own increment, so even gated RMSprop/Adagrad/Adadelta with
    decay vary between runs. The increment is Keras's first update; it is rebuilt here with control
    dependencies on the rest, and the original op is left unfetched."""
    base = problems.gated(keras_class)

    class Ordered(base):
        def get_updates(self, loss, params):
            updates = base.get_updates(self, loss, params)
            assert compat.keras_assignment(updates[0])[3], updates[0]  # the increment
            ops = [u for u in updates[1:] if not isinstance(u, tuple)]
            with tf.control_dependencies(ops):  # Nadam's (m_schedule, new value)
                ops += [K.update(*u) for u in updates[1:] if isinstance(u, tuple)]
            with tf.control_dependencies(ops):
                increment = K.update_add(self.iterations, 1)
            self.updates = [increment] + ops
            return self.updates
    return Ordered


def keras_trajectory(optimizer):
    """The flat weights of `problems.mlp()` after each of STEPS train_on_batch steps."""
    return problems.trajectory(optimizer, STEPS)


# Catalog kind 'keras': options Keras's built-in takes too (Keras 2.2.4's Nadam has no decay).
# Beyond what `gated` allows: with `ordered`, Keras's Adam family compares exactly too.
KERAS_CASES = catalog.cases('keras')


@pytest.mark.parametrize('fused', [False, True], ids=['formula', 'fused'])
@pytest.mark.parametrize('entry, options', KERAS_CASES)
def test_same_trajectory_as_keras(entry, options, fused):
    """40 train_on_batch steps of ours and of Keras 2.2.4's own optimizer (race-free): the formula
    path is bitwise Keras's at every step; a fused kernel rounds differently, within 1e-6."""
    ours = keras_trajectory(catalog.make(entry, options, fused=fused))
    K.clear_session()
    theirs = keras_trajectory(ordered(getattr(keras.optimizers, entry.keras))(**options))
    assert np.abs(theirs[-1] - problems.flat(problems.initial_weights())).sum() > 0.1
    if fused:
        assert np.abs(ours - theirs).max() <= 1e-6
    else:
        assert np.array_equal(ours, theirs), np.abs(ours - theirs).max()


# ---- raw TensorFlow ------------------------------------------------------------------------

def raw_trajectory(make_step):
    """STEPS steps of a tanh MLP built from Keras variables (ref or resource variables, as the
    installed Keras makes them: TF's fused kernels need the slots of the same kind);
    `make_step(loss, variables)` -> op."""
    K.clear_session()
    x = tf.placeholder(tf.float32, (None, problems.D))
    y = tf.placeholder(tf.float32, (None, 1))
    w1, b1, w2, b2 = variables = [K.variable(w) for w in problems.initial_weights()]
    loss = tf.reduce_mean(tf.square(tf.matmul(tf.tanh(tf.matmul(x, w1) + b1), w2) + b2 - y))
    step = make_step(loss, variables)
    sess = K.get_session()
    sess.run(tf.global_variables_initializer())
    batch_of = problems.batches(*problems.data())
    trajectory = []
    for i in range(STEPS):
        xb, yb = batch_of(i)
        sess.run(step, {x: xb, y: yb})
        trajectory.append(problems.flat(sess.run(variables)))
    return np.array(trajectory)


def compare_with_tf(make_ours, make_theirs, exact=False):
    """Ours (`apply_gradients` on tf.gradients) against a tf.train optimizer's `minimize`:
    bitwise if `exact`, else within float32 rounding."""
    ours = raw_trajectory(
        lambda loss, w: make_ours().apply_gradients(zip(tf.gradients(loss, w), w)))
    theirs = raw_trajectory(lambda loss, w: make_theirs().minimize(
        loss, var_list=w, gate_gradients=tf.train.Optimizer.GATE_GRAPH))
    assert np.abs(theirs[-1] - problems.flat(problems.initial_weights())).sum() > 0.5
    if exact:
        np.testing.assert_array_equal(ours, theirs)
    else:
        # Our formula graph rounds differently from TF's kernels (Adam: m += (g - m)*(1 - b1);
        # Adadelta: rsqrt; Ftrl: linear + (g - x), and tf.sqrt is not correctly rounded on CPU),
        # and our fused Adam/Adamax pass beta^t from K.pow where TF multiplies a running beta
        # power: equal up to float32 rounding (up to ~2e-6 absolute over 40 steps, for Ftrl).
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


FTRL_CASES = [{}, {'l1_regularization_strength': 0.01}, {'l2_regularization_strength': 0.1},
              {'l2_shrinkage_regularization_strength': 0.1},  # TF uses ApplyFtrlV2
              {'learning_rate_power': -0.7}, {'initial_accumulator_value': 0.5},
              {'l1_regularization_strength': 0.01, 'l2_regularization_strength': 0.1,
               'l2_shrinkage_regularization_strength': 0.1, 'learning_rate_power': -0.7}]


FUSED = pytest.mark.parametrize('fused', [False, True], ids=['formula', 'fused'])


@FUSED
@pytest.mark.parametrize('options', FTRL_CASES,
                         ids=[','.join(sorted(o)) or 'default' for o in FTRL_CASES])
def test_ftrl_matches_tf_train(options, fused):
    """Ftrl follows tf.train.FtrlOptimizer (incl. shrinkage, l1 zeroing, other powers); fused, it
    runs the same kernel (ApplyFtrl, or ApplyFtrlV2 with shrinkage) bitwise."""
    compare_with_tf(lambda: kol.Ftrl(lr=0.5, fused=fused, **options),
                    lambda: tf.train.FtrlOptimizer(0.5, **options), exact=fused)


@FUSED
def test_sgd_matches_tf_gradient_descent_bitwise(fused):
    """Plain SGD is p - lr*g, exactly as tf.train.GradientDescentOptimizer."""
    compare_with_tf(lambda: kol.SGD(lr=0.1, fused=fused),
                    lambda: tf.train.GradientDescentOptimizer(0.1), exact=True)


@FUSED
@pytest.mark.parametrize('b1, b2, eps', [(0.9, 0.999, 1e-7), (0.5, 0.9, 1e-3)])
def test_adam_matches_tf_adam(b1, b2, eps, fused):
    """Adam (epsilon-hat form, lr_t = lr*sqrt(1-b2^t)/(1-b1^t)) follows tf.train.AdamOptimizer."""
    compare_with_tf(lambda: kol.Adam(lr=0.01, beta_1=b1, beta_2=b2, epsilon=eps, fused=fused),
                    lambda: tf.train.AdamOptimizer(0.01, b1, b2, epsilon=eps))


@FUSED
@pytest.mark.parametrize('rho, eps', [(0.95, 1e-7), (0.8, 1e-5)])
def test_adadelta_matches_tf_adadelta(rho, eps, fused):
    """Adadelta follows tf.train.AdadeltaOptimizer (the same formula as Keras); fused, bitwise."""
    compare_with_tf(lambda: kol.Adadelta(lr=1.0, rho=rho, epsilon=eps, fused=fused),
                    lambda: tf.train.AdadeltaOptimizer(1.0, rho, eps), exact=fused)


@FUSED
def test_adamax_matches_tf_contrib_adamax(fused):
    """Adamax follows tf.contrib.opt.AdaMaxOptimizer (same rule: lr/(1-b1^t) * m/(u+eps))."""
    compare_with_tf(lambda: kol.Adamax(lr=0.02, beta_1=0.8, epsilon=1e-7, fused=fused),
                    lambda: tf.contrib.opt.AdaMaxOptimizer(0.02, beta1=0.8, epsilon=1e-7))
