"""Every optimizer, with every option, follows its independent NumPy reference (reference.py) for
30+ steps of real training through Keras, within 1e-5 relative."""
import re

import numpy as np
import pytest
import keras
from keras import backend as K

import keras_opt_legacy as kol
import catalog
import problems
import reference
import reference_rules

STEPS = 30

# Per optimizer (catalog kind 'reference'): its own options, with a learning rate that moves the
# weights visibly (the entry's `lr`).
OWN_OPTIONS = {entry.name: [dict(option.kwargs) for e, option in catalog.options_of('reference')
                            if e is entry]
               for entry in catalog.rules()}
# Options every optimizer takes from the base class, with its `lr`.
SHARED_OPTIONS = [{'decay': 0.05}, {'clipnorm': 0.05}, {'clipvalue': 0.02}, {'constraint': True}]

# Both paths: the default (the kernel library's ops, TF's fused kernels where a rule keeps
# them; with KERAS_OPT_LEGACY_KERNELS=0 the rules' fallback) and the plain formula graph.
# In the version matrix the shared options run on the rules with a TF kernel (ref and resource
# variables take different kernels there); the others share the formula path they all use.
CASES = [(entry.name, dict(options, fused=fused))
         for entry in sorted(catalog.rules(), key=lambda e: e.name)
         for options in OWN_OPTIONS[entry.name] + [
             dict(o, lr=entry.lr) for o in SHARED_OPTIONS if entry.fused or not catalog.MATRIX]
         for fused in (True, False)]


def _case_id(case):
    name, options = case
    return name + '-' + ','.join('%s=%s' % kv for kv in sorted(options.items())
                                 if kv[0] not in ('lr', 'fused')) + \
        ('' if options['fused'] else '-plain')


def non_negative(w):
    return w * (w >= 0)


@pytest.mark.parametrize('case', CASES, ids=[_case_id(c) for c in CASES])
def test_follows_numpy_reference(case):
    name, options = case
    options = dict(options)
    constrained = options.pop('constraint', False)
    model = problems.mlp(kernel_constraint=keras.constraints.NonNeg() if constrained else None)
    model.compile(catalog.make(name, options), 'mse')
    reference_class = catalog.entry(name).reference
    arguments = {key: value for key, value in options.items() if key != 'fused'}
    if issubclass(reference_class, (reference.Decoupled, reference_rules.NamedReference)):
        arguments['names'] = [w.name for w in model.trainable_weights]
    ref = reference_class(constraint=None, **arguments)
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    batch_of = problems.batches(*problems.data())
    # The output kernel (weights[2]) carries the NonNeg constraint. Decoupled weight decay is
    # subtracted after the constrained step: the reference applies it where the step ends.
    decoupled = isinstance(ref, reference.Decoupled)
    if constrained and decoupled:
        ref.constraints = {2: non_negative}

    moved = 0.
    for i in range(STEPS):
        x, y = batch_of(i)
        model.train_on_batch(x, y)
        grads = problems.numpy_gradients(weights, x, y)
        before = problems.flat(weights)
        ref.step(weights, grads)
        if constrained and not decoupled:
            weights[2][...] = non_negative(weights[2])
        moved += np.abs(problems.flat(weights) - before).sum()
        np.testing.assert_allclose(problems.flat(model.get_weights()), problems.flat(weights),
                                   rtol=1e-5, atol=1e-6, err_msg='step %d' % i)
    assert moved > 1e-2, 'the case must actually train for the comparison to mean anything'
    assert np.all(np.isfinite(problems.flat(weights)))


def in_this_tensorflow(kernel):
    """Whether this TensorFlow has the fused kernel (ApplyAdagradV2 is new in TF 1.15)."""
    from tensorflow.python.training import training_ops
    return hasattr(training_ops, re.sub(r'(?<!^)(?=[A-Z])', '_', kernel).lower())


@pytest.mark.parametrize('name, kernel', [(e.name, e.fused) for e in catalog.rules() if e.fused])
def test_fused_uses_tensorflows_kernel_and_plain_does_not(name, kernel, monkeypatch):
    """Without the kernel library (KERAS_OPT_LEGACY_KERNELS=0: the rules' fallback); with it,
    tests/test_kernel_wiring.py checks the ops each path runs."""
    monkeypatch.setenv('KERAS_OPT_LEGACY_KERNELS', '0')
    for fused in (True, False):
        K.clear_session()
        model = problems.mlp()
        model.compile(catalog.make(name, fused=fused), 'mse')
        model._make_train_function()
        types = {op.type for op in model.optimizer.updates[0].graph.get_operations()}
        # ResourceApplyAdam etc. on resource variables (Keras 2.3 makes them); without the
        # kernel (an older TensorFlow) the fused path falls back on the formula.
        assert (kernel in types or 'Resource' + kernel in types) == \
            (fused and in_this_tensorflow(kernel)), (name, fused)
        assert model.optimizer.get_config()['fused'] is fused


def test_an_aliasing_read_is_not_overtaken_by_the_assign():
    """Ftrl with learning_rate_power -1: grappler turns pow(acc, 1) into an Identity, which aliases
    the accumulator's buffer until its consumer has run. An assign ordered only after the reading
    op (not after every new value) then overwrote the accumulator first: wrong in 20 runs of 20
    (found by test_properties; see Optimizer._assign_all)."""
    import tensorflow as tf
    for _ in range(5):
        K.clear_session()
        weight = K.variable(np.array([0.19525401], 'float32'))
        gradient = tf.placeholder(tf.float32, [1])
        step = kol.Ftrl(lr=1.0, learning_rate_power=-1.0, initial_accumulator_value=1.0,
                        fused=False).apply_gradients([(gradient, weight)])
        K.get_session().run(step, {gradient: np.array([1.2911361], 'float32')})
        ref = reference.Ftrl(lr=1.0, learning_rate_power=-1.0, initial_accumulator_value=1.0)
        expected = ref.step([np.array([0.19525401])], [np.array([1.2911361], 'float32')])[0]
        np.testing.assert_allclose(K.get_value(weight), expected, rtol=1e-6)
