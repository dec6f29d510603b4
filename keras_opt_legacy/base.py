"""The base classes: Keras 2's `get_updates` design, with a deterministic step counter and all
state in `self.weights`.

Writing an update rule (see `Optimizer`): declare the per-parameter slots, register the
hyperparameters with `_hyper`/`_flag`, write the rule once in `_apply`, and register the class
(`keras_opt_legacy.register`). The base does the rest: learning rate (constant, legacy decay or
schedule), clipping, constraints, state, ordering (`ops`), config, saving and wrappers. Writing a
wrapper: subclass `wrappers.Wrapper` and implement `prepare_step`.
"""
import contextlib
import inspect
import re
import warnings

import numpy as np
import tensorflow as tf
from keras import backend as K
from keras import optimizers as keras_optimizers
from keras.legacy import interfaces
from keras.utils.generic_utils import get_custom_objects

from . import checks, compat, ops
from .checks import (NON_NEGATIVE, NON_POSITIVE, UNIT_INTERVAL,  # noqa: F401 (v1 names)
                     checked_number)
from .ops import minus, plus  # noqa: F401 (v1 names)

_REGISTRY = {}
_SCOPE_UNSAFE = re.compile(r'[^A-Za-z0-9_.\-]')  # what a TF name scope cannot hold


def register(cls):
    """Register `cls` (an optimizer, wrapper or schedule) so that a saved model loads without
    `custom_objects`; use it as a class decorator.

    Keras saves `optimizer.__class__.__name__` and `keras.optimizers.deserialize` lower-cases any
    name matching a built-in ('Adam' -> 'adam'), so an optimizer serialized as 'Adam' would come
    back as Keras's own Adam: the class is renamed 'keras_opt_legacy.' + its qualified name,
    which cannot collide. Classes defined inside a function register too ('<locals>' becomes
    '_locals_': Keras uses the name as a TF name scope).
    """
    name = 'keras_opt_legacy.' + _SCOPE_UNSAFE.sub('_', cls.__qualname__)
    cls.__name__ = name
    get_custom_objects()[name] = cls
    _REGISTRY[name] = cls
    return cls


def custom_objects():
    """The `custom_objects` dict for `load_model` (not needed once keras_opt_legacy is imported)."""
    return dict(_REGISTRY)


def label(cls):
    """A class's short name, for messages and TF name scopes: 'Adam' for keras_opt_legacy.Adam,
    'NewOptimizer' for a class defined inside a function ('f.<locals>.NewOptimizer'), reduced to
    the characters a TF scope name can hold (and start with)."""
    return _SCOPE_UNSAFE.sub('_', cls.__qualname__.rsplit('.', 1)[-1]).lstrip('_-') or 'Optimizer'


def is_schedule(value):
    """A learning-rate schedule: a callable `schedule(step) -> tensor` with a config."""
    return callable(value) and hasattr(value, 'get_config')


def serialize_schedule(schedule):
    return {'class_name': type(schedule).__name__, 'config': schedule.get_config()}


def deserialize_schedule(config):
    from keras.utils.generic_utils import deserialize_keras_object
    return deserialize_keras_object(config, printable_module_name='learning rate schedule')


def clip_gradients(grads, clipnorm=None, clipvalue=None):
    """Keras 2.2.4's clipping: global-norm clipping, then element-wise clipping.

    The norm is one `add_n`, not Keras's chain of additions: grappler may rewrite a chain with an
    input order that varies between processes (it did for Ftrl's update; see optimizers.Ftrl).
    A sparse gradient (IndexedSlices) is clipped as its dense form would be: its duplicate
    indices summed first, never densified."""
    if not (clipnorm or clipvalue):
        return grads
    grads = [ops.deduplicated(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    if clipnorm:
        norm = K.sqrt(tf.add_n([K.sum(K.square(getattr(g, 'values', g))) for g in grads]))
        grads = [keras_optimizers.clip_norm(g, clipnorm, norm) for g in grads]
    if clipvalue:
        grads = [tf.IndexedSlices(K.clip(g.values, -clipvalue, clipvalue), g.indices,
                                  g.dense_shape) if isinstance(g, tf.IndexedSlices)
                 else K.clip(g, -clipvalue, clipvalue) for g in grads]
    return grads


def resolve_gradients(grads):
    """Gradients given as a list, or as a function returning the list (see prepare_step)."""
    return grads() if callable(grads) else grads


def check_gradients(grads, params=None):
    """Raise Keras's ValueError for a `None` gradient, naming the parameter where known."""
    missing = [i for i, g in enumerate(grads) if g is None]
    if missing:
        names = '' if params is None else ' (%s)' % ', '.join(
            getattr(params[i], 'name', repr(params[i])) for i in missing)
        raise ValueError('An operation has `None` for gradient%s. Please make sure that all of '
                         'your ops have a gradient defined (i.e. are differentiable). Common ops '
                         'without gradient: K.argmax, K.round, K.eval.' % names)


# ---- state names ---------------------------------------------------------------------------
# A state name is 'inner/' * depth + name: 'iterations', 'm/dense_1/kernel', 'inner/m_schedule'.
COUNTERS = ('iterations', 'm_schedule')  # step counters, and Nadam's product over the steps


def split_inner(name):
    """'inner/inner/m/dense_1/kernel' -> ('inner/inner/', 'm/dense_1/kernel')."""
    prefix = ''
    while name[len(prefix):].startswith('inner/'):
        prefix += 'inner/'
    return prefix, name[len(prefix):]


def is_counter(name):
    return split_inner(name)[1] in COUNTERS


COUNTER_LIMIT = 2 ** 63  # int64 counters


def check_state_value(name, value, dtype, non_negative=False, consequence='; nothing was set'):
    """Raise a ValueError naming the state `name` unless `value` can be the value of a variable
    of `dtype`: finite; for an integer variable (a counter) a whole number in [0, 2^63); if
    `non_negative` (squares, maxima of |g|), not negative."""
    value = np.asarray(value)
    problem = None
    if value.dtype.kind == 'f' and not np.all(np.isfinite(value)):
        problem = 'holds NaN or Inf'
    elif np.dtype(dtype).kind in 'iu' and (np.any(value < 0) or np.any(value >= COUNTER_LIMIT)
                                           or np.any(value != np.round(value))):
        problem = 'is a step counter: a whole number in [0, 2^63), got %s' % (value,)
    elif non_negative and np.any(value < 0):
        problem = 'holds squares or maxima: it cannot be negative'
    if problem:
        raise ValueError('state %r %s%s' % (name, problem, consequence))


def reset_state(owner, names, variables, keep_iterations=False):
    """Re-initialize the state `variables` (named `names`) of `owner` in place; with
    `keep_iterations` the counters keep their values. Returns whether there was any (before
    the first training step there is none: a warning says so)."""
    if not variables:
        warnings.warn('%s has no state yet: it is built by the first training step (fit, '
                      'train_on_batch) or apply_gradients; nothing was reset' % label(type(owner)))
        return False
    ops.reinitialize(owner, [v for n, v in zip(names, variables)
                             if not (keep_iterations and is_counter(n))])
    return True


def _unfoldable(value, dtype):
    """The scalar `value` as a tensor that grappler cannot fold into a constant: a slot filled
    from a constant would keep a folded copy of its initial value (a whole table for an
    embedding) in memory for the life of the session."""
    return tf.placeholder_with_default(tf.constant(value, dtype=dtype), ())


class Step(object):
    """Per-step scalars shared by every parameter's update (learning rate, bias corrections...)."""

    def __init__(self, **values):
        self.__dict__.update(values)


class PreparedStep(object):
    """Builds one step's update ops when called; `applies` is a boolean tensor telling whether
    that step changes the parameters (None: every step does) -- gradient accumulation applies
    one step in `steps`, and a wrapper around it counts only those."""

    def __init__(self, build, applies=None):
        self.build, self.applies = build, applies

    def __call__(self):
        return self.build()


class OptimizerBase(keras_optimizers.Optimizer):
    """What keras_opt_legacy's optimizers and wrappers share.

    One protocol builds every update: `prepare_step(grads, params)` creates the state of `params`
    now (variables cannot be created inside control flow) and returns a `PreparedStep` that
    builds the ops applying one step with `grads` (final gradients: already clipped) when called
    -- possibly inside a `tf.cond` branch, which is how wrappers apply an inner optimizer
    conditionally.

    The scaffolding is here: the TF name scope, `iterations` (int64, first in `weights`), the
    per-parameter slots (`slot_names`, `_create_slots`), scalar state (`_add_scalar`), and the
    state listing (`weights`, named in `weight_names`); `set_weights` checks everything before
    assigning anything.

    Optimizers that drive the train function themselves (`needs_inject`: Runge-Kutta methods,
    GradientAccumulation(model_updates='with_update')) build their updates only inside
    `with self.injecting():`, which their `inject(model)` opens; `get_updates` anywhere else
    raises an error saying what to call.
    """

    slot_names = ()  # per-parameter state, in `weights` order
    non_negative_slots = ()  # those that hold squares or maxima: a negative value is corrupt
    needs_inject = False  # whether training needs opt.inject(model) after compile
    # Whether `prepare_step` takes per-parameter `rate_factors` (LearningRateMultipliers).
    takes_rate_factors = False
    # Whether the step reads a parameter other than to subtract its step from it (Ftrl's
    # linear term): decoupled weight decay must then be subtracted after it, not before.
    step_reads_parameters = False
    inject_reason = 'drives the train function itself'  # why, for the error message
    _injecting = False
    _train_outputs = ()  # while injecting: the loss and metrics of the train function being built

    def __init__(self, **kwargs):
        super(OptimizerBase, self).__init__(**kwargs)
        self._slots = {}  # parameter -> {slot name: variable}
        self.non_negative_names = set()  # state names that cannot be negative (set_weights)
        self._scalars = []  # (name, variable): scalar state after `iterations` in `weights`
        self.weight_names = []
        with K.name_scope(label(type(self))) as scope:
            self._scope = scope
            self.iterations = K.variable(0, dtype='int64', name='iterations')

    def prepare_step(self, grads, params, rate_factors=None):
        """Create the state of `params`; return a `PreparedStep` building one step's ops.

        `grads` are the final gradients, or a function returning them, called where they are
        needed: inside a wrapper's branch, work on them is done only when the branch runs.
        `rate_factors` ({parameter: factor}, given by `LearningRateMultipliers`): each such
        parameter takes the step this optimizer would take with its learning rate times the
        factor (`takes_rate_factors` says whether it can)."""
        raise NotImplementedError

    # ---- state -----------------------------------------------------------------------------

    def _add_scalar(self, name, initial_value, dtype=None):
        """Scalar state (Nadam's m_schedule, ...), listed in `weights` right after `iterations`."""
        with tf.name_scope(self._scope):
            variable = K.variable(initial_value, dtype=dtype, name=name)
        self._scalars.append((name, variable))
        return variable

    def _slot_initial_value(self, slot_name):
        return 0.

    def _slot_shape(self, p, slot_name):
        """The shape of the slot `slot_name` of the parameter `p` (its own shape), or None if
        `p` has no such slot (Adafactor keeps factored moments of matrices only)."""
        return K.int_shape(p)

    def _create_slots(self, params):
        """Create the `slot_names` variables of each parameter once (outside control flow).

        An optimizer serves one model: asked for parameters none of which it has state for while
        it has state for others (the same instance compiled into a second model), it refuses --
        the models would share its step counter and `model.save` would store the other's slots.
        Recompiling, and freezing or unfreezing layers, keep some parameters: that works."""
        params = list(params)
        if self._slots and params and not any(p in self._slots for p in params):
            raise ValueError(
                'this %s already holds the state of other parameters (%s, ...): one optimizer '
                'instance serves one model. Give each model its own optimizer (e.g. '
                'keras.optimizers.deserialize(keras.optimizers.serialize(opt)) for a copy).'
                % (label(type(self)), next(iter(self._slots)).name))
        # In the optimizer's own scope, named by the slot alone ('Adam/m_7:0'): `model.save`
        # lists these names in one HDF5 attribute, which Keras must split past 64 KB, and then
        # cannot read back; they are no longer than Keras's own ('training/Adam/Variable_7:0').
        with tf.name_scope(self._scope):
            for p in params:
                if p not in self._slots:
                    shapes = [(name, self._slot_shape(p, name)) for name in self.slot_names]
                    self._slots[p] = {
                        name: K.variable(tf.fill(shape, _unfoldable(
                            self._slot_initial_value(name), p.dtype.base_dtype)),
                            dtype=K.dtype(p), name=name)
                        for name, shape in shapes if shape is not None}
        return params

    def _list_state(self, params, inner=()):
        """`weights` = `iterations`, the scalars, then each slot (in parameter order), then
        `inner`'s `(names, variables, non-negative names)` (a wrapped optimizer's, see
        `builtin.inner_state`; names prefixed with 'inner/')."""
        named = [('iterations', self.iterations)] + self._scalars
        names = [name for name, _ in named]
        self.weights = [variable for _, variable in named]
        self.non_negative_names = set()
        for name in self.slot_names:
            having = [p for p in params if name in self._slots[p]]
            listed = ['%s/%s' % (name, p.op.name) for p in having]
            names += listed
            self.weights += [self._slots[p][name] for p in having]
            if name in self.non_negative_slots:
                self.non_negative_names.update(listed)
        if inner:
            inner_names, inner_weights, inner_non_negative = inner
            names += ['inner/' + name for name in inner_names]
            self.weights += list(inner_weights)
            self.non_negative_names.update('inner/' + name for name in inner_non_negative)
        self.weight_names = names

    def reset(self, keep_iterations=False):
        """Re-initialize all state in place (see `keras_opt_legacy.reset_optimizer`)."""
        return reset_state(self, self.weight_names, self.weights, keep_iterations)

    # ---- building ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def injecting(self, outputs=()):
        """While open, `get_updates` may build the updates of an optimizer that `needs_inject`
        (its `inject(model)` opens it around Keras's train-function construction); `outputs`,
        the loss and metrics of that train function, are `self._train_outputs` meanwhile."""
        self._injecting, self._train_outputs = True, list(outputs)
        try:
            yield
        finally:
            self._injecting, self._train_outputs = False, ()

    def _injected_parts(self, model):
        """For `inject(model)`: Keras's train-function parts (`compat.train_function_parts`) and
        this optimizer's updates, built for `model` as Keras would build them."""
        compat.check_compiled_with(model, self, 'call opt.inject(model)')
        parts = compat.train_function_parts(model)
        with self.injecting(outputs=parts[1]):
            return parts + (compat.training_updates(model),)

    def _check_injecting(self):
        if self.needs_inject and not self._injecting:
            raise RuntimeError(
                '%s %s: call opt.inject(model) after model.compile, and again after every '
                'recompile (compiling drops it), before training. To load a saved model, use '
                'keras_opt_legacy.load_model(path), which injects.'
                % (label(type(self)), self.inject_reason))

    def clip_gradients(self, grads):
        return grads

    def get_gradients(self, loss, params):
        grads = K.gradients(loss, params)
        check_gradients(grads, params)
        return self.clip_gradients(grads)

    @interfaces.legacy_get_updates_support
    def get_updates(self, loss, params):
        self._check_injecting()
        grads = self.get_gradients(loss, params)
        self.updates = self.prepare_step(ops.after_all(grads, also=[loss]), params)()
        return self.updates

    def apply_gradients(self, grads_and_vars, name=None):
        """One op that applies one step per `session.run`, for custom graph-mode loops.

        `grads_and_vars` as in `tf.train.Optimizer` (gradients from `K.gradients` or
        `tf.gradients`); clipnorm/clipvalue apply. The state is created here, once.
        """
        grads_and_vars = list(grads_and_vars)
        if not grads_and_vars:
            raise ValueError('apply_gradients needs at least one (gradient, variable) pair')
        grads = [g for g, _ in grads_and_vars]
        params = [v for _, v in grads_and_vars]
        check_gradients(grads, params)
        grads = ops.after_all(self.clip_gradients(grads))
        self.updates = self.prepare_step(grads, params)()
        return tf.group(*self.updates, name=name or 'apply_gradients')

    def set_weights(self, weights):
        """Set the state from NumPy arrays, validating all of them before assigning any."""
        weights = list(weights)
        if len(weights) != len(self.weights):
            raise ValueError('%s has %d state arrays (%s), got %d; nothing was set'
                             % (label(type(self)), len(self.weights),
                                ', '.join(self.weight_names) or 'none before training',
                                len(weights)))
        for name, variable, value in zip(self.weight_names, self.weights, weights):
            value = np.asarray(value)
            expected = tuple(K.int_shape(variable))
            if value.shape != expected:
                raise ValueError('state %r has shape %s, got shape %s; nothing was set'
                                 % (name, expected, value.shape))
            dtype = np.dtype(K.dtype(variable))
            check_state_value(name, value, dtype, name in self.non_negative_names)
            if not (dtype.kind == 'i' and value.dtype.kind == 'f') and \
                    not np.can_cast(value.dtype, dtype, casting='same_kind'):
                raise ValueError('state %r has dtype %s, got dtype %s; nothing was set'
                                 % (name, dtype, value.dtype))
        K.batch_set_value([(v, np.asarray(w).astype(K.dtype(v)))
                           for v, w in zip(self.weights, weights)])


class ScheduledRate(object):
    """`opt.lr` of an optimizer driven by a schedule: readable, not settable.

    `K.get_value(opt.lr)` gives the current rate and `opt.lr` converts to a tensor (e.g. to log
    it in a metric); `K.set_value` -- what LearningRateScheduler and ReduceLROnPlateau call --
    raises an error before it creates anything."""

    dtype = tf.float32

    def __init__(self, optimizer):
        self._optimizer = optimizer

    @staticmethod
    def explain(optimizer):
        return ('the learning rate of this %s is driven by the schedule %s, evaluated in the graph '
                'at every update, so it cannot be set (by K.set_value, LearningRateScheduler or '
                'ReduceLROnPlateau). Drop that callback, or give the optimizer a constant lr to '
                'drive it from a callback.' % (label(type(optimizer)),
                                               label(type(optimizer._schedule))))

    def eval(self, session=None):
        return self._optimizer.current_rate().eval(session=session)

    @property
    def _assign_placeholder(self):  # K.set_value checks this first: fail before building ops
        raise RuntimeError(self.explain(self._optimizer))

    def assign(self, value):
        raise RuntimeError(self.explain(self._optimizer))


tf.register_tensor_conversion_function(
    ScheduledRate, lambda value, dtype=None, name=None, as_ref=False:
    value._optimizer.current_rate())

# The hooks of a rule that a fused kernel re-implements: a subclass redefining one of them
# without its own `_fused` gets the formula graph (see `Optimizer._kernel_is_current`).
RULE_HOOKS = ('_apply', '_step_values', '_final_updates')


class Optimizer(OptimizerBase):
    """Base class of keras_opt_legacy's update rules (a `keras.optimizers.Optimizer`).

    A rule is a subclass that defines:

    - `slot_names`: its per-parameter state, e.g. `('m', 'v')` (created as zeros;
      `_slot_initial_value(name)` gives another start);
    - `__init__(self, lr=..., <hyperparameters>, **kwargs)` calling `super().__init__(lr=lr,
      **kwargs)`, then `self._hyper(name, value, checks.X, variable=False)` for each number (it
      validates, stores and puts it in `get_config`) and `self._flag(name, value)` for each
      boolean; `self._add_scalar(name, value)` for scalar state (in `weights`);
    - `_apply(self, p, g, slots, step)`: the rule, as `[(variable, new value), ...]` for the
      parameter `p`, its gradient `g` and its slots (`slots['m']`); `step.lr` is the rate of this
      update, `step.t` the 1-based step (float), `step.rate_factor` the parameter's multiplier
      of the rate (`LearningRateMultipliers`; 1 otherwise, and already in `step.lr`). `ops.minus(x)`/`ops.plus(x)` as a new value
      mean `variable - x`/`variable + x`, applied in place;
    - optionally `_step_values(self, lr, t)`: a `Step` of per-update scalars shared by every
      parameter (bias corrections: see `AdamBase`), `_final_updates(self, step)`: scalar state
      assigned after every parameter, and `_fused(self, p, g, slots, step)`: the same rule on
      fused kernels (or None): the op of the package's kernel library first (`ops.kernel_or`),
      else TF's kernels or in-place ops. A subclass that redefines `_apply`, `_step_values` or
      `_final_updates` without its own `_fused` gets the formula graph: an inherited kernel
      would compute the parent's rule. `_reads_parameters = False` declares that the rule reads
      `p` only to subtract its step from it, which lets decoupled weight decay go first, in
      place (undeclared: decay in the formula's order, with a temporary per parameter).

    Then `@keras_opt_legacy.register` the class. `self.weights` (available once
    `get_updates`/`apply_gradients` has built the state) is `[iterations] + scalar state + every
    slot`, slot by slot in `slot_names` order, each slot in parameter order (Keras's `ms + vs`
    layout); `self.weight_names` names each entry. `iterations` counts applied updates; it is
    incremented after every op that reads it, so bias corrections and schedules see a
    deterministic step number.

    `lr` (or `learning_rate`, the Keras 2.3 name) is a number or a schedule
    (`keras_opt_legacy.schedules`); `decay` is Keras's legacy decay; `clipnorm`/`clipvalue` as in
    Keras; `fused=False` always builds the formula graph.
    """

    lr_check = checks.NON_NEGATIVE  # what a constant learning rate must be
    takes_rate_factors = True  # each parameter's step values are built with its own rate
    # Whether `_apply` works row by row (element-wise, given per-step scalars): then a sparse
    # gradient can update the touched rows only (`lazy=True`, or exactly where rows without
    # gradient do not move: `_sparse_is_exact`). Rules with norms or means say False.
    row_wise = True

    def __init__(self, lr=None, decay=0., fused=True, **kwargs):
        learning_rate = kwargs.pop('learning_rate', _MISSING)
        lazy = checks.flag('lazy', kwargs.pop('lazy', False))
        if lazy and not self.row_wise:
            raise ValueError('%s cannot update lazily: its step is not computed row by row (it '
                             'takes norms or means over the parameter)' % label(type(self)))
        allowed = {'clipnorm', 'clipvalue'}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError('Unexpected keyword argument passed to optimizer %s: %s'
                            % (label(type(self)), ', '.join(unknown)))
        lr = self._resolve_learning_rate(lr, learning_rate)
        schedule = lr if is_schedule(lr) else None
        lr = lr if schedule is not None else checked_number('lr', lr, self.lr_check, K.floatx())
        decay = checked_number('decay', decay, dtype=K.floatx())
        if schedule is not None and decay > 0:
            raise ValueError('decay must be 0 when the learning rate is a schedule: a schedule '
                             'already decides the rate at every step')
        fused = checks.flag('fused', fused)
        for name in sorted(kwargs):
            kwargs[name] = checked_number(name, kwargs[name])
        super(Optimizer, self).__init__(**kwargs)
        self._config = {}       # constructor argument -> attribute name, for get_config
        self._variables = set()  # hyperparameters held in K.variables
        self._current_rate = None
        self._schedule = schedule
        self._constructed_lr = None if schedule is not None else lr  # a float: no session read
        if schedule is None:
            self._lr = self._hyper_variable('lr', lr)
            self._guard_rate()
        self.initial_decay = decay
        self.decay = self._hyper_variable('decay', decay)
        self._config['decay'] = 'decay'
        # Use fused kernels (the package's library, TF's) where their arithmetic and state are
        # the Keras formula's.
        self.fused = fused
        self._config['fused'] = 'fused'
        self.lazy = lazy
        if lazy:  # in the config only when set: older configs stay as they were
            self._config['lazy'] = 'lazy'

    def _resolve_learning_rate(self, lr, learning_rate):
        """Accept `lr=` (Keras 2.2) or `learning_rate=` (Keras 2.3, tf.keras), not both: a given
        `learning_rate` replaces `lr` only where `lr` is the constructor's default."""
        if learning_rate is _MISSING:
            return lr
        default = inspect.signature(type(self).__init__).parameters.get('lr')
        is_default = lr is None or isinstance(lr, checks.DefaultRate) or (
            default is not None and lr == default.default)
        if not is_default and lr is not learning_rate:
            raise TypeError('pass the learning rate as lr= or as learning_rate=, not both '
                            '(got lr=%r, learning_rate=%r)' % (lr, learning_rate))
        return learning_rate

    # ---- hyperparameters -------------------------------------------------------------------

    def _hyper_variable(self, name, value):
        with tf.name_scope(self._scope):
            variable = K.variable(value, name=name)
        self._variables.add(name)
        return variable

    def _hyper(self, name, value, check=checks.NON_NEGATIVE, variable=False):
        """Validate and store a numeric hyperparameter (a K.variable if `variable`, as Keras);
        it must also pass as the float type the graph computes in."""
        value = checked_number(name, value, check, K.floatx())
        self._config[name] = name
        return self._hyper_variable(name, value) if variable else value

    def _flag(self, name, value):
        """Validate and store a boolean hyperparameter."""
        value = checks.flag(name, value)
        self._config[name] = name
        return value

    def _epsilon(self, epsilon):
        """`epsilon` (None: K.epsilon()), > 0: the rules divide by a sum it keeps from 0."""
        return self._hyper('epsilon', K.epsilon() if epsilon is None else epsilon,
                           checks.POSITIVE)

    # ---- learning rate ---------------------------------------------------------------------

    def _guard_rate(self):
        """Make `K.set_value(opt.lr, x)` -- what LearningRateScheduler and ReduceLROnPlateau
        call -- refuse a NaN, Inf or out-of-range rate, leaving the rate as it was. K.set_value
        runs the variable's cached `_assign_op` fed through `_assign_placeholder`; these are
        set here to an assignment that asserts the value first."""
        value = tf.placeholder(self._lr.dtype.base_dtype, shape=(), name='set_lr')
        in_range = value > 0 if self.lr_check is checks.POSITIVE else value >= 0
        valid = tf.Assert(tf.logical_and(tf.is_finite(value), in_range),
                          ['the learning rate of %s must be finite and %s; it was not set, got'
                           % (label(type(self)), self.lr_check.requirement), value])
        with tf.control_dependencies([valid]):
            self._lr._assign_op = self._lr.assign(tf.identity(value))
        self._lr._assign_placeholder = value

    @property
    def lr(self):
        """The learning-rate variable (`K.get_value`/`K.set_value` work on it, as in Keras).

        With a schedule it is a read-only `ScheduledRate`: `K.get_value` gives the current rate,
        and setting it (a Keras callback, `K.set_value`) raises an error saying why."""
        if self._schedule is not None:
            return ScheduledRate(self)
        return self._lr

    @lr.setter
    def lr(self, value):
        if self._schedule is not None:
            raise RuntimeError(ScheduledRate.explain(self))
        K.set_value(self._lr, checked_number('lr', value, self.lr_check, K.floatx()))

    learning_rate = lr

    def _learning_rate_at(self, iterations, factor=1.):
        """The rate of the update being built: schedule, or constant with legacy decay; times
        `factor` (a per-parameter multiplier), applied where an optimizer built with `lr *
        factor` would have it."""
        if self._schedule is not None:  # a schedule computes in float32; the variables may not
            lr = K.cast(self._schedule(iterations), K.floatx())
            return lr if factor == 1 else lr * factor
        lr = self._lr if factor == 1 else self._lr * factor
        if self.initial_decay > 0:
            lr = lr * (1. / (1. + self.decay * K.cast(iterations, K.dtype(self.decay))))
        return lr

    def current_rate(self):
        """A tensor: the rate the next update will use (built once, so reading it per batch does
        not grow the graph)."""
        if self._current_rate is None:
            with tf.name_scope(self._scope):
                self._current_rate = self._learning_rate_at(self.iterations)
        return self._current_rate

    # ---- the rule --------------------------------------------------------------------------

    def _step_values(self, lr, t):
        """Per-step scalars for `_apply`; `t` is the 1-based float step number."""
        return Step(lr=lr, t=t)

    def _apply(self, p, g, slots, step):
        """The update rule: `[(variable, new value), ...]` for `p`, its gradient `g` and slots."""
        raise NotImplementedError

    def _fused(self, p, g, slots, step):
        """The same rule built on fused kernels -- the op of the package's kernel library where
        it has one and it can be used (`ops.kernel_or`), else TF's kernels or in-place ops --
        (an op, or a list of ops whose last one updates `p`), or None where there is none."""
        return None

    def _final_updates(self, step):
        """`[(variable, new value), ...]` of scalar state, assigned after every parameter."""
        return []

    @classmethod
    def _rule_declares(cls, name):
        """`name` as declared by the class that wrote the rule: the nearest class (in the MRO)
        defining `name` or a rule hook (`RULE_HOOKS`); None if that class does not define
        `name` (a subclass changed the rule without saying)."""
        for klass in cls.__mro__:
            if klass is Optimizer:
                return None
            if name in vars(klass):
                return vars(klass)[name]
            if any(hook in vars(klass) for hook in RULE_HOOKS):
                return None
        return None

    @classmethod
    def _kernel_is_current(cls):
        """Whether the nearest `_fused` computes this class's rule: no class below the one that
        defines it redefines a rule hook (`RULE_HOOKS`)."""
        return cls._rule_declares('_fused') is not None

    @property
    def step_reads_parameters(self):
        """Declared by each rule (`_reads_parameters`); a rule changed by a subclass that does
        not declare it is assumed to read them."""
        declared = self._rule_declares('_reads_parameters')
        return True if declared is None else declared

    # ---- building the update ---------------------------------------------------------------

    def _assign_all(self, updates, p=None):
        """`ops.assign_all`, with the constraint of `p` applied to its new value."""
        if getattr(p, 'constraint', None) is not None:  # then not in place
            updates = [(v, ops.constrained(p, ops.new_value(v, x)) if v is p else x)
                       for v, x in updates]
        return ops.assign_all(updates)

    def update_ops(self, grads, params, rate_factors=None):
        """Ops that apply one step with `grads` (already clipped) to `params`; a parameter with
        a factor in `rate_factors` takes the step of this rule with its rate times the factor.

        The state must exist (`_create_state`); this only builds ops, so it may be called inside a
        `tf.cond` branch (gradient accumulation, the non-finite guard).
        """
        t = K.cast(self.iterations, K.floatx()) + 1
        steps = {}  # factor -> the step values of that rate

        def step_of(p):
            factor = (rate_factors or {}).get(p, 1.)
            if factor not in steps:
                steps[factor] = self._step_values(
                    self._learning_rate_at(self.iterations, factor), t)
                steps[factor].rate_factor = factor
            return steps[factor]
        step = step_of(None)  # the rule's own: for the shared scalar state (`_final_updates`)
        # Kernels update in place: not for a constraint on the result, a sparse gradient, a
        # subclass's changed rule, or a client that intercepts K.update.
        kernels = self.fused and self._kernel_is_current() and not ops.keras_update_patched()
        updates = []
        for p, g in zip(params, grads):
            if isinstance(g, tf.IndexedSlices):  # an embedding's: the rows its batch looked up
                rows = self._sparse_update(p, g, self._slots[p], step_of(p))
                if rows is not None:
                    updates.extend(rows)
                    continue
                g = tf.convert_to_tensor(g)  # once: then the kernel or the in-place formula
            fusable = kernels and getattr(p, 'constraint', None) is None
            fused = self._fused(p, g, self._slots[p], step_of(p)) if fusable else None
            if fused is None:
                fused = self._assign_all(self._apply(p, g, self._slots[p], step_of(p)), p)
            updates.extend(fused if isinstance(fused, list) else [fused])
        with tf.control_dependencies(ops.graph_elements(updates)):
            final = self._assign_all(self._final_updates(step))
        return updates + final + [ops.count_after(self.iterations, updates + final)]

    def _sparse_is_exact(self):
        """Whether rows without gradient stay as they are in this rule's dense step (plain SGD,
        Adagrad): then a sparse gradient updates only the touched rows, exactly."""
        return False

    def _untouched_rows(self):
        """Where a row without gradient changes only by scaling slots in this rule's dense step
        (RMSprop: a <- rho*a, p stays): `[(slot name, factor)]`; None where it moves otherwise."""
        return None

    def _sparse_update(self, p, g, slots, step):
        """The ops of the step of `p` on the rows of its sparse gradient `g` (IndexedSlices),
        or None to take the dense step (the gradient densified once).

        Rows only where that is exact (`_sparse_is_exact`; `_untouched_rows`: those slots
        scaled as a whole, then the touched rows written) or asked for (`lazy=True`: the touched
        rows' state and weights move, tf.contrib's LazyAdamOptimizer semantics); not for a
        constrained parameter (its constraint sees the whole tensor) nor while a client
        intercepts `K.update`. The rule's own `_apply` computes the rows: gathered, stepped,
        scattered back (duplicate indices summed first, as the dense gradient sums them)."""
        if not self.row_wise or getattr(p, 'constraint', None) is not None or \
                ops.keras_update_patched():
            return None
        own = self._kernel_is_current()  # a subclass's changed rule: its own arithmetic
        scaled = [] if self.lazy or self._sparse_is_exact() else \
            self._untouched_rows() if self.fused and own else None
        if scaled is None:
            return self._sparse_special(p, g, slots, step) if self.fused and own else None
        values, indices = ops.deduplicate(g)
        if self.fused and own and not scaled:
            kernel = self._fused_rows(p, values, indices, slots, step)
            if kernel is not None:
                return [kernel]
        rows = {name: tf.gather(slot, indices) for name, slot in slots.items()}
        p_rows = tf.gather(p, indices)
        owners = dict([(id(p_rows), p)] + [(id(rows[name]), slots[name]) for name in rows])
        changes = [(owners[id(r)], ops.new_value(r, x))
                   for r, x in self._apply(p_rows, values, rows, step)]
        new_rows = ops.after_all([x for _, x in changes])
        with tf.control_dependencies(new_rows):  # the rows read, then every row scaled: in
            # place, s - (1 - factor)*s (an ulp from factor*s; no table-sized temporary)
            scalings = [ops.descend(slots[name], 1. - factor, slots[name])
                        for name, factor in scaled]
        with tf.control_dependencies(scalings):
            return scalings + ops.scatter_all([(v, x) for (v, _), x in zip(changes, new_rows)],
                                              indices)

    def _sparse_special(self, p, g, slots, step):
        """A rule's own exact sparse step where rows without gradient move otherwise (momentum
        SGD: p += momentum*m everywhere), or None: the dense step."""
        return None

    def _fused_rows(self, p, values, indices, slots, step):
        """A TF sparse kernel for the rows (deduplicated `indices`), or None."""
        return None

    def _create_state(self, params):
        """Create the slots of `params` once and list all state in `weights`.

        Called again with the same parameters (a recompile), it reuses the slots: the graph does
        not grow and the state is kept; use `reset()` to start afresh.
        """
        params = self._create_slots(params)
        self._list_state(params)

    def prepare_step(self, grads, params, rate_factors=None):
        self._create_state(params)
        return PreparedStep(lambda: self.update_ops(resolve_gradients(grads), params,
                                                    rate_factors))

    def clip_gradients(self, grads):
        return clip_gradients(grads, getattr(self, 'clipnorm', None),
                              getattr(self, 'clipvalue', None))

    # ---- config ----------------------------------------------------------------------------

    def get_config(self):
        config = {'lr': serialize_schedule(self._schedule) if self._schedule is not None
                  else float(K.get_value(self._lr))}
        for key, attribute in self._config.items():
            value = getattr(self, attribute)
            config[key] = float(K.get_value(value)) if key in self._variables else value
        config.update(super(Optimizer, self).get_config())  # clipnorm/clipvalue, when set
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ('lr', 'learning_rate'):
            if isinstance(config.get(key), dict):
                config[key] = deserialize_schedule(config[key])
        return cls(**config)


_MISSING = object()
