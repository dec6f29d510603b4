"""The rules run the kernel library (keras_opt_legacy.kernels, issue 20) where they have an op,
and today's path without it.

For every rule of the catalog with ops of the library (its `kernel`) and each of its option
sets of kind 'reference' (the default's too), the update graph of a compiled model

- with the library: writes every parameter and slot with exactly the op types the catalog
  states (the library's, and TF's kernels where they remain), and holds no other library op:
  none of today's fallback ops (ApplyMomentum, ApplyAdagradV2, AssignSub...) writes them;
- with KERAS_OPT_LEGACY_KERNELS=0 (checked at every call): holds no library op at all;

and its 30-step trajectory on the library's ops equals the formula graph's (fused=False) to the
catalog's tolerances (test_reference_match's: 1e-5 relative, 1e-6 absolute; each path also
follows the NumPy reference there). Then the in-place steps that are not rules: the decoupled
decay (KolApplyDecay), AdamW's decay folded into Adam's step (KolApplyAdamW: only where it is
bitwise the decay pass then ApplyAdam, so equal bit for bit to the run without the library),
and the weight averages (KolApplyEma).

The op tests need the library (see test_kernels.library_or_skip: REQUIRE_KERNELS=1 fails them
instead of skipping); the KERAS_OPT_LEGACY_KERNELS=0 checks run always.
"""
import re

import numpy as np
import pytest
import keras
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import kernels
import catalog
import problems
from test_kernels import library_or_skip

STEPS = 30
# test_reference_match's tolerances (the catalog's: each path against the NumPy reference)
RTOL, ATOL = 1e-5, 1e-6


def wiring_cases():
    """Each rule on the library with its default and reference option sets; in the version
    matrix (catalog.MATRIX) one option set per distinct set of ops: the options' arithmetic does
    not depend on the version, the op forms (ref or resource) do."""
    found, seen = [], set()
    for entry in catalog.rules():
        if entry.kernel is None:
            continue
        for option in [catalog.Option('default', entry.default, frozenset())] + \
                [o for o in entry.options if 'reference' in o.kinds]:
            options = dict(option.kwargs)
            ops = catalog.kernel_ops(entry, options)
            if ops is None or (catalog.MATRIX and (entry.name, ops) in seen):
                continue
            seen.add((entry.name, ops))
            found.append(pytest.param(entry, options, id=catalog.case_id(entry, option)))
    return found


CASES = wiring_cases()


# ---- the graph -------------------------------------------------------------------------------

READS = ('Identity', 'ReadVariableOp', 'IsVariableInitialized', 'VarIsInitializedOp')
PASS_THROUGH = ('RefSwitch', 'Switch', 'RefIdentity')  # into a tf.cond branch
RESOURCE_FORMS = [(r'^KolResourceApply', 'KolApply'), (r'^ResourceApply', 'Apply'),
                  (r'^ResourceScatter', 'Scatter'), (r'^Assign(Add|Sub)?VariableOp$', r'Assign\1')]


def ref_form(op_type):
    """The op type of the ref form: 'KolResourceApplyYogi' -> 'KolApplyYogi' (Keras 2.3)."""
    for pattern, replacement in RESOURCE_FORMS:
        op_type = re.sub(pattern, replacement, op_type)
    return op_type


def writers(variable):
    """The types (ref forms) of the ops that take `variable` itself (its ref or resource
    handle, possibly through a tf.cond's switch) other than to read it, its initializer and
    Keras's set_value: what writes it (LAMB's first pass takes the parameter to read it)."""
    own = {variable.initializer}
    assign = getattr(variable, '_assign_op', None)
    if assign is not None:
        own.add(getattr(assign, 'op', assign))
    found, frontier = [], [variable.op.outputs[0]]
    while frontier:
        for op in frontier.pop().consumers():
            if op.type in PASS_THROUGH:
                frontier.extend(op.outputs)
            elif op.type not in READS and op not in own:
                found.append(ref_form(op.type))
    return found


def library_ops(graph):
    return {ref_form(op.type) for op in graph.get_operations() if op.type.startswith('Kol')}


def built(entry, options, **extra):
    """A model compiled with `catalog.make(entry, options)` and its train function built:
    (graph, {state variable: writer op types} for every parameter and slot)."""
    K.clear_session()
    optimizer = catalog.make(entry, catalog.arguments(options), **extra)
    model = problems.compiled(optimizer)
    model._make_train_function()
    state = list(model.trainable_weights) + [
        slot for p in model.trainable_weights for slot in optimizer._slots[p].values()]
    return K.get_session().graph, {v: writers(v) for v in state}


@pytest.mark.parametrize('entry, options', CASES)
def test_the_update_runs_the_library_op_and_none_of_the_fallbacks(entry, options):
    library_or_skip()
    expected = catalog.kernel_ops(entry, options)
    graph, written = built(entry, options)
    assert library_ops(graph) == {t for t in expected if t.startswith('Kol')}
    found = set(t for types in written.values() for t in types)
    assert found == expected - catalog.COMPUTING_OPS, {v.name: w for v, w in written.items()}
    assert all(written.values()), 'a parameter or slot nothing writes'


@pytest.mark.parametrize('entry, options', CASES)
def test_without_the_library_no_library_op_is_built(entry, options, monkeypatch):
    monkeypatch.setenv(kernels.ENV, '0')
    graph, written = built(entry, options)
    assert library_ops(graph) == set()
    assert all(written.values())


@pytest.mark.parametrize('entry, options', CASES)
def test_the_library_path_follows_the_formula_path(entry, options):
    """30 steps on the library's ops and on the formula graph (fused=False): equal to the
    catalog's tolerances, and the weights moved well beyond them."""
    library_or_skip()
    graph, _ = built(entry, options)
    assert library_ops(graph)  # the comparison is of the library's path
    arguments = dict(catalog.arguments(options), lr=options.get('lr', entry.lr))
    on_ops = problems.trajectory(catalog.make(entry, arguments), STEPS)
    K.clear_session()
    formula = problems.trajectory(catalog.make(entry, dict(arguments, fused=False)), STEPS)
    assert np.abs(formula[-1] - problems.flat(problems.initial_weights())).sum() > 1e-2
    np.testing.assert_allclose(on_ops, formula, rtol=RTOL, atol=ATOL)


# ---- the decay, AdamW's one pass, the averages -----------------------------------------------

def trajectory(make, steps=20, constraint=None):
    """The flat weights after each step of `steps` in a fresh graph, and the model."""
    K.clear_session()
    model = problems.mlp(kernel_constraint=constraint)
    model.compile(make(), 'mse')
    batch_of = problems.batches(*problems.data())
    out = []
    for i in range(steps):
        model.train_on_batch(*batch_of(i))
        out.append(problems.flat(model.get_weights()))
    return np.array(out), model


ADAMW_CASES = {  # (options, constrained): the writers of [kernel, bias, kernel, bias]
    'folded': (dict(lr=0.01, weight_decay=0.1), False, [['KolApplyAdamW']] * 4),
    'biases-excluded': (dict(lr=0.01, weight_decay=0.1, exclude_from_weight_decay=['bias']),
                        False, [['KolApplyAdamW'], ['ApplyAdam']] * 2),
    'not-scaled-schedule': (dict(lr=0.01, decay=0.05, scale_by_lr=False, weight_decay=(
        kol.schedules.PiecewiseLinear, [0, 10], [0.1, 0.01])), False, [['KolApplyAdamW']] * 4),
    # constrained: the formula's order (decay after the constrained step, not in place)
    'constrained': (dict(lr=0.01, weight_decay=0.1), True,
                    [['KolApplyAdamW'], ['KolApplyAdamW'], ['Assign', 'AssignSub'],
                     ['KolApplyAdamW']]),
    'amsgrad': (dict(lr=0.01, weight_decay=0.1, amsgrad=True), False,
                [['KolApplyAdamAmsgrad', 'KolApplyDecay']] * 4),
    'lazy': (dict(lr=0.01, weight_decay=0.1, lazy=True), False,
             [['ApplyAdam', 'KolApplyDecay']] * 4),
}


def made(options):
    options = dict(options)
    if isinstance(options.get('weight_decay'), tuple):
        schedule, *args = options['weight_decay']
        options['weight_decay'] = schedule(*args)
    return lambda: kol.AdamW(**options)


@pytest.mark.parametrize('case', sorted(ADAMW_CASES))
def test_adamw_folds_the_decay_where_it_is_bitwise_the_two_passes(case, monkeypatch):
    """Decay and Adam's step as one op (KolApplyAdamW) for an unconstrained parameter that
    decays, with Adam's kernel (no amsgrad, not lazy), any rate and schedule: bit for bit the
    run without the library (the decay pass, ApplyGradientDescent(p, c, p), then ApplyAdam);
    elsewhere the decay pass (KolApplyDecay) and the step as without the fold."""
    library_or_skip()
    options, constrained, expected = ADAMW_CASES[case]
    constraint = keras.constraints.NonNeg() if constrained else None
    ours, model = trajectory(made(options), constraint=constraint)
    assert [sorted(writers(p)) for p in model.trainable_weights] == expected
    monkeypatch.setenv(kernels.ENV, '0')
    without, model = trajectory(made(options), constraint=constraint)
    assert library_ops(K.get_session().graph) == set()
    assert np.abs(without[-1] - problems.flat(problems.initial_weights())).sum() > 0.1
    np.testing.assert_array_equal(ours, without)


def test_adamw_keeps_the_fold_out_of_a_changed_rule():
    """A subclass that changes Adam's rule gets the formula graph (not the kernel), and its
    parameters still decay: first, in place (it declares that its step only subtracts)."""
    library_or_skip()

    class Halved(kol.AdamW):
        _reads_parameters = False

        def _apply(self, p, g, slots, step):
            return super(Halved, self)._apply(p, g, slots, step)
    _, model = trajectory(lambda: Halved(lr=0.01, weight_decay=0.1), steps=1)
    assert [sorted(writers(p)) for p in model.trainable_weights] == \
        [['AssignSub', 'KolApplyDecay']] * 4


@pytest.mark.parametrize('make, expected, without', [
    (lambda: kol.WeightDecay(kol.Adam(0.01), 0.1), ['ApplyAdam', 'KolApplyDecay'],
     ['ApplyAdam', 'ApplyGradientDescent']),
    (lambda: kol.SGDW(0.1, momentum=0.9), ['KolApplyDecay', 'KolApplyKerasMomentum'],
     ['AssignAdd', 'ApplyGradientDescent']),
], ids=['WeightDecay-Adam', 'SGDW-momentum'])
def test_the_decay_pass_is_the_library_decay(make, expected, without, monkeypatch):
    """The decoupled decay in place: KolApplyDecay, bitwise ApplyGradientDescent(p, c, p)."""
    library_or_skip()
    ours, model = trajectory(make)
    assert [sorted(writers(p)) for p in model.trainable_weights] == [expected] * 4
    monkeypatch.setenv(kernels.ENV, '0')
    theirs, model = trajectory(make)
    assert [sorted(writers(p)) for p in model.trainable_weights] == [sorted(without)] * 4
    if expected[0] == 'ApplyAdam':  # the step is the same kernel: the decay alone differs
        np.testing.assert_array_equal(ours, theirs)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('make, start', [
    (lambda: kol.ExponentialMovingAverage(kol.SGD(0.1), decay=0.9), ['Assign']),
    (lambda: kol.StochasticWeightAveraging(kol.SGD(0.1), start=2), []),
], ids=['ExponentialMovingAverage', 'StochasticWeightAveraging'])
def test_the_averages_are_the_library_ema(make, start, monkeypatch):
    """The averages in one pass (KolApplyEma, the formula's rounding); without the library two
    in-place passes (ApplyGradientDescent), an ulp from the formula: equal to 1e-6. (`start`:
    the EMA starts from the parameters, an Assign.)"""
    library_or_skip()
    averages = []
    for disabled in (False, True):
        if disabled:
            monkeypatch.setenv(kernels.ENV, '0')
        _, model = trajectory(make, steps=10)
        optimizer = model.optimizer
        slots = [optimizer._slots[p]['average'] for p in model.trainable_weights]
        steps = ['ApplyGradientDescent', 'ApplyGradientDescent'] if disabled else ['KolApplyEma']
        assert [sorted(writers(a)) for a in slots] == [sorted(start + steps)] * 4
        averages.append(problems.flat(optimizer.average_values()))
    assert not np.array_equal(averages[0], problems.flat(problems.initial_weights()))
    np.testing.assert_allclose(averages[0], averages[1], rtol=0, atol=1e-6)
