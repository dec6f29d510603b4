"""The ordering primitives: the one home of how updates are sequenced in the graph.

Keras variables are TF1 ref variables: an assign writes into the buffer that other ops read
through `W/read`, and nothing orders two ops unless the graph says so. Every update the package
builds follows one rule, written here once:

1. every new value is computed (`after_all`) -- so no assign can change what a read sees;
2. then the copies (`K.update`), then the in-place updates (`plus`/`minus`, fused kernels);
3. the counters last (`count_after`), after every op that reads them.

Clients such as bert4keras and keras-lookahead extend an optimizer by replacing
`keras.backend.update` during `get_updates`. While they do (`keras_update_patched`), every
parameter and slot is assigned through `K.update(variable, new_value)`, the form they intercept.
"""
import weakref
from collections import namedtuple

import tensorflow as tf
from keras import backend as K

from . import kernels
from .compat import fused_kernels

# Keras's own assignments, as imported: a client that patches them is detected by comparison,
# and counters are always incremented with these (a client's gate is meant for values).
_KERAS_UPDATES = (K.update, K.update_add, K.update_sub)
_update, _update_add, _ = _KERAS_UPDATES


def keras_update_patched():
    """Whether `keras.backend.update`/`update_add`/`update_sub` are not Keras's own right now
    (a client library intercepting the assignments of an optimizer's `get_updates`)."""
    return (K.update, K.update_add, K.update_sub) != _KERAS_UPDATES


def after_all(tensors, also=()):
    """`tensors`, each usable only once all of them (and `also`) are computed.

    Gating every update on every gradient (TF's GATE_OP idea, for the whole graph) keeps an
    early assign from changing a later gradient, and gating on the loss keeps the reported loss
    from seeing updated weights. No tensors (a model without trainable weights): none."""
    tensors = list(tensors)
    if not tensors:
        return []
    with tf.control_dependencies(list(also)):
        return tf.tuple(tensors)


def graph_elements(updates):
    """What to wait for to have `updates` done: the ops (and assignments: a resource variable's
    `assign` returns a variable that reads after it), and of a client's `(name, variable,
    value)` tuple (a client that patches `K.update` may return those) its values."""
    found = []
    for update in updates:
        if isinstance(update, (tuple, list)):
            found += [x for x in update if isinstance(x, tf.Tensor)]
        elif update is not None and not isinstance(update, str):
            found.append(update)
    return found


class InPlace(namedtuple('InPlace', 'sign value')):
    """A rule's new value `variable + sign * value`, applied in place (AssignAdd/AssignSub): the
    same float result as assigning `variable + value` (or `- value`), without a temporary the
    size of the variable and the full copy that an Assign makes of it."""

    def apply(self, variable):
        return (tf.assign_add if self.sign > 0 else tf.assign_sub)(variable, self.value)


def plus(value):
    """The new value `variable + value`, applied in place."""
    return InPlace(1, value)


def minus(value):
    """The new value `variable - value`, applied in place."""
    return InPlace(-1, value)


def new_value(variable, update):
    """The tensor a rule's update of `variable` computes (in-place forms spelled out)."""
    if not isinstance(update, InPlace):
        return update
    return variable + update.value if update.sign > 0 else variable - update.value


def in_order(values, first, then=()):
    """Build the ops of the functions `first` once every tensor of `values` is computed, then
    those of `then` after them; all the ops, in that order.

    A value may be an alias of a variable's buffer (grappler may turn an op into an Identity,
    which for a ref variable aliases it until its consumers ran): copies go first, in-place
    updates after them."""
    with tf.control_dependencies(list(values)):
        ops = [build() for build in first]
    with tf.control_dependencies(ops):
        return ops + [build() for build in then]


def assign_all(updates):
    """The ops assigning `updates` -- `[(variable, new value or plus/minus), ...]` -- once every
    new value is computed: copies first, then in-place updates.

    While a client patches `K.update`, every one goes through `K.update(variable, new value)`
    (gated on all values) and its results are returned as they are."""
    if not updates:
        return []
    if keras_update_patched():
        values = after_all([new_value(v, x) for v, x in updates])
        return [K.update(v, x) for (v, _), x in zip(updates, values)]
    copies = [(lambda v=v, x=x: _update(v, x)) for v, x in updates if not isinstance(x, InPlace)]
    in_place = [(lambda v=v, x=x: x.apply(v)) for v, x in updates if isinstance(x, InPlace)]
    return in_order([x.value if isinstance(x, InPlace) else x for _, x in updates],
                    copies, in_place)


def count_after(counter, after, amount=1):
    """The op `counter += amount`, after everything in `after` (ops, or a client's tuples: then
    after the values they hold), so that every read of the counter happens before it."""
    with tf.control_dependencies(graph_elements(after)):
        return _update_add(counter, amount)


def every_kth_update(counter, k, applies, action, after):
    """Count applied updates in `counter` (`applies`: whether this step applies one, None for
    always) and on every k-th run the ops `action()` builds, in a `tf.cond` branch after the ops
    `after`; returns `[action op, counter increment]`. Lookahead's sync, periodic averaging and
    weight averaging are written with it."""
    applies = tf.constant(True) if applies is None else applies
    count = counter + K.cast(applies, 'int64')
    now = tf.logical_and(applies, K.equal(count % k, 0))
    with tf.control_dependencies(list(after)):
        done = tf.cond(now, lambda: tf.group(*action()), tf.no_op)
    with tf.control_dependencies([done]):  # after every read of the counter
        return [done, _update(counter, count)]


def kernel_or(kernel, fallback=None):
    """The op(s) `kernel(k)` builds with `k` = `keras_opt_legacy.kernels.ops()` (an op of the
    package's kernel library: one pass over the elements), or where that returns None (no
    library, KERAS_OPT_LEGACY_KERNELS=0, a GPU, variables of mixed kinds or of another dtype)
    what `fallback()` builds (None without one): the one way a `_fused` tries its kernel
    first. The op takes the step's scalars as inputs, so it runs after they are computed and
    before the counters move (`count_after`), as any update."""
    op = kernel(kernels.ops())
    if op is None and fallback is not None:
        return fallback()
    return op


def descend(variable, rate, x, after=()):
    """The op `variable <- variable - rate * x`, in place and in one pass, after the ops `after`:
    TF's fused ApplyGradientDescent kernel (its `x * rate` rounds as `rate * x`)."""
    with tf.control_dependencies(list(after)):
        return fused_kernels().apply_gradient_descent(variable, rate, x)


def read_after(variable, after):
    """The value of `variable` once the ops `after` have run."""
    with tf.control_dependencies(list(after)):
        return variable.read_value()


def average_in_place(variable, decay, x, exact=True):
    """The op `variable <- decay * variable + (1 - decay) * x`, rounded as that formula: the
    kernel library's `ema` (one pass, no temporary). Without it, `variable <- decay * variable`,
    then `variable - (-(1 - decay)) * x` (negation is exact), with no temporary the size of
    `variable` for the sum; with `exact=False` the scaling is in place too (`variable - (1 -
    decay) * variable`, an ulp from `decay * variable`): no temporary at all, where a rule's
    bitwise Keras arithmetic is not at stake (the weight averages)."""
    def two_passes():
        scaled = _update(variable, decay * variable) if exact else \
            descend(variable, 1. - decay, variable)
        return descend(variable, -(1. - decay), x, after=[scaled])
    return kernel_or(lambda k: k.ema(variable, decay, x), two_passes)


def deduplicate(g):
    """`(values, indices)` of the IndexedSlices `g` with each index once, the values of a
    repeated index summed (as its dense form sums them: the same segment sum)."""
    indices, positions = tf.unique(g.indices)
    values = tf.unsorted_segment_sum(g.values, positions, tf.shape(indices)[0])
    return values, indices


def deduplicated(g):
    """The IndexedSlices `g` with each index once (see `deduplicate`)."""
    values, indices = deduplicate(g)
    return tf.IndexedSlices(values, indices, g.dense_shape)


def scatter_all(updates, indices):
    """The ops writing `updates` -- `[(variable, new rows)]`, rows at `indices` (unique) -- once
    every new value is computed (the rows of a variable may be read for another's value)."""
    values = after_all([x for _, x in updates])
    return [tf.scatter_update(v, indices, x) for (v, _), x in zip(updates, values)]


def constrained(p, value):
    """`value` for the parameter `p`, within `p`'s constraint if it has one."""
    constraint = getattr(p, 'constraint', None)
    return value if constraint is None else constraint(value)


def select(condition, if_true, if_false):
    """Element-wise choice by a scalar boolean (tf.where needs a condition of the value's shape)."""
    return tf.where(tf.fill(tf.shape(if_true), condition), if_true, if_false)


_RESET_OPS = weakref.WeakKeyDictionary()  # owner -> {variable ids: initializer op}


def reinitialize(owner, variables):
    """Run the initializers of `variables` (state of `owner`); the op is built once per set, so
    repeated resets do not grow the graph."""
    ops = _RESET_OPS.setdefault(owner, {})
    key = tuple(id(v) for v in variables)
    if key not in ops:
        ops[key] = tf.variables_initializer(list(variables), name='reset_optimizer')
    K.get_session().run(ops[key])
