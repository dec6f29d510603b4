"""The base class: Keras 2's `get_updates` design, with a deterministic step counter and all state
in `self.weights`.

A subclass declares its per-parameter slots (`slot_names`), registers its hyperparameters with
`_hyper`/`_flag`, and writes its update rule once in `_apply` (plus `_step_values` for per-step
scalars such as bias corrections). The base does everything else: learning rate (constant, legacy
decay or schedule), clipping, constraints, state creation, ordering, config and weights.
"""
import inspect
import math
import numbers
import weakref
from collections import namedtuple

import numpy as np
import tensorflow as tf
from keras import backend as K
from keras import optimizers as keras_optimizers
from keras.legacy import interfaces
from keras.utils.generic_utils import get_custom_objects

from .compat import fused_kernels

_REGISTRY = {}


def register(cls):
    """Register `cls` for `load_model` under a name no Keras built-in has.

    Keras saves `optimizer.__class__.__name__` and `keras.optimizers.deserialize` lower-cases any
    name matching a built-in ('Adam' -> 'adam'), so an optimizer serialized as 'Adam' would come
    back as Keras's own Adam. 'keras_opt_legacy.Adam' cannot collide (and is a valid TF scope name).
    """
    name = 'keras_opt_legacy.' + cls.__qualname__
    cls.__name__ = name
    get_custom_objects()[name] = cls
    _REGISTRY[name] = cls
    return cls


def custom_objects():
    """The `custom_objects` dict for `load_model` (not needed once keras_opt_legacy is imported)."""
    return dict(_REGISTRY)


# Hyperparameter checks: (predicate, what the value must be).
NON_NEGATIVE = (lambda v: v >= 0, '>= 0')
NON_POSITIVE = (lambda v: v <= 0, '<= 0')
UNIT_INTERVAL = (lambda v: 0 <= v < 1, 'in [0, 1)')


def checked_number(name, value, check=NON_NEGATIVE):
    """Return `value` as a float, or raise TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError('%s must be a number, got %r' % (name, value))
    predicate, requirement = check
    if not math.isfinite(value) or not predicate(value):
        raise ValueError('%s must be %s, got %r' % (name, requirement, value))
    return float(value)


def is_schedule(value):
    """A learning-rate schedule: a callable `schedule(step) -> tensor` with a config."""
    return callable(value) and hasattr(value, 'get_config')


def clip_gradients(grads, clipnorm=None, clipvalue=None):
    """Keras 2.2.4's clipping: global-norm clipping, then element-wise clipping.

    The norm is one `add_n`, not Keras's chain of additions: grappler may rewrite a chain with an
    input order that varies between processes (it did for Ftrl's update; see optimizers.Ftrl)."""
    if clipnorm:
        norm = K.sqrt(tf.add_n([K.sum(K.square(g)) for g in grads]))
        grads = [keras_optimizers.clip_norm(g, clipnorm, norm) for g in grads]
    if clipvalue:
        grads = [K.clip(g, -clipvalue, clipvalue) for g in grads]
    return grads


def resolve_gradients(grads):
    """Gradients given as a list, or as a function returning the list (see prepare_step)."""
    return grads() if callable(grads) else grads


def check_gradients(grads):
    if any(g is None for g in grads):
        raise ValueError('An operation has `None` for gradient. Please make sure that all of your '
                         'ops have a gradient defined (i.e. are differentiable). Common ops without '
                         'gradient: K.argmax, K.round, K.eval.')


def after_all(tensors, also=()):
    """`tensors`, each usable only once all of them (and `also`) are computed.

    Keras variables are TF1 ref variables: an assign writes into the buffer that backward-pass ops
    read through `W/read`. Gating every update on every gradient (TF's GATE_OP idea, for the whole
    graph) keeps an early assign from changing a later gradient, and gating on the loss keeps the
    reported loss from seeing updated weights.
    """
    with tf.control_dependencies(list(also)):
        return tf.tuple(list(tensors))


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


def descend(variable, rate, x, after=()):
    """The op `variable <- variable - rate * x`, in place and in one pass, after the ops `after`:
    TF's fused ApplyGradientDescent kernel (its `x * rate` rounds as `rate * x`)."""
    with tf.control_dependencies(list(after)):
        return fused_kernels().apply_gradient_descent(variable, rate, x)


def new_value(variable, update):
    """The tensor a rule's update of `variable` computes (in-place forms spelled out)."""
    if not isinstance(update, InPlace):
        return update
    return variable + update.value if update.sign > 0 else variable - update.value


_KERAS_RATES = weakref.WeakKeyDictionary()


def rate_tensor(optimizer):
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
    return float(K.get_value(rate_tensor(optimizer)))


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
                'drive it from a callback.' % (type(optimizer).__qualname__,
                                               type(optimizer._schedule).__qualname__))

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
    now (variables cannot be created inside control flow) and returns a function that builds the
    ops applying one step with `grads` (final gradients: already clipped) when called -- possibly
    inside a `tf.cond` branch, which is how wrappers apply an inner optimizer conditionally.

    `self.weights` lists all state, `self.weight_names` names each entry; `set_weights` checks
    everything before assigning anything.
    """

    slot_names = ()  # per-parameter state, in `weights` order

    def prepare_step(self, grads, params):
        """Create the state of `params`; return a `PreparedStep` building one step's ops.

        `grads` are the final gradients, or a function returning them, called where they are
        needed: inside a wrapper's branch, work on them is done only when the branch runs."""
        raise NotImplementedError

    def _add_scalar(self, name, initial_value, dtype=None):
        """Scalar state (Nadam's m_schedule, ...), listed in `weights` right after `iterations`."""
        with tf.name_scope(self._scope):
            variable = K.variable(initial_value, dtype=dtype, name=name)
        self._scalars.append((name, variable))
        return variable

    def _slot_initial_value(self, slot_name):
        return 0.

    def _create_slots(self, params):
        """Create the `slot_names` variables of each parameter once (outside control flow)."""
        params = list(params)
        for p in params:
            if p not in self._slots:  # parameter -> {slot name: variable}
                self._slots[p] = {
                    name: K.variable(tf.fill(K.int_shape(p), tf.constant(
                        self._slot_initial_value(name), dtype=p.dtype.base_dtype)),
                        dtype=K.dtype(p), name='%s/%s' % (name, p.op.name))
                    for name in self.slot_names}
        return params

    def _list_state(self, named_variables, params, inner=()):
        """`weights` = the named variables, then each slot (in parameter order), then `inner`'s
        state (a wrapped optimizer's, its names prefixed with 'inner/')."""
        names = [name for name, _ in named_variables]
        self.weights = [variable for _, variable in named_variables]
        for name in self.slot_names:
            names += ['%s/%s' % (name, p.op.name) for p in params]
            self.weights += [self._slots[p][name] for p in params]
        if inner:
            inner_names, inner_weights = inner
            names += ['inner/' + name for name in inner_names]
            self.weights += list(inner_weights)
        self.weight_names = names

    def clip_gradients(self, grads):
        return grads

    def reset(self, keep_iterations=False):
        """Re-initialize all state in place (see `keras_opt_legacy.reset_optimizer`)."""
        from .state import reset_optimizer
        return reset_optimizer(self, keep_iterations)

    def get_gradients(self, loss, params):
        grads = K.gradients(loss, params)
        check_gradients(grads)
        return self.clip_gradients(grads)

    @interfaces.legacy_get_updates_support
    def get_updates(self, loss, params):
        grads = self.get_gradients(loss, params)
        self.updates = self.prepare_step(after_all(grads, also=[loss]), params)()
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
        check_gradients(grads)
        params = [v for _, v in grads_and_vars]
        grads = after_all(self.clip_gradients(grads))
        self.updates = self.prepare_step(grads, params)()
        return tf.group(*self.updates, name=name or 'apply_gradients')

    def set_weights(self, weights):
        """Set the state from NumPy arrays, validating all of them before assigning any."""
        weights = list(weights)
        if len(weights) != len(self.weights):
            raise ValueError('%s has %d state arrays (%s), got %d; nothing was set'
                             % (type(self).__qualname__, len(self.weights),
                                ', '.join(self.weight_names) or 'none before training',
                                len(weights)))
        for name, variable, value in zip(self.weight_names, self.weights, weights):
            value = np.asarray(value)
            expected = tuple(K.int_shape(variable))
            if value.shape != expected:
                raise ValueError('state %r has shape %s, got shape %s; nothing was set'
                                 % (name, expected, value.shape))
            dtype = np.dtype(K.dtype(variable))
            if dtype.kind == 'i' and value.dtype.kind == 'f':
                if np.any(value != np.round(value)):
                    raise ValueError('state %r is a counter, got the non-integer value %s; '
                                     'nothing was set' % (name, value))
            elif not np.can_cast(value.dtype, dtype, casting='same_kind'):
                raise ValueError('state %r has dtype %s, got dtype %s; nothing was set'
                                 % (name, dtype, value.dtype))
        K.batch_set_value([(v, np.asarray(w).astype(K.dtype(v)))
                           for v, w in zip(self.weights, weights)])


class Optimizer(OptimizerBase):
    """Base class of keras_opt_legacy's optimizers (a `keras.optimizers.Optimizer`).

    `self.weights` (available once `get_updates`/`apply_gradients` has built the state) is
    `[iterations] + scalar state + every slot`, slot by slot in `slot_names` order, each slot in
    parameter order (Keras's `ms + vs` layout); `self.weight_names` names each entry.

    `iterations` counts applied updates; it is incremented after every op that reads it, so bias
    corrections and schedules see a deterministic step number.
    """

    def __init__(self, lr=None, decay=0., fused=True, **kwargs):
        learning_rate = kwargs.pop('learning_rate', None)
        allowed = {'clipnorm', 'clipvalue'}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError('Unexpected keyword argument passed to optimizer %s: %s'
                            % (type(self).__qualname__, ', '.join(unknown)))
        lr = self._resolve_learning_rate(lr, learning_rate)
        for name in sorted(kwargs):
            kwargs[name] = checked_number(name, kwargs[name])
        super(Optimizer, self).__init__(**kwargs)
        self._config = {}       # constructor argument -> attribute name, for get_config
        self._variables = set()  # hyperparameters held in K.variables
        self._scalars = []      # (name, variable): scalar state after `iterations` in `weights`
        self._current_rate = None
        self._slots = {}
        self.weight_names = []
        with K.name_scope(type(self).__qualname__) as scope:
            self._scope = scope
            self.iterations = K.variable(0, dtype='int64', name='iterations')
        self._schedule = lr if is_schedule(lr) else None
        if self._schedule is None:
            self._lr = self._hyper_variable('lr', checked_number('lr', lr))
        self.initial_decay = checked_number('decay', decay)
        if self._schedule is not None and self.initial_decay > 0:
            raise ValueError('decay must be 0 when the learning rate is a schedule: a schedule '
                             'already decides the rate at every step')
        self.decay = self._hyper_variable('decay', self.initial_decay)
        self._config['decay'] = 'decay'
        # Use TF's fused kernel where its arithmetic and state are the Keras formula's.
        self.fused = self._flag('fused', fused)

    def _resolve_learning_rate(self, lr, learning_rate):
        """Accept `lr=` (Keras 2.2) or `learning_rate=` (Keras 2.3, tf.keras), not both."""
        if learning_rate is None:
            return lr
        default = inspect.signature(type(self).__init__).parameters['lr'].default
        if lr is not None and lr is not default and lr != default:
            raise TypeError('pass the learning rate as lr= or as learning_rate=, not both '
                            '(got lr=%r, learning_rate=%r)' % (lr, learning_rate))
        return learning_rate

    # ---- hyperparameters -------------------------------------------------------------------

    def _hyper_variable(self, name, value):
        with tf.name_scope(self._scope):
            variable = K.variable(value, name=name)
        self._variables.add(name)
        return variable

    def _hyper(self, name, value, check=NON_NEGATIVE, variable=False):
        """Validate and store a numeric hyperparameter (a K.variable if `variable`, as Keras)."""
        value = checked_number(name, value, check)
        self._config[name] = name
        return self._hyper_variable(name, value) if variable else value

    def _flag(self, name, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError('%s must be True or False, got %r' % (name, value))
        self._config[name] = name
        return bool(value)

    def _epsilon(self, epsilon):
        return self._hyper('epsilon', K.epsilon() if epsilon is None else epsilon)

    # ---- learning rate ---------------------------------------------------------------------

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
        K.set_value(self._lr, checked_number('lr', value))

    learning_rate = lr

    def _learning_rate_at(self, iterations):
        """The rate of the update being built: schedule, or constant with legacy decay."""
        if self._schedule is not None:
            return self._schedule(iterations)
        lr = self._lr
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

    # ---- state -----------------------------------------------------------------------------

    def _create_state(self, params):
        """Create the slots of `params` once and list all state in `weights`.

        Called again with the same parameters (a recompile), it reuses the slots: the graph does
        not grow and the state is kept; use `reset()` to start afresh.
        """
        params = self._create_slots(params)
        self._list_state([('iterations', self.iterations)] + self._scalars, params)

    # ---- building the update ---------------------------------------------------------------

    def _step_values(self, lr, t):
        """Per-step scalars for `_apply`; `t` is the 1-based float step number."""
        return Step(lr=lr, t=t)

    def _apply(self, p, g, slots, step):
        """The update rule: `[(variable, new value), ...]` for `p`, its gradient `g` and slots."""
        raise NotImplementedError

    def _fused(self, p, g, slots, step):
        """The same rule built on TF's fused kernels (an op, or a list of ops whose last one
        updates `p`), or None where there is none."""
        return None

    def _final_updates(self, step):
        """`[(variable, new value), ...]` of scalar state, assigned after every parameter."""
        return []

    def _assign_all(self, updates, p=None):
        """Assign `updates` once every new value is computed: a rule may read a variable in
        several ops (Ftrl reads the old accumulator twice), and a ref-variable assign that ran
        first would change what a later read sees. (Waiting only for the ops that read the
        variable is not enough: grappler may turn such an op into an Identity -- pow(x, 1) -- and
        an Identity of a ref variable aliases its buffer until its own consumers have run.)
        In-place updates (`plus`/`minus`) run after the copies, which may read such an alias.
        The constraint of `p` applies to its value."""
        constraint = getattr(p, 'constraint', None)
        if constraint is not None:
            updates = [(v, constraint(new_value(v, x)) if v is p else x) for v, x in updates]
        with tf.control_dependencies([x.value if isinstance(x, InPlace) else x
                                      for _, x in updates]):
            copies = [K.update(v, x) for v, x in updates if not isinstance(x, InPlace)]
        with tf.control_dependencies(copies):
            return copies + [x.apply(v) for v, x in updates if isinstance(x, InPlace)]

    def update_ops(self, grads, params):
        """Ops that apply one step with `grads` (already clipped) to `params`.

        The state must exist (`_create_state`); this only builds ops, so it may be called inside a
        `tf.cond` branch (gradient accumulation, the non-finite guard).
        """
        step = self._step_values(self._learning_rate_at(self.iterations),
                                 K.cast(self.iterations, K.floatx()) + 1)
        ops = []
        for p, g in zip(params, grads):
            # Kernels update in place: no constraint on the result, no sparse gradients.
            fusable = self.fused and getattr(p, 'constraint', None) is None and \
                isinstance(g, tf.Tensor)
            fused = self._fused(p, g, self._slots[p], step) if fusable else None
            if fused is None:
                fused = self._assign_all(self._apply(p, g, self._slots[p], step), p)
            ops.extend(fused if isinstance(fused, list) else [fused])
        with tf.control_dependencies(ops):
            final = self._assign_all(self._final_updates(step))
        with tf.control_dependencies(ops + final):
            # Every read of `iterations` above happens before this increment.
            increment = K.update_add(self.iterations, 1)
        return ops + final + [increment]

    def prepare_step(self, grads, params):
        self._create_state(params)
        return PreparedStep(lambda: self.update_ops(resolve_gradients(grads), params))

    def clip_gradients(self, grads):
        return clip_gradients(grads, getattr(self, 'clipnorm', None),
                              getattr(self, 'clipvalue', None))

    # ---- weights and config ----------------------------------------------------------------

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


def serialize_schedule(schedule):
    return {'class_name': type(schedule).__name__, 'config': schedule.get_config()}


def deserialize_schedule(config):
    from keras.utils.generic_utils import deserialize_keras_object
    return deserialize_keras_object(config, printable_module_name='learning rate schedule')
