"""The one adapter between the package and any optimizer, keras_opt_legacy's or Keras's own
built-ins (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam): how to step it inside a
wrapper, list its state, name that state, and read its learning rate.

A Keras built-in is stepped by running its own `get_updates` with the gradient a wrapper
supplies (set on that one instance, removed in a `finally`) and re-creating its assignments
wherever the wrapper needs them, e.g. inside a `tf.cond` branch. Nothing global stays patched.
"""
import inspect
import weakref

from keras import backend as K
from keras import optimizers as keras_optimizers

from . import compat, ops
from .base import OptimizerBase, PreparedStep, clip_gradients, label, resolve_gradients


def is_ours(optimizer):
    """Whether `optimizer` is one of keras_opt_legacy's (an optimizer or a wrapper)."""
    return isinstance(optimizer, OptimizerBase)


def as_optimizer(optimizer):
    """An optimizer instance from an instance, a name ('adam') or a config, or a clear error."""
    if isinstance(optimizer, keras_optimizers.TFOptimizer):
        raise TypeError('cannot wrap a TFOptimizer (a tf.train optimizer): its state is not '
                        'visible to Keras. Use a keras_opt_legacy or Keras optimizer instead.')
    compat.check_standalone(optimizer)
    if isinstance(optimizer, (str, dict)):
        optimizer = keras_optimizers.get(optimizer)
    if not isinstance(optimizer, keras_optimizers.Optimizer):
        raise TypeError('expected an optimizer (keras_opt_legacy, Keras, a name like "adam" or a '
                        'config), got %r' % (optimizer,))
    return optimizer


def prepare_step(optimizer, grads, params, rate_factors=None):
    """`prepare_step` of any optimizer, with its own clipping applied to `grads` (a list, or a
    function returning it: see `OptimizerBase.prepare_step`); `rate_factors` as there (only
    for an optimizer that `takes_rate_factors`)."""
    rate_factors = {p: k for p, k in (rate_factors or {}).items() if k != 1}
    if rate_factors and not takes_rate_factors(optimizer):
        raise TypeError('%s cannot take a learning rate per parameter' % label(type(optimizer)))
    if is_ours(optimizer):
        extra = {'rate_factors': rate_factors} if rate_factors else {}
        return optimizer.prepare_step(
            lambda: optimizer.clip_gradients(resolve_gradients(grads)), params, **extra)
    return _keras_step(optimizer, grads, params, rate_factors)


def takes_rate_factors(optimizer):
    """Whether `optimizer` can step each parameter with its own learning rate: ours that say
    so (`takes_rate_factors`), and Keras's built-ins (their update re-run with a scaled rate)."""
    if is_ours(optimizer):  # a subclass's own prepare_step may not take them
        return optimizer.takes_rate_factors and \
            'rate_factors' in inspect.signature(optimizer.prepare_step).parameters
    return isinstance(optimizer, compat.keras_builtin_classes())


def step_reads_parameters(optimizer):
    """Whether the step of `optimizer` reads a parameter other than to subtract its step from
    it (see `OptimizerBase.step_reads_parameters`); Keras's built-ins do not."""
    return is_ours(optimizer) and optimizer.step_reads_parameters


def state(optimizer, params=None):
    """`(names, variables)` of all the state of any optimizer once its state is built: ours, or a
    Keras built-in's `weights` plus the counters Keras leaves out (`iterations`, Nadam's
    `m_schedule`), so that a wrapper listing them saves and resumes it exactly."""
    if is_ours(optimizer):
        return list(optimizer.weight_names), list(optimizer.weights)
    if not optimizer.weights:
        return [], []
    names, weights = saved_state(optimizer, params)
    counters = [('iterations', optimizer.iterations)]
    if getattr(optimizer, 'm_schedule', None) is not None:
        counters.append(('m_schedule', optimizer.m_schedule))
    counter_variables = [variable for _, variable in counters]
    rest = [(name, w) for name, w in zip(names, weights)
            if not any(w is variable for variable in counter_variables)]
    return [name for name, _ in counters + rest], [w for _, w in counters + rest]


# The slots of Keras's built-ins that hold squares or maxima of |g| (never negative).
KERAS_NON_NEGATIVE = {'RMSprop': ('accumulator',), 'Adagrad': ('accumulator',),
                      'Adadelta': ('accumulator', 'delta_accumulator'), 'Adam': ('v', 'vhat'),
                      'Adamax': ('u',), 'Nadam': ('v',)}


def non_negative(optimizer, names):
    """Those of the state `names` of `optimizer` that cannot be negative."""
    if is_ours(optimizer):
        return set(names) & optimizer.non_negative_names
    slots = KERAS_NON_NEGATIVE.get(type(optimizer).__name__, ())
    return {name for name in names if name.partition('/')[0] in slots}


def inner_state(optimizer, params):
    """`(names, variables, non-negative names)` of a wrapped optimizer, for `_list_state`."""
    names, variables = state(optimizer, params)
    return names, variables, non_negative(optimizer, names)


def saved_state(optimizer, params):
    """`(names, variables)` of what `model.save` stores for `optimizer`: all of ours; exactly
    a Keras built-in's `weights` (named by its layout)."""
    if is_ours(optimizer):
        return state(optimizer)
    variables = list(optimizer.weights)  # Keras's own layout (`state` adds the counters)
    return weight_names(type(optimizer).__name__, len(variables), params), variables


def weight_names(class_name, count, params):
    """Names of the `count` arrays a Keras built-in `class_name` lists in `weights`, slots named
    after `params` as ours are ('m/dense_1/kernel'); by position if the layout is unknown.
    Arrays saved by the other Keras version are recognised by their count (it always differs)."""
    if params is not None and class_name in compat.KERAS_LAYOUTS:
        for layouts in compat.ALL_KERAS_LAYOUTS:
            counters, groups = layouts[class_name]
            if count == len(counters) + len(groups) * len(params):
                return counters + ['%s/%s' % (group, p.op.name) for group in groups for p in params]
    return ['state_%d' % i for i in range(count)]


_KERAS_RATES = weakref.WeakKeyDictionary()


def rate(optimizer):
    """A tensor: the learning rate `optimizer`'s next update will use (built once per optimizer).

    keras_opt_legacy's optimizers and wrappers know it (`current_rate`); for Keras's built-ins it
    is their lr with legacy decay applied, as their `get_updates` computes it."""
    if hasattr(optimizer, 'current_rate'):
        return optimizer.current_rate()
    if optimizer not in _KERAS_RATES:
        lr = optimizer.lr
        if getattr(optimizer, 'initial_decay', 0) > 0:
            lr = lr * (1. / (1. + optimizer.decay * K.cast(optimizer.iterations,
                                                           K.dtype(optimizer.decay))))
        _KERAS_RATES[optimizer] = lr
    return _KERAS_RATES[optimizer]


def current_learning_rate(optimizer):
    """The learning rate the next update will use, as a float: schedule or legacy decay applied.

    Works on keras_opt_legacy's optimizers and wrappers and on Keras's built-ins; meant for
    logging (a callback may call it every batch: the graph does not grow)."""
    return float(K.get_value(rate(optimizer)))


# ---- Keras's built-ins -----------------------------------------------------------------------

def keras_get_updates(optimizer, grads, params, slots=None):
    """`(updates, slots)`: Keras built-in `optimizer`'s own `get_updates` on the given `grads`.

    Keras's built-ins create their slot variables inside `get_updates` (`K.zeros`), so each call
    makes new ones. Passed the `slots` of a first call, a later call gets those back in the same
    order: its update ops can be built where they are needed (inside a tf.cond, where variables
    must not be created) on the same state."""
    created = []
    original_zeros = K.zeros

    def zeros(*args, **kwargs):
        created.append(original_zeros(*args, **kwargs) if slots is None else slots[len(created)])
        return created[-1]
    optimizer.get_gradients = lambda loss, params: grads  # this instance, this call only
    K.zeros = zeros
    try:
        updates = optimizer.get_updates(loss=None, params=params)
    finally:
        K.zeros = original_zeros
        del optimizer.get_gradients
    if slots is not None and len(created) != len(slots):
        raise RuntimeError('%s created %d slots on a second get_updates, %d on the first'
                           % (type(optimizer).__name__, len(created), len(slots)))
    return updates, created


def _keras_step(optimizer, grads, params, rate_factors=None):
    def clipped():
        return clip_gradients(resolve_gradients(grads), getattr(optimizer, 'clipnorm', None),
                              getattr(optimizer, 'clipvalue', None))
    # This first call creates Keras's slots, outside any control flow; its ops never run.
    first, slots = keras_get_updates(optimizer, clipped(), params)
    # The parameter each update belongs to (None: a counter), by position: inside a tf.cond
    # branch an assignment's target is a Switch of the variable, not the variable.
    owners = [None] * len(first)
    if rate_factors:
        by_name = _slot_owners(optimizer, slots, params)
        owners = [by_name.get(_variable_name(_assignment(u, optimizer)[1])) for u in first]
    factors = sorted(set(rate_factors.values()) | {1.}) if rate_factors else [1.]

    def build():
        # Keras's update ops again, here (in a wrapper's tf.cond branch, they run only when it
        # applies an update), on the same slots. Its assignments re-created in the package's
        # order (`ops.in_order`): all new values first (a variable may be read in several
        # places), and counters last (Keras 2.2.4 races reading `iterations` against its
        # increment). With rate factors, its update is built once per factor with the rate
        # scaled, and each parameter (and its slots) takes the one of its own factor; the
        # counters are taken once.
        gradients = clipped()
        assignments = []
        for factor in factors:
            with compat.scaled_learning_rate(optimizer, factor):
                updates, _ = keras_get_updates(optimizer, gradients, params, slots)
            if len(updates) != len(owners):
                raise RuntimeError('%s built %d updates, %d on the first call'
                                   % (type(optimizer).__name__, len(updates), len(owners)))
            assignments += [_assignment(update, optimizer) for update, owner
                            in zip(updates, owners)
                            if (rate_factors or {}).get(owner, 1.) == factor]
        return ops.in_order(
            [value for _, _, value, _ in assignments],
            [(lambda a=a: a[0](a[1], a[2])) for a in assignments if not a[3]],
            [(lambda a=a: a[0](a[1], a[2])) for a in assignments if a[3]])
    return PreparedStep(build)


def _variable_name(target):
    return target.op.name  # a ref variable's tensor, a resource variable's handle, a variable


def _slot_owners(optimizer, slots, params):
    """{variable name: parameter} of the parameters and of the slots Keras's built-in
    `optimizer` created for them: one group of slots after another, each in parameter order."""
    if len(slots) % len(params):
        raise TypeError('cannot step the parameters of %s with rates of their own: %d slots for '
                        '%d parameters' % (type(optimizer).__name__, len(slots), len(params)))
    owners = {_variable_name(s): params[i % len(params)] for i, s in enumerate(slots)}
    owners.update((_variable_name(p), p) for p in params)
    return owners


def _assignment(update, optimizer):
    """`(assign function, target, value, increment?)` of one of Keras's updates."""
    assignment = compat.keras_assignment(update)
    if assignment is None:
        raise TypeError('cannot wrap %s: its update %r is not an assignment'
                        % (type(optimizer).__name__, update))
    return assignment
