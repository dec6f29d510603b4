"""Client libraries that extend an optimizer by replacing `keras.backend.update` during
`get_updates` (bert4keras 0.11.5's `extend_with_*` factories, keras-lookahead 0.9.0): over our
optimizers their extension takes effect, as it does over Keras's own, and follows a NumPy
computation of what the library's code does.

Before the K.update route (ops.keras_update_patched), our fused kernels and in-place updates
bypassed `K.update`: weight decay was not applied, the piecewise-linear rate not followed,
accumulation moved the weights on every batch, and keras-lookahead raised a TypeError."""
import importlib
import os

import numpy as np
import pytest
from keras import backend as K

import keras_opt_legacy as kol
import problems
import reference



def client(name):
    """The client module `name`, or skip this file; under REQUIRE_CLIENTS (`make test`, which
    installs them from locks/clients.txt) a missing one fails instead."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        if os.environ.get('REQUIRE_CLIENTS'):
            pytest.fail('REQUIRE_CLIENTS is set but %s is missing: %s' % (name, error))
        pytest.skip('%s is not installed (make clients): %s' % (name, error),
                    allow_module_level=True)


bert4keras_optimizers = client('bert4keras.optimizers')
keras_lookahead = client('keras_lookahead')

X, Y = problems.data()
BATCH_OF = problems.batches(X, Y)
STEPS = 12
RULES = {  # ours, and the NumPy reference of the same rule
    'Adam': (lambda cls, **kw: cls(lr=0.01, **kw), lambda: reference.Adam(lr=0.01)),
    'SGD-momentum': (lambda cls, **kw: cls(lr=0.05, momentum=0.9, **kw),
                     lambda: reference.SGD(lr=0.05, momentum=0.9)),
    'Nadam': (lambda cls, **kw: cls(lr=0.01, **kw), lambda: reference.Nadam(lr=0.01)),
}
OURS = {'Adam': kol.Adam, 'SGD-momentum': kol.SGD, 'Nadam': kol.Nadam}


def follow(optimizer, edit, steps=STEPS, ref=None, gradient=None):
    """Train `problems.mlp()` with `optimizer` for `steps` batches, and follow it in NumPy: the
    reference rule `ref` steps the float64 weights, then `edit(step, old, new)` turns each
    parameter's new value into what the client makes of it. `gradient(step, g)` may replace the
    gradient the reference sees. Returns the largest difference over all steps."""
    model = problems.compiled(optimizer)
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    worst = 0.
    for step in range(steps):
        x, y = BATCH_OF(step)
        grads = problems.numpy_gradients(weights, x, y)
        if gradient is not None:
            grads = gradient(step, grads)
        old = [w.copy() for w in weights]
        if grads is not None:
            ref.step(weights, grads)
        for i, (o, w) in enumerate(zip(old, weights)):
            weights[i] = edit(step, o, w)
        model.train_on_batch(x, y)
        got = model.get_weights()
        worst = max(worst, max(float(np.max(np.abs(g - w))) for g, w in zip(got, weights)))
    return worst


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'formula'])
@pytest.mark.parametrize('rule', sorted(RULES))
def test_bert4keras_weight_decay_is_applied(rule, fused):
    make, make_ref = RULES[rule]
    cls = bert4keras_optimizers.extend_with_weight_decay(OURS[rule], 'WD' + rule)
    rate = 0.2
    optimizer = make(cls, weight_decay_rate=rate, fused=fused)
    lr = K.get_value(optimizer.lr)
    worst = follow(optimizer, lambda step, old, new: new - lr * rate * old, ref=make_ref())
    assert worst < 1e-5
    # ...and the decay is really there: without it the trajectories part.
    plain = follow(make(OURS[rule], fused=fused), lambda step, old, new: new - lr * rate * old,
                   ref=make_ref())
    assert plain > 1e-3


@pytest.mark.parametrize('rule', sorted(RULES))
def test_bert4keras_piecewise_linear_rate_is_followed(rule):
    make, make_ref = RULES[rule]
    cls = bert4keras_optimizers.extend_with_piecewise_linear_lr(OURS[rule], 'PL' + rule)
    schedule = {4: 1., 8: 0.25}  # 0 -> 1 over 4 steps, down to 0.25 at step 8, then constant
    optimizer = make(cls, lr_schedule=schedule)
    before = problems.flat(problems.initial_weights())

    def multiplier(step):
        return float(np.interp(step, [0, 4, 8], [0., 1., 0.25]))
    worst = follow(optimizer, lambda step, old, new: old + (new - old) * multiplier(step),
                   ref=make_ref())
    assert worst < 1e-5
    # The first step's multiplier is 0: one step leaves the weights where they were.
    model = problems.compiled(make(cls, lr_schedule=schedule))
    model.train_on_batch(*BATCH_OF(0))
    np.testing.assert_array_equal(problems.flat(model.get_weights()), before)


def test_bert4keras_gradient_accumulation_moves_only_every_k_batches():
    k = 3
    cls = bert4keras_optimizers.extend_with_gradient_accumulation(kol.Adam, 'AccumAdam')
    optimizer = cls(lr=0.01, grad_accum_steps=k)
    model = problems.compiled(optimizer)
    moved = []
    previous = problems.flat(model.get_weights())
    for step in range(4 * k + 1):
        model.train_on_batch(*BATCH_OF(step))
        now = problems.flat(model.get_weights())
        moved.append(bool(np.any(now != previous)))
        previous = now
    # bert4keras applies on iterations % k == 0 with the mean of the k batches before it (the
    # first update sees an empty accumulator: a zero step).
    assert moved == [step % k == 0 and step > 0 for step in range(4 * k + 1)]

    # The same in NumPy: Adam on the mean gradient, its step counter counting every batch.
    ref, pending = reference.Adam(lr=0.01), []

    def gradient(step, grads):
        mean = [sum(g) / k for g in zip(*pending)] if step % k == 0 and step > 0 else None
        pending[:] = ([] if step % k == 0 else pending) + [grads]
        if mean is not None:
            ref.iterations = step  # bias corrections count every batch, as bert4keras's do
        return mean
    assert follow(cls(lr=0.01, grad_accum_steps=k), lambda step, old, new: new, steps=4 * k + 1,
                  ref=ref, gradient=gradient) < 1e-5


def test_bert4keras_layer_adaptation_is_applied():
    cls = bert4keras_optimizers.extend_with_layer_adaptation(kol.Adam, 'LayerAdaptedAdam')
    optimizer = cls(lr=0.01)

    def adapt(step, old, new):  # bert4keras: dx scaled by ||x|| / ||dx / lr||
        dx = new - old
        x_norm, g_norm = np.linalg.norm(old), np.linalg.norm(dx / 0.01)
        ratio = x_norm / g_norm if x_norm > 0 and g_norm > 0 else 1.
        return old + dx * ratio
    assert follow(optimizer, adapt, ref=reference.Adam(lr=0.01)) < 1e-5


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'formula'])
def test_keras_lookahead_over_ours(fused):
    k, alpha = 3, 0.5
    optimizer = keras_lookahead.Lookahead(kol.Adam(lr=0.01, fused=fused), sync_period=k,
                                          slow_step=alpha)
    slow = [w.astype(np.float64) for w in problems.initial_weights()]
    model = problems.compiled(optimizer)
    ref = reference.Adam(lr=0.01)
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    for step in range(4 * k):
        x, y = BATCH_OF(step)
        ref.step(weights, problems.numpy_gradients(weights, x, y))
        if (step + 1) % k == 0:  # keras-lookahead syncs when (iterations + 1) % k == 0
            slow = [s + alpha * (w - s) for s, w in zip(slow, weights)]
            weights = [s.copy() for s in slow]
        model.train_on_batch(x, y)
        for got, want in zip(model.get_weights(), weights):
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_clients_leave_keras_update_as_they_found_it():
    from keras_opt_legacy import ops
    cls = bert4keras_optimizers.extend_with_weight_decay(kol.Adam, 'WDAdamCheck')
    problems.compiled(cls(lr=0.01))._make_train_function()
    problems.compiled(keras_lookahead.Lookahead(kol.Adam()))._make_train_function()
    assert not ops.keras_update_patched()


def test_bert4keras_piecewise_linear_equals_piecewise_linear_schedule():
    """bert4keras's lr_schedule={1000: 1, 2000: 0.1} times lr is PiecewiseLinear([0, 1000,
    2000], [0, lr, 0.1 * lr]) (bert4keras.backend.piecewise_linear evaluated here)."""
    from bert4keras.backend import piecewise_linear
    from keras_opt_legacy import schedules
    lr, step = 2e-5, K.placeholder((), dtype='int64')
    theirs = lr * piecewise_linear(step, {1000: 1, 2000: 0.1})
    ours = schedules.PiecewiseLinear([0, 1000, 2000], [0., lr, 0.1 * lr])(step)
    for s in list(range(0, 50)) + list(range(950, 2100, 11)):
        got, want = K.get_session().run([ours, theirs], {step: s})
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize('decay_steps, warmup_steps, lr, min_lr', [
    (100, 10, 1e-3, 0.), (50, 20, 2e-5, 1e-6), (30, 40, 1e-3, 1e-5), (10, 0, 1e-3, 0.)])
def test_keras_bert_adam_warmup_rate_is_reproduced(decay_steps, warmup_steps, lr, min_lr):
    """keras-bert 0.84's AdamWarmup rate (t = iterations + 1, the decay not shifted), read from
    its own graph, equals `keras_bert_warmup` at every step, as current_learning_rate shows."""
    keras_bert = client('keras_bert')
    from keras_opt_legacy import schedules
    import keras
    theirs = keras_bert.AdamWarmup(decay_steps, warmup_steps, lr=lr, min_lr=min_lr)
    switches, original = [], K.switch

    def capture(*args, **kwargs):  # AdamWarmup's first K.switch is its learning rate
        switches.append(original(*args, **kwargs))
        return switches[-1]
    model = problems.mlp()
    K.switch = capture
    try:
        theirs.get_updates(model.total_loss if hasattr(model, 'total_loss') else
                           K.sum(model.output), model.trainable_weights)
    finally:
        K.switch = original
    ours = kol.Adam(lr=schedules.keras_bert_warmup(decay_steps, warmup_steps, lr, min_lr))
    problems.compiled(ours)._make_train_function()
    for step in range(decay_steps + warmup_steps + 5):
        K.set_value(theirs.iterations, step)
        K.set_value(ours.iterations, step)
        # To float32 rounding: keras-bert's 1 - t / decay_steps loses up to half an ulp of 1.0.
        np.testing.assert_allclose(kol.current_learning_rate(ours), K.get_value(switches[0]),
                                   rtol=1e-6, atol=lr * 2 ** -23)
    assert keras is not None
