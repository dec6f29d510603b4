"""Hypothesis properties: for random shapes, hyperparameters, clipping and gradient sequences, every
optimizer's `apply_gradients` follows its NumPy reference (reference.py) step by step, and its
state (`weights`/`weight_names`) has the documented layout."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from keras import backend as K

import catalog
from catalog import f32

NAMES = sorted(entry.name for entry in catalog.rules())
# conftest's per-test fresh graph is not per example: each example clears the session itself.
# No example database: the parametrized tests share one key, and examples saved for one
# optimizer replayed against another's strategies overrun.
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# Each optimizer's own arguments are drawn from its catalog entry's `space`; these every
# optimizer takes from the base class. fused: TF's kernel (where the entry has one; in-place
# updates elsewhere) or the formula graph; both must match.
SHARED = dict(decay=f32(0., 0.1), clipnorm=st.none() | f32(0.1, 5.),
              clipvalue=st.none() | f32(0.1, 3.), fused=st.booleans())


@st.composite
def hyperparameters(draw, name):
    options = draw(st.fixed_dictionaries(dict(catalog.entry(name).space, **SHARED)))
    return {key: value for key, value in options.items() if value is not None}


SHAPES = st.lists(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
                  min_size=1, max_size=2)


@st.composite
def inputs(draw):
    """Initial parameters and a sequence of 3-6 gradients (one per parameter per step).

    Hypothesis draws the shapes, the step count and a seed; NumPy draws the values from that
    seed (drawing every float through Hypothesis overran its per-example data budget)."""
    shapes = draw(SHAPES)
    steps = draw(st.integers(3, 6))
    rng = np.random.RandomState(draw(st.integers(0, 2 ** 32 - 1)))
    values = lambda shape, bound: rng.uniform(-bound, bound, shape).astype(np.float32)
    return ([values(shape, 2.) for shape in shapes],
            [[values(shape, 3.) for shape in shapes] for _ in range(steps)])


def build(name, options, params):
    """A fresh graph: variables, gradient placeholders and the optimizer's one-step op."""
    K.clear_session()
    variables = [K.variable(p) for p in params]
    placeholders = [tf.placeholder(tf.float32, p.shape) for p in params]
    opt = catalog.make(name, options)
    step = opt.apply_gradients(zip(placeholders, variables))
    return opt, variables, placeholders, step


def close(actual, expected, what, travelled=0.):
    """Within rtol 1e-5 and atol 1e-6, plus 1e-4 of the distance `travelled` so far: float32 bias
    corrections 1 - beta^t lose up to eps32/(1 - beta^t) (~6e-5 at beta = 0.999) of every step."""
    error = np.abs(actual - expected)
    bound = 1e-6 + 1e-5 * np.abs(expected) + 1e-4 * travelled
    assert np.all(error <= bound), '%s: ours %s, reference %s, error %s > %s' % (
        what, actual, expected, error, bound)


@pytest.mark.parametrize('name', NAMES)
@settings(max_examples=15, **SETTINGS)
@given(data=st.data())
def test_apply_gradients_follows_reference(name, data):
    """Each step's parameters, slots (all but the entry's `loose_slots`, see catalog.py),
    `iterations` and scalar state (Nadam's m_schedule) match the NumPy reference fed the same
    gradients."""
    entry = catalog.entry(name)
    options = data.draw(hyperparameters(name), label='options')
    params, grad_sequence = data.draw(inputs(), label='params, gradients')
    opt, variables, placeholders, step = build(name, options, params)
    sess = K.get_session()
    ref = entry.reference(**{k: v for k, v in options.items() if k != 'fused'})
    expected = [p.astype(np.float64) for p in params]
    travelled = [np.zeros(p.shape) for p in params]
    state = dict(zip(opt.weight_names, opt.weights))
    for i, grads in enumerate(grad_sequence):
        sess.run(step, dict(zip(placeholders, grads)))
        before = [p.copy() for p in expected]
        ref.step(expected, grads)
        for variable, value, old, path in zip(variables, expected, before, travelled):
            path += np.abs(value - old)
            close(K.get_value(variable), value, 'step %d, parameter' % i, path)
        for slot in [s for s in opt.slot_names if s not in entry.loose_slots]:
            for variable, value in zip(variables, ref.slots[slot]):
                if catalog.has_slot(entry, options, slot, variable.shape.as_list()):
                    close(K.get_value(state['%s/%s' % (slot, variable.op.name)]), value,
                          'step %d, slot %s' % (i, slot))
        assert K.get_value(opt.iterations) == i + 1
        for scalar in entry.scalars:
            close(K.get_value(getattr(opt, scalar)), getattr(ref, scalar),
                  'step %d, %s' % (i, scalar))


@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_weights_layout(data):
    """`weights` is [iterations] + scalars + one variable per slot and parameter (slot-major),
    each named once in `weight_names`, slots shaped like their parameter (Adafactor: the
    catalog's `slot_applies` says which parameter has which slot)."""
    name = data.draw(st.sampled_from(NAMES), label='optimizer')
    options = data.draw(hyperparameters(name), label='options')
    shapes = data.draw(SHAPES, label='shapes')
    params = [np.zeros(shape, np.float32) for shape in shapes]
    opt, variables, _, _ = build(name, options, params)
    # Slots each optimizer must keep per parameter (SGD: only with momentum; Adam: vhat with
    # amsgrad): the catalog's.
    entry = catalog.entry(name)
    scalars = len(entry.scalars)
    assert tuple(opt.slot_names) == catalog.slots(entry, options)
    assert opt.weight_names[1:1 + scalars] == list(entry.scalars)
    expected = ['%s/%s' % (slot, variable.op.name) for slot in opt.slot_names
                for variable in variables
                if catalog.has_slot(entry, options, slot, variable.shape.as_list())]
    assert opt.weight_names[1 + scalars:] == expected
    assert len(opt.weight_names) == len(opt.weights)
    assert len(set(opt.weight_names)) == len(opt.weight_names)
    assert len(set(opt.weights)) == len(opt.weights)
    assert opt.weights[0] is opt.iterations and opt.weight_names[0] == 'iterations'
    if entry.slot_applies is None:  # slots shaped like their parameter (not Adafactor's)
        shapes = {variable.op.name: K.int_shape(variable) for variable in variables}
        for name, weight in zip(expected, opt.weights[1 + scalars:]):
            assert K.int_shape(weight) == shapes[name.split('/', 1)[1]]
