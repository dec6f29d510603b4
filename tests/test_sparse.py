"""Sparse gradients (issue 19): an Embedding's gradient is a tf.IndexedSlices.

The model (sparse_problems.py): Embedding(24, 4) looked up 80 times per batch of 16 (13-14
distinct ids; rows 5, 10 and 12-16 in some batches only, rows 17-23 in none), next to a Dense
branch.

- Every rule of the catalog, and the variants that change its sparse path, gives with the
  IndexedSlices gradient what the same optimizer gives fed the dense form of that gradient
  (Keras 2.2.4's tf.convert_to_tensor): bitwise, weights and optimizer state at every step;
  Adagrad to float rounding only (see ROUNDING). Clipping, legacy decay, schedules and a
  constrained table too.
- The graph: plain SGD and Adagrad (and every lazy=True rule) never build or run a dense,
  table-sized form of the gradient: only scatter / SparseApply ops touch the table's rows.
  The other rules densify it once (one UnsortedSegmentSum, where Keras's formula converts it
  at each use) and update the table with the kernel library's op, the fused kernel or in
  place.
- lazy=True: Adam equals tf.contrib.opt.LazyAdamOptimizer (within 1e-6, 30 steps); every
  rule with per-row state (momentum SGD, RMSprop, Adadelta, Adam, Adamax, Nadam, Ftrl, RAdam,
  AdaBound, Yogi, AdaBelief, Lion) follows a NumPy reference that steps only the touched rows
  (the rule's own reference.py / reference_rules.py on those rows), leaves every other row's
  weights and slots bitwise as they were, and is told apart from the dense rule; Adagrad's
  lazy step is its exact one; LAMB, LARS and Adafactor refuse lazy=True. Ftrl(lazy=True) is
  tf.train.FtrlOptimizer's sparse path (SparseApplyFtrl/V2).
- Wrappers on the embedding model equal their densified runs (GradientAccumulation scatter-
  adds the rows, SkipNonFinite judges the values), and a lazy Adam saves and resumes exactly in
  a fresh process.
"""
import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import kernels, ops, schedules
import catalog
import problems
import reference_rules
import resume
import sparse_problems as sp

STEPS = 6
BATCHES = problems.batches(*problems.data())  # 4 batches of 16, cycling
TABLE_SHAPE = (sp.ROWS, sp.WIDTH)
NEVER = np.setdiff1d(np.arange(sp.ROWS), sp.touched(problems.data()[0]))  # rows no batch touches

# Not bitwise, and why. TF's dense ApplyAdagradV2 runs Eigen's vectorized sqrt, which is not
# correctly rounded (tf.sqrt on a float32 vector differs from NumPy's in about 40% of the
# values); SparseApplyAdagradV2 on 4-wide rows takes the scalar, exact sqrt. fused=False: the
# formula's tf.sqrt over the gathered rows vs over the whole table vectorizes different
# elements. Either way about 1 ulp of a step per step: allowed 1e-6 absolute (weights ~1).
# RMSprop and Adadelta, whose rows without gradient only scale their slots, take the same
# route (every slot row scaled, the touched rows by the formula), against the dense kernel.
# Momentum SGD scales its slot in place as m - (1 - momentum)*m (no in-place kernel computes
# momentum*m): an ulp of m per step.
ROUNDING = {'Adagrad': 1e-6, 'RMSprop': 1e-6, 'Adadelta': 1e-6, 'SGD-momentum': 1e-6}


def is_row_wise(entry):
    return entry.cls.row_wise


# ---- running --------------------------------------------------------------------------------

def trained(make, steps=STEPS, dense=False, batch_of=BATCHES, **model_kwargs):
    """The model trained with `make()` (fed the densified gradient if `dense`), in a fresh
    graph: (weights after each step [steps, arrays], flat optimizer state after each step,
    model)."""
    K.clear_session()
    optimizer = make()
    if dense:
        sp.densified(optimizer)
    model = sp.compiled(optimizer, **model_kwargs)
    weights, states = [], []
    for i in range(steps):
        model.train_on_batch(*batch_of(i))
        weights.append(model.get_weights())
        state = [] if isinstance(optimizer, keras.optimizers.TFOptimizer) else \
            K.batch_get_value(optimizer.weights)
        states.append(np.concatenate([np.ravel(s).astype(np.float64) for s in state] + [[]]))
    return weights, np.array(states), model


def flat_steps(weights):
    return np.array([problems.flat(w) for w in weights])


def check_equals_dense(make, tolerance=0., steps=STEPS, **model_kwargs):
    """`make()`'s trajectory with the sparse gradient equals the densified one: bitwise, or
    within `tolerance` (absolute) with the never-touched rows still bitwise. Returns the sparse
    run's flat weights."""
    sparse_w, sparse_s, _ = trained(make, steps, **model_kwargs)
    dense_w, dense_s, _ = trained(make, steps, dense=True, **model_kwargs)
    sparse, dense = flat_steps(sparse_w), flat_steps(dense_w)
    # It trains (Lion, Adadelta and the clipped runs slowly: 2e-3 in 6 steps), far beyond
    # `tolerance`.
    moved = np.abs(sparse[-1] - problems.flat(sp.initial_weights())).max()
    assert moved > 1e-3, moved
    if tolerance == 0:
        np.testing.assert_array_equal(sparse, dense)
        np.testing.assert_array_equal(sparse_s, dense_s)
    else:
        np.testing.assert_allclose(sparse, dense, rtol=0, atol=tolerance)
        np.testing.assert_allclose(sparse_s, dense_s, rtol=0, atol=tolerance)
        for s, d in zip(sparse_w, dense_w):
            np.testing.assert_array_equal(s[sp.TABLE][NEVER], d[sp.TABLE][NEVER])
    return sparse


# ---- the model and its data ------------------------------------------------------------------

def test_the_problem_has_duplicates_partly_touched_rows_and_a_sparse_gradient():
    ids = [sp.numpy_ids(BATCHES(i)[0]).ravel() for i in range(4)]
    assert all(len(np.unique(i)) < i.size / 4 for i in ids)  # many repeats in every batch
    sometimes = set.union(*map(set, ids)) - set.intersection(*map(set, ids))
    assert len(sometimes) >= 5 and len(NEVER) >= 4
    model = sp.model()
    grads = K.gradients(K.mean(model.output), model.trainable_weights)
    assert isinstance(grads[sp.TABLE], tf.IndexedSlices)
    assert not any(isinstance(g, tf.IndexedSlices) for g in grads[1:])
    # The NumPy gradients (used by the lazy references below) are the model's.
    model.compile('sgd', 'mse')
    xb, yb = BATCHES(0)
    theirs = K.get_session().run(
        [tf.convert_to_tensor(g) for g in K.gradients(model.total_loss,
                                                      model.trainable_weights)],
        {model.inputs[0]: xb, model.targets[0]: yb, model.sample_weights[0]: np.ones(16)})
    ours, rows = sp.numpy_gradients(sp.initial_weights(), xb, yb)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(rows, np.flatnonzero(np.abs(theirs[sp.TABLE]).sum(axis=1)))


# ---- exact: every rule equals its dense update -----------------------------------------------

# Every rule with its default options and the entry's learning rate, and the variants that take
# another sparse path (momentum SGD is not row-exact; fused=False builds the rows' formula).
VARIANTS = [('SGD', dict(momentum=0.9)), ('SGD', dict(momentum=0.9, nesterov=True)),
            ('SGD', dict(fused=False)), ('Adagrad', dict(fused=False)),
            ('Adam', dict(amsgrad=True)), ('Adam', dict(fused=False)),
            ('Ftrl', dict(l1_regularization_strength=0.01, l2_regularization_strength=0.01,
                          l2_shrinkage_regularization_strength=0.01))]
EXACT_CASES = [pytest.param(e.name, {'lr': e.lr}, id=e.name) for e in catalog.rules()] + [
    pytest.param(name, dict(options, lr=catalog.entry(name).lr),
                 id='%s-%s' % (name, ','.join('%s=%s' % kv for kv in sorted(options.items()))))
    for name, options in VARIANTS]


def tolerance(name, options):
    """The ROUNDING allowed to the rule `name` with `options` (0: bitwise)."""
    return ROUNDING.get(name + ('-momentum' if options.get('momentum') else ''), 0.)


@pytest.mark.parametrize('name, options', EXACT_CASES)
def test_sparse_gradient_equals_the_dense_update(name, options):
    check_equals_dense(lambda: catalog.make(name, options), tolerance(name, options))


def _option_case(name, options, make=None):
    """A case of `name` (its entry's lr) with `options`, or built by `make`."""
    make = make or (lambda: catalog.make(name, dict(options, lr=catalog.entry(name).lr)))
    return pytest.param(make, tolerance(name, options), id='%s-%s' % (name, '-'.join(
        '%s=%s' % kv for kv in sorted(options.items()))))


# The global norm (rows summed first, then squared: as the dense form), clipvalue on the values,
# legacy decay and a schedule on the step counter.
OPTION_CASES = [
    _option_case('SGD', {'clipnorm': 0.02}), _option_case('SGD', {'clipvalue': 0.003}),
    _option_case('Adagrad', {'clipvalue': 0.003}), _option_case('Adagrad', {'decay': 0.2}),
    _option_case('Adam', {'clipnorm': 0.02}), _option_case('Adam', {'decay': 0.2}),
    _option_case('SGD', {'momentum': 0.9, 'clipnorm': 0.02}),
    _option_case('SGD', {'lr': 'PiecewiseConstantDecay'}, lambda: kol.SGD(
        schedules.PiecewiseConstantDecay([2], [0.2, 0.05]))),
    _option_case('Adagrad', {'lr': 'Warmup(CosineDecay)'}, lambda: kol.Adagrad(
        schedules.Warmup(schedules.CosineDecay(0.1, 10), warmup_steps=3)))]


@pytest.mark.parametrize('make, tolerance', OPTION_CASES)
def test_clipping_decay_and_schedules_equal_the_dense_update(make, tolerance):
    check_equals_dense(make, tolerance)


def test_clipping_bites():
    """The clipping cases above clip (else they would prove nothing)."""
    plain = flat_steps(trained(lambda: kol.SGD(0.1))[0])
    for options in ({'clipnorm': 0.02}, {'clipvalue': 0.003}):
        clipped = flat_steps(trained(lambda: kol.SGD(0.1, **options))[0])
        assert np.abs(clipped - plain).max() > 1e-2, options


CONSTRAINED = [('SGD', lambda: kol.SGD(0.1)), ('Adagrad', lambda: kol.Adagrad(0.1)),
               ('Adam-lazy', lambda: kol.Adam(0.01, lazy=True))]


@pytest.mark.parametrize('make', [pytest.param(m, id=i) for i, m in CONSTRAINED])
def test_a_constrained_table_takes_the_dense_step(make):
    """Its constraint sees the whole table, so the step is the dense one (for lazy=True too:
    the dense Adam's)."""
    constraint = keras.constraints.MaxNorm(0.6, axis=1)  # on each row
    name = label(make)
    sparse = check_equals_dense(make, ROUNDING.get(name, 0.), embeddings_constraint=constraint)
    if name == 'Adam':
        dense = flat_steps(trained(lambda: kol.Adam(0.01),
                                   embeddings_constraint=constraint)[0])
        np.testing.assert_array_equal(sparse, dense)
    table = sparse[-1][:sp.ROWS * sp.WIDTH].reshape(TABLE_SHAPE)
    assert np.linalg.norm(table, axis=1).max() <= 0.6 + 1e-6
    assert np.linalg.norm(sp.initial_weights()[sp.TABLE], axis=1).max() > 1.  # it bites


def label(make):
    """The class name of the optimizer `make()` builds ('Adam')."""
    return type(make()).__name__.rsplit('.', 1)[-1]


# ---- the graph -----------------------------------------------------------------------------

def executed(make):
    """The nodes the first train step runs (traced; after grappler): [(type, output shapes,
    graph op or None)], and the model."""
    K.clear_session()
    optimizer = make()
    metadata = tf.RunMetadata()
    model = sp.model()
    model.compile(optimizer, 'mse', run_metadata=metadata,
                  options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE))
    model.train_on_batch(*BATCHES(0))
    graph = K.get_session().graph
    nodes = {}  # name -> (type, output shapes, graph op)
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            name = node.node_name.split(':')[0]  # also listed as 'name:Type' (another stream)
            if name not in nodes:
                try:
                    op = graph.get_operation_by_name(name)
                except (KeyError, ValueError):  # a node grappler made
                    op = None
                label = node.timeline_label
                kind = op.type if op is not None else (
                    label.split(' = ', 1)[1].split('(', 1)[0] if ' = ' in label else name)
                nodes[name] = (kind, [], op)
            nodes[name][1].extend(tuple(d.size for d in output.tensor_description.shape.dim)
                                  for output in node.output)
    return list(nodes.values()), model


PASS_THROUGH = ('Identity', 'RefIdentity', 'Switch', 'RefSwitch')  # reads, and tf.cond's


def source(op):
    """What `op` passes through (a variable read by an Identity, sent into a tf.cond branch)."""
    while op.type in PASS_THROUGH and op.inputs:
        op = op.inputs[0].op
    return op


def dense_work(nodes):
    """The executed nodes with a table-sized output other than variables, their reads, and the
    row updates (Scatter*, SparseApply*): a dense form of the table's gradient, or arithmetic
    on it."""
    def allowed(kind, op):
        return kind == 'VariableV2' or kind.startswith(('Scatter', 'SparseApply')) or (
            kind in PASS_THROUGH and op is not None and source(op).type == 'VariableV2')
    return sorted(kind for kind, shapes, op in nodes
                  if TABLE_SHAPE in shapes and not allowed(kind, op))


def writers(nodes, variable):
    """The types of the executed ops that write `variable`: take its ref as first input
    (possibly through a tf.cond's RefSwitch)."""
    return sorted(kind for kind, _, op in nodes if op is not None and op.inputs and
                  op.inputs[0].dtype._is_ref_dtype and kind not in PASS_THROUGH and
                  source(op.inputs[0].op) is variable.op)


def dense_conversions(graph):
    """The ops in the graph that build the table's dense gradient (UnsortedSegmentSum with the
    table's shape: tf.convert_to_tensor of the IndexedSlices)."""
    return [op for op in graph.get_operations() if op.type == 'UnsortedSegmentSum' and
            tuple(op.outputs[0].shape.as_list()) == TABLE_SHAPE]


DECAY_PASS = 'decay pass'  # in place: the kernel library's op, else TF's gradient descent


def decay_pass():
    return 'KolApplyDecay' if kernels.library() is not None else 'ApplyGradientDescent'


ROW_CASES = [  # (id, optimizer, the ops writing the table)
    ('SGD', lambda: kol.SGD(0.1), ['ScatterSub']),
    ('SGD-plain', lambda: kol.SGD(0.1, fused=False), ['ScatterUpdate']),
    # The decoupled decay of the whole table, in place (in the dense rule too), then the rows.
    ('SGDW', lambda: kol.SGDW(0.1), [DECAY_PASS, 'ScatterSub']),
    ('Adagrad', lambda: kol.Adagrad(0.1), ['SparseApplyAdagradV2']),
    ('Adagrad-plain', lambda: kol.Adagrad(0.1, fused=False), ['ScatterUpdate']),
    ('Adam-lazy', lambda: kol.Adam(0.01, lazy=True), ['ScatterUpdate']),
    ('RMSprop-lazy', lambda: kol.RMSprop(lazy=True), ['ScatterUpdate']),
    ('SGD-momentum-lazy', lambda: kol.SGD(0.1, momentum=0.9, lazy=True), ['ScatterUpdate']),
    ('Ftrl-lazy', lambda: kol.Ftrl(0.5, lazy=True), ['ScatterUpdate']),
]


@pytest.mark.parametrize('make, written', [pytest.param(m, w, id=i) for i, m, w in ROW_CASES])
def test_row_updates_never_densify_the_gradient(make, written):
    written = sorted(decay_pass() if kind == DECAY_PASS else kind for kind in written)
    nodes, model = executed(make)
    assert writers(nodes, model.trainable_weights[sp.TABLE]) == written
    assert dense_work(nodes) == [kind for kind in written if not kind.startswith(
        ('Scatter', 'SparseApply'))]
    assert dense_conversions(K.get_session().graph) == []


def test_the_graph_check_sees_keras_densifying():
    """The check above can fail: Keras's SGD converts the gradient and computes on the table."""
    nodes, _ = executed(lambda: keras.optimizers.SGD(0.1))
    assert 'UnsortedSegmentSum' in dense_work(nodes) and 'Assign' in dense_work(nodes)
    graph = K.get_session().graph
    executed(lambda: keras.optimizers.Adam())
    assert len(dense_conversions(K.get_session().graph)) == 2  # at each use of g in its formula
    assert len(dense_conversions(graph)) == 1


@pytest.mark.parametrize('make, slots', [(lambda: kol.RMSprop(0.01), 1), (lambda: kol.Adadelta(1.), 2)],
                         ids=['RMSprop', 'Adadelta'])
def test_slot_scaling_rules_never_densify_the_gradient(make, slots):
    """Rows without gradient only scale their slots (a <- rho*a) and keep p: each slot scaled
    as a whole, in place (one ApplyGradientDescent), the touched rows written; no dense
    gradient."""
    nodes, model = executed(make)
    assert writers(nodes, model.trainable_weights[sp.TABLE]) == ['ScatterUpdate']
    assert dense_work(nodes) == ['ApplyGradientDescent'] * slots
    assert dense_conversions(K.get_session().graph) == []


def test_momentum_sgd_never_densifies_the_gradient():
    """m <- momentum*m on every row, m -= lr*g on the touched rows, p += m: no dense gradient."""
    for nesterov in (False, True):
        nodes, model = executed(lambda: kol.SGD(0.1, momentum=0.9, nesterov=nesterov))
        assert dense_conversions(K.get_session().graph) == []
        written = writers(nodes, model.trainable_weights[sp.TABLE])
        assert written == (['AssignAdd', 'ScatterSub'] if nesterov else ['AssignAdd'])


@pytest.mark.parametrize('name', [e.name for e in catalog.rules() if e.name not in (
    'SGD', 'SGDW', 'Adagrad', 'RMSprop', 'Adadelta')])
def test_the_other_rules_densify_once_and_update_in_place(name):
    """Densified once (one table-sized UnsortedSegmentSum in the graph), then the ops of the
    kernel library that the catalog states, else the fused kernel of the catalog where the rule
    has one, else the in-place update: never an Assign copy of the table."""
    entry = catalog.entry(name)
    nodes, model = executed(lambda: catalog.make(entry, dict(lr=entry.lr)))
    assert len(dense_conversions(K.get_session().graph)) == 1
    table = model.trainable_weights[sp.TABLE]
    written = writers(nodes, table)
    library = catalog.kernel_ops(entry, dict(lr=entry.lr), shape=K.int_shape(table))
    if library is not None and kernels.library() is not None:
        assert written == sorted(library - catalog.COMPUTING_OPS)  # they read the table
        return
    expected = entry.fused or 'AssignSub'
    if name in ('AdamW', 'NadamW'):  # the decoupled decay first, in place
        assert written == sorted([expected, 'ApplyGradientDescent'])
    else:
        assert written == [expected]


# ---- lazy=True ----------------------------------------------------------------------------

class GatedTFOptimizer(keras.optimizers.TFOptimizer):
    """Keras's TFOptimizer with TF's apply_gradients waiting for every gradient and the loss (as
    in test_rules: ungated, an update may write a weight before the forward or backward pass has
    read it). As Keras's, `iterations` counts the batches."""

    def get_updates(self, loss, params):
        grads = ops.after_all([g for g, _ in self.optimizer.compute_gradients(loss, params)],
                              also=[loss])
        with tf.control_dependencies([getattr(g, 'values', g) for g in grads]):
            update = self.optimizer.apply_gradients(list(zip(grads, params)))
        self.updates = [K.update_add(self.iterations, 1), update]
        return self.updates


def relative(ours, theirs):
    """max |ours - theirs| over every step, relative to the largest |weight| of that step."""
    return float((np.abs(ours - theirs) / np.abs(theirs).max(axis=1, keepdims=True)).max())


def test_lazy_adam_is_tf_contrib_lazy_adam():
    """30 steps: ours with lazy=True and tf.contrib.opt.LazyAdamOptimizer (through TFOptimizer,
    gated), epsilon 1e-8 both. Measured: 1.2e-7 relative (TF keeps beta^t as running products,
    ours computes the power). The dense Adam is 6e-2 away."""
    theirs = flat_steps(trained(lambda: GatedTFOptimizer(
        tf.contrib.opt.LazyAdamOptimizer(0.01)), 30)[0])
    ours = flat_steps(trained(lambda: kol.Adam(0.01, epsilon=1e-8, lazy=True), 30)[0])
    dense = flat_steps(trained(lambda: kol.Adam(0.01, epsilon=1e-8), 30)[0])
    assert np.abs(theirs[-1] - theirs[0]).max() > 0.1  # it trains
    assert relative(ours, theirs) <= 1e-6, relative(ours, theirs)
    assert relative(dense, theirs) > 1e-2


# Ftrl's dense rule moves a row without gradient (it recomputes p from linear, which is 0 for
# a row never touched: such rows go to 0); TF's sparse kernels leave it.
FTRL_OPTIONS = [{}, dict(l1_regularization_strength=0.01, l2_regularization_strength=0.01),
                dict(l1_regularization_strength=0.01, l2_regularization_strength=0.01,
                     l2_shrinkage_regularization_strength=0.01)]


@pytest.mark.parametrize('options', FTRL_OPTIONS, ids=['plain', 'l1-l2', 'l1-l2-shrinkage'])
def test_lazy_ftrl_is_tf_ftrl_sparse_path(options):
    """tf.train.FtrlOptimizer applies SparseApplyFtrl (V2 with shrinkage) to the table's
    IndexedSlices (duplicates summed first): ours with lazy=True, 30 steps. Measured: 2e-7."""
    theirs = flat_steps(trained(lambda: GatedTFOptimizer(tf.train.FtrlOptimizer(0.5, **options)),
                                30)[0])
    ours_weights = trained(lambda: kol.Ftrl(0.5, lazy=True, **options), 30)[0]
    dense_weights = trained(lambda: kol.Ftrl(0.5, **options), 30)[0]
    assert np.abs(theirs[-1] - theirs[0]).max() > 0.1
    assert relative(flat_steps(ours_weights), theirs) <= 1e-6
    initial = sp.initial_weights()[sp.TABLE]
    np.testing.assert_array_equal(ours_weights[-1][sp.TABLE][NEVER], initial[NEVER])
    if not options.get('l2_shrinkage_regularization_strength'):
        np.testing.assert_array_equal(dense_weights[-1][sp.TABLE][NEVER], 0.)


class LazyRows(object):
    """A NumPy reference (reference.py / reference_rules.py) stepped with lazy semantics: the
    table's touched rows are stepped by the rule's own `_update` (on those rows of the parameter,
    its gradient and its slots), the other rows and their slots are left as they are; every
    other parameter takes the plain step."""

    def __init__(self, ref):
        self.ref = ref

    def step(self, weights, grads, rows):
        ref, rule = self.ref, self.ref._update
        position = [0]

        def update(p, g, slots, lr, t):
            index, position[0] = position[0], position[0] + 1
            if index != sp.TABLE:
                return rule(p, g, slots, lr, t)
            part = {name: slot[rows].copy() for name, slot in slots.items()}
            new_rows = rule(p[rows], g[rows], part, lr, t)
            for name, slot in slots.items():
                slot[rows] = part[name]
            new_p = p.copy()
            new_p[rows] = new_rows
            return new_p
        ref._update = update
        try:
            ref.step(weights, grads)
        finally:
            del ref._update


NAMES = ['embedding_1/embeddings:0', 'dense_1/kernel:0', 'dense_1/bias:0', 'dense_2/kernel:0',
         'dense_2/bias:0']
# The rules with per-row state whose lazy step differs from the dense one (Adagrad's does
# not: a row without gradient keeps its accumulator and weights in both).
LAZY_RULES = [e.name for e in catalog.rules() if is_row_wise(e) and e.reference is not None and
              e.name not in ('SGD', 'Adagrad', 'SGDW', 'AdamW', 'NadamW')]
LAZY_CASES = [pytest.param(name, {}, id=name) for name in LAZY_RULES] + [
    pytest.param('SGD', {'momentum': 0.9}, id='SGD-momentum'),
    pytest.param('SGD', {'momentum': 0.9, 'nesterov': True}, id='SGD-nesterov'),
    pytest.param('Adam', {'amsgrad': True}, id='Adam-amsgrad'),
    pytest.param('Adam', {'fused': False}, id='Adam-plain'),
    # The global norm over the dense parameters and the table's (deduplicated) rows.
    pytest.param('Adam', {'clipnorm': 0.02}, id='Adam-clipnorm'),
    pytest.param('RMSprop', {'decay': 0.2, 'clipvalue': 0.003}, id='RMSprop-decay-clipvalue')]
LAZY_STEPS = 12


def table_state(optimizer):
    """{slot name: variable} of the table ('m/embedding_1/embeddings' -> 'm')."""
    return {n.split('/', 1)[0]: w for n, w in zip(optimizer.weight_names, optimizer.weights)
            if n.endswith('/embedding_1/embeddings')}


@pytest.mark.parametrize('name, options', LAZY_CASES)
def test_lazy_rule_steps_only_the_touched_rows(name, options):
    """Weights and the table's slots follow the lazy reference (1e-5 relative, as
    test_reference_match) for 12 steps, and not the dense one; the rows a batch does not touch
    keep their weights and slots bitwise."""
    entry = catalog.entry(name)
    arguments = dict(options, lr=entry.lr)
    optimizer = catalog.make(entry, dict(arguments, lazy=True))
    model = sp.compiled(optimizer)
    model._make_train_function()  # the slots exist from here on
    slots = table_state(optimizer)
    assert sorted(slots) == sorted(catalog.slots(entry, arguments))
    reference_arguments = {k: v for k, v in arguments.items() if k != 'fused'}
    if issubclass(entry.reference, reference_rules.NamedReference):
        reference_arguments['names'] = NAMES
    lazy = LazyRows(entry.reference(**reference_arguments))
    dense = entry.reference(**reference_arguments)
    lazy_weights = [w.astype(np.float64) for w in sp.initial_weights()]
    dense_weights = [w.astype(np.float64) for w in sp.initial_weights()]

    def values(weights, ref):  # the weights, then the table's slots (in `slots` order)
        return problems.flat(weights + [ref.slots[n][sp.TABLE] for n in sorted(slots)])
    apart = 0.
    for i in range(LAZY_STEPS):
        x, y = BATCHES(i)
        before, state_before = model.get_weights(), K.batch_get_value(list(slots.values()))
        model.train_on_batch(x, y)
        grads, rows = sp.numpy_gradients(lazy_weights, x, y)
        lazy.step(lazy_weights, grads, rows)
        dense.step(dense_weights, sp.numpy_gradients(dense_weights, x, y)[0])
        ours = problems.flat(model.get_weights() + [K.get_value(slots[n]) for n in sorted(slots)])
        np.testing.assert_allclose(ours, values(lazy_weights, lazy.ref), rtol=1e-5, atol=1e-6,
                                   err_msg='step %d' % i)
        expected = values(dense_weights, dense)
        apart = max(apart, (np.abs(ours - expected) / (1e-6 + 1e-5 * np.abs(expected))).max())
        # The rows without gradient: weights and state bitwise as before.
        untouched = np.setdiff1d(np.arange(sp.ROWS), rows)
        np.testing.assert_array_equal(model.get_weights()[sp.TABLE][untouched],
                                      before[sp.TABLE][untouched])
        for old, new in zip(state_before, K.batch_get_value(list(slots.values()))):
            np.testing.assert_array_equal(new[untouched], old[untouched])
    # The dense reference is outside that tolerance (by this factor at least).
    assert apart > 10, apart


def test_lazy_adagrad_is_the_exact_path():
    """Adagrad's rows without gradient do not move in the dense rule: lazy=True changes nothing."""
    lazy = flat_steps(trained(lambda: kol.Adagrad(0.1, lazy=True))[0])
    np.testing.assert_array_equal(lazy, flat_steps(trained(lambda: kol.Adagrad(0.1))[0]))


@pytest.mark.parametrize('name', [e.name for e in catalog.rules() if not is_row_wise(e)])
def test_rules_with_norms_or_means_refuse_lazy(name):
    with pytest.raises(ValueError, match='cannot update lazily'):
        catalog.make(name, {'lazy': True})


def test_lazy_is_in_the_config_only_when_set():
    assert kol.Adam(lazy=True).get_config()['lazy'] is True
    assert 'lazy' not in kol.Adam().get_config()
    again = kol.Adam.from_config(kol.Adam(lazy=True).get_config())
    assert again.lazy is True


# ---- wrappers -------------------------------------------------------------------------------

WRAPPED = [
    ('accumulation-sgd', lambda: kol.GradientAccumulation(kol.SGD(0.1), 3), 0.),
    ('accumulation-adam', lambda: kol.GradientAccumulation(kol.Adam(0.01), 3), 0.),
    ('skip-sgd', lambda: kol.SkipNonFinite(kol.SGD(0.1)), 0.),
    ('skip-adam', lambda: kol.SkipNonFinite(kol.Adam(0.01)), 0.),
    ('decay-sgd', lambda: kol.WeightDecay(kol.SGD(0.1), 0.1), 0.),
    ('decay-adam', lambda: kol.WeightDecay(kol.Adam(0.01), 0.1, exclude=['bias']), 0.),
    ('decay-adagrad', lambda: kol.WeightDecay(kol.Adagrad(0.1), 0.1, scale_by_lr=False),
     ROUNDING['Adagrad']),
    ('multipliers-sgd', lambda: kol.LearningRateMultipliers(kol.SGD(0.1),
                                                            {'embedding': 0.5}), 0.),
    ('multipliers-adagrad', lambda: kol.LearningRateMultipliers(
        kol.Adagrad(0.1, decay=0.1), {'embedding': 3., 'dense_2/': 0.5}), ROUNDING['Adagrad']),
    ('multipliers-adam', lambda: kol.LearningRateMultipliers(kol.Adam(0.01),
                                                             {'embedding': 0.5}), 0.),
    ('ema-sgd', lambda: kol.ExponentialMovingAverage(kol.SGD(0.1), decay=0.8), 0.),
    ('swa-adam', lambda: kol.StochasticWeightAveraging(kol.Adam(0.01), start=2), 0.),
    ('lookahead-sgd', lambda: kol.Lookahead(kol.SGD(0.1), sync_period=2), 0.),
    ('skip-accumulation-adagrad', lambda: kol.SkipNonFinite(kol.GradientAccumulation(
        kol.Adagrad(0.1), 2)), 0.),
]


@pytest.mark.parametrize('make, tolerance', [pytest.param(m, t, id=i) for i, m, t in WRAPPED])
def test_wrappers_equal_the_dense_update(make, tolerance):
    check_equals_dense(make, tolerance, steps=7)


def test_accumulation_scatter_adds_the_rows():
    """On a batch that only accumulates: a ScatterAdd into the table's accumulator, and no
    table-sized work (the mean of the update batch is dense, as the dense form's)."""
    nodes, model = executed(lambda: kol.GradientAccumulation(kol.SGD(0.1), 3))
    accumulator = [w for n, w in zip(model.optimizer.weight_names, model.optimizer.weights)
                   if n == 'accumulator/embedding_1/embeddings'][0]
    assert writers(nodes, accumulator) == ['ScatterAdd']
    assert dense_work(nodes) == []


def test_skip_non_finite_judges_the_rows():
    """A NaN in the IndexedSlices' values skips the whole step (the dense parameter too); a
    finite one is applied to its rows only, duplicates summed."""
    table = K.variable(np.ones(TABLE_SHAPE, 'float32'))
    other = K.variable(np.ones(3, 'float32'))
    values = tf.placeholder('float32', (3, sp.WIDTH))
    sparse = tf.IndexedSlices(values, tf.constant([1, 5, 1]), tf.constant(TABLE_SHAPE))
    optimizer = kol.SkipNonFinite(kol.SGD(0.5))
    step = optimizer.apply_gradients([(sparse, table), (tf.ones(3), other)])
    session = K.get_session()
    session.run(step, {values: [[1, np.nan, 1, 1], [1] * 4, [1] * 4]})
    np.testing.assert_array_equal(K.get_value(table), 1.)
    np.testing.assert_array_equal(K.get_value(other), 1.)
    assert K.get_value(optimizer.skipped) == 1
    session.run(step, {values: [[1, 2, 3, 4], [1] * 4, [1] * 4]})
    expected = np.ones(TABLE_SHAPE, 'float32')
    expected[1] -= 0.5 * np.array([2, 3, 4, 5], 'float32')
    expected[5] -= 0.5
    np.testing.assert_array_equal(K.get_value(table), expected)
    np.testing.assert_array_equal(K.get_value(other), 0.5)


def test_skip_non_finite_skips_a_nan_batch_on_the_embedding_model():
    def batch_of(i):
        x, y = BATCHES(i)
        return (x, np.full_like(y, np.nan)) if i == 2 else (x, y)
    for lazy in (False, True):
        def make():
            return kol.SkipNonFinite(kol.Adam(0.01, lazy=lazy))
        weights, _, model = trained(make, 5, batch_of=batch_of)
        assert K.get_value(model.optimizer.skipped) == 1
        assert K.get_value(model.optimizer.optimizer.iterations) == 4
        np.testing.assert_array_equal(problems.flat(weights[2]), problems.flat(weights[1]))
        assert np.all(np.isfinite(problems.flat(weights[-1])))
        if not lazy:
            dense_weights = trained(make, 5, dense=True, batch_of=batch_of)[0]
            np.testing.assert_array_equal(flat_steps(weights), flat_steps(dense_weights))


def test_accumulation_of_a_lazy_rule_applies_the_dense_mean():
    """GradientAccumulation hands its inner optimizer the dense mean of the accumulated
    gradients: a lazy inner rule then takes the dense step (documented here, as measured)."""
    lazy = flat_steps(trained(lambda: kol.GradientAccumulation(kol.Adam(0.01, lazy=True), 2),
                              8)[0])
    dense = flat_steps(trained(lambda: kol.GradientAccumulation(kol.Adam(0.01), 2), 8)[0])
    np.testing.assert_array_equal(lazy, dense)


# ---- saving and resuming ----------------------------------------------------------------------

def test_lazy_adam_saves_and_resumes_in_a_fresh_process(tmp_path):
    """kol.save_model after 5 batches; the next 7 here and, from the file, in a fresh process
    (resume.py, which loads with kol.load_model): bit for bit. The loaded optimizer is still
    lazy: from the same state, the dense Adam continues elsewhere."""
    path = str(tmp_path / 'model.h5')
    batch_of = resume.batches()
    model = sp.compiled(kol.Adam(0.01, lazy=True))
    resume.train(model, 0, 5, batch_of)
    kol.save_model(model, path)
    here = resume.train(model, 5, 7, batch_of)
    (there,), _ = resume.in_fresh_process(
        [dict(do='resume', path=path, start=5, steps=7, load='kol')], str(tmp_path))
    assert there.optimizer == here.optimizer
    np.testing.assert_array_equal(there.weights, here.weights)
    config = model.optimizer.get_config()
    K.clear_session()
    again = kol.load_model(path)
    assert again.optimizer.get_config() == config and config['lazy'] is True
    state = again.optimizer.get_weights()
    del config['lazy']
    again.compile(kol.Adam.from_config(config), 'mse')  # the same state, not lazy
    again._make_train_function()
    again.optimizer.set_weights(state)
    dense = resume.train(again, 5, 7, batch_of)
    assert np.abs(dense.weights - here.weights).max() > 1e-4
