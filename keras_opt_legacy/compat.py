"""The one home of version checks and of Keras's private training internals.

Everything that depends on the installed Keras/TensorFlow version, or that touches a private Keras
attribute (`_make_train_function`, `_feed_inputs`, ...), lives here, so the rest of the package is
written against one stable surface.
"""
import contextlib
import copy

import tensorflow as tf

SUPPORTED = 'keras >=2.2.4,<2.4 (standalone `import keras`) with tensorflow >=1.13,<2.0'


def _version(text):
    return tuple(int(part) for part in text.split('.')[:3] if part.isdigit())


def check_versions(keras_version=None, tf_version=None):
    """Raise ImportError naming the supported range if a given version is outside it."""
    if keras_version is not None and not (2, 2, 4) <= keras_version < (2, 4):
        raise ImportError('keras_opt_legacy supports %s; found keras %s. Keras 2.4+ is tf.keras '
                          'and has its own optimizers.' % (SUPPORTED, '.'.join(map(str, keras_version))))
    if tf_version is not None and not (1, 13) <= tf_version < (2, 0):
        raise ImportError('keras_opt_legacy supports %s; found tensorflow %s.'
                          % (SUPPORTED, '.'.join(map(str, tf_version))))


# TensorFlow first: under TF 2, `import keras` 2.2/2.3 itself fails with an obscure error.
TF_VERSION = _version(tf.__version__)
check_versions(tf_version=TF_VERSION)
import keras  # noqa: E402
KERAS_VERSION = _version(keras.__version__)
check_versions(keras_version=KERAS_VERSION)
if keras.backend.backend() != 'tensorflow':
    raise ImportError('keras_opt_legacy needs the TensorFlow backend; Keras is using %r.'
                      % keras.backend.backend())
from keras import backend as K  # noqa: E402


def check_standalone(obj):
    """Raise TypeError for a tf.keras (or tf.train) object: that is another Keras, with its own
    optimizers and training loop; this package works with standalone Keras's."""
    if type(obj).__module__.split('.')[0] == 'tensorflow':
        raise TypeError('%s is a TensorFlow object (tf.keras or tf.train); keras_opt_legacy works '
                        'with standalone Keras (`import keras`) models and optimizers: %s'
                        % (type(obj).__name__, SUPPORTED))


# Keras 2.3 renamed the learning rate (`learning_rate`, with `lr` a read-only property of the base
# class), moved metrics out of `metrics_tensors` into Metric objects, makes resource variables
# (through tf.keras's backend) and lists every built-in's counters in `weights` (KERAS_LAYOUTS).
KERAS_23 = KERAS_VERSION >= (2, 3)
# Keras 2.3's train_on_batch resets stateful metrics after every batch unless told not to (an
# argument Keras 2.2 does not have): `model.train_on_batch(x, y, **KEEP_METRICS)` keeps them.
KEEP_METRICS = {'reset_metrics': False} if KERAS_23 else {}

# How each Keras built-in lays out its `weights`: (counters listed first, slot groups in order,
# each group one variable per parameter). Keras 2.2 leaves `iterations` out of RMSprop, Adagrad
# and Adadelta, and Nadam's m_schedule out everywhere; Keras 2.3 lists them all first.
_LAYOUTS_22 = {
    'SGD': (['iterations'], ['moment']),
    'RMSprop': ([], ['accumulator']),
    'Adagrad': ([], ['accumulator']),
    'Adadelta': ([], ['accumulator', 'delta_accumulator']),
    'Adam': (['iterations'], ['m', 'v', 'vhat']),
    'Adamax': (['iterations'], ['m', 'u']),
    'Nadam': (['iterations'], ['m', 'v']),
}
_LAYOUTS_23 = dict(_LAYOUTS_22, **{
    'RMSprop': (['iterations'], ['accumulator']),
    'Adagrad': (['iterations'], ['accumulator']),
    'Adadelta': (['iterations'], ['accumulator', 'delta_accumulator']),
    'Nadam': (['iterations', 'm_schedule'], ['m', 'v']),
})
KERAS_LAYOUTS = _LAYOUTS_23 if KERAS_23 else _LAYOUTS_22
# This version's first: a checkpoint of the other one is recognised by its count of arrays.
ALL_KERAS_LAYOUTS = (KERAS_LAYOUTS, _LAYOUTS_22, _LAYOUTS_23)


def deserialize_optimizer(config, custom_objects=None):
    """`keras.optimizers.deserialize` for a config saved under any supported Keras: Keras 2.3
    saves a built-in's rate as 'learning_rate', which Keras 2.2's built-ins do not accept."""
    config = copy.deepcopy(config)  # Keras's deserialize edits it (lower-cases built-in names)
    options = config.get('config', {})
    if not KERAS_23 and 'learning_rate' in options and \
            config.get('class_name', '').lower() in {name.lower() for name in KERAS_LAYOUTS}:
        options['lr'] = options.pop('learning_rate')
    return keras.optimizers.deserialize(config, custom_objects=custom_objects)


def keras_builtin_classes():
    """Keras's built-in optimizer classes (those whose state layout is known)."""
    return tuple(getattr(keras.optimizers, name) for name in KERAS_LAYOUTS)


@contextlib.contextmanager
def scaled_learning_rate(optimizer, factor):
    """Keras built-in `optimizer` reads its rate times `factor` while open (its `get_updates`
    reads the attribute: `lr` in Keras 2.2, `learning_rate` in 2.3, where `lr` is read-only)."""
    if factor == 1:
        yield
        return
    name = 'learning_rate' if KERAS_23 else 'lr'
    original = getattr(optimizer, name)
    setattr(optimizer, name, original * factor)
    try:
        yield
    finally:
        setattr(optimizer, name, original)


def batch_norm_layers(model):
    """The BatchNormalization layers of `model` (its own; one inside a nested model is an
    error: its input is not a tensor of this model's graph)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.engine.network.Network) and batch_norm_layers(layer):
            raise ValueError('the BatchNormalization layers of the nested model %s are not '
                             'reached: build the model without nesting it' % layer.name)
    return found


def model_inputs(model):
    return list(model.inputs)


def batch_norm_statistics(layer):
    """`[mean, variance]` tensors: what the moving averages of BatchNormalization `layer` take
    from a batch, as Keras 2.2.4-2.3.1's `BatchNormalization.call` computes them (the variance
    with its sample-size correction), from the layer's input in this model's graph."""
    if len(layer._inbound_nodes) != 1:
        raise ValueError('the BatchNormalization layer %s is used %d times: its statistics are '
                         'ambiguous' % (layer.name, len(layer._inbound_nodes)))
    inputs = layer.input
    ndim = len(keras.backend.int_shape(inputs))
    reduction_axes = [i for i in range(ndim) if i != layer.axis % ndim]
    _, mean, variance = keras.backend.normalize_batch_in_training(
        inputs, layer.gamma, layer.beta, reduction_axes, epsilon=layer.epsilon)
    sample_size = keras.backend.cast(keras.backend.prod(
        [keras.backend.shape(inputs)[axis] for axis in reduction_axes]),
        dtype=keras.backend.dtype(inputs))
    if KERAS_23 and sample_size.dtype != 'float32':
        sample_size = keras.backend.cast(sample_size, dtype='float32')
    return [mean, variance * (sample_size / (sample_size - (1.0 + layer.epsilon)))]


def make_train_function(model):
    """Build Keras's own train function (and so the optimizer's state) now."""
    model._make_train_function()


def trainable_params(model):
    """The parameters the optimizer updates, in Keras's order."""
    return model._collected_trainable_weights


def check_compiled_with(model, optimizer, fix):
    """Raise a clear error unless `model` is compiled with `optimizer`; `fix` says what to do."""
    check_standalone(model)
    if getattr(model, 'optimizer', None) is None or not hasattr(model, 'total_loss'):
        raise RuntimeError('the model is not compiled yet: call model.compile(optimizer=opt, '
                           'loss=...) first, then %s' % fix)
    # A wrapper that can wrap it (distributed.DistributedOptimizer) injects it for the model.
    if model.optimizer is not optimizer and getattr(model.optimizer, 'optimizer', None) \
            is not optimizer:
        raise ValueError('the model is compiled with another optimizer (%s): compile it with '
                         'this one (%s), then %s' % (type(model.optimizer).__name__,
                                                    type(optimizer).__name__, fix))


def training_updates(model):
    """The optimizer's updates for `model`, built as Keras's `_make_train_function` builds them."""
    with K.name_scope('training'):
        with K.name_scope(type(model.optimizer).__name__):
            return model.optimizer.get_updates(params=model._collected_trainable_weights,
                                               loss=model.total_loss)


def train_function_parts(model):
    """What Keras's train function is made of: `(inputs, outputs, state_updates,
    metric_updates, function_kwargs)`; outputs are the loss and the metrics."""
    inputs = model._feed_inputs + model._feed_targets + model._feed_sample_weights
    if model._uses_dynamic_learning_phase():
        inputs += [K.learning_phase()]
    if KERAS_23:  # metric objects, as Keras 2.3's _make_train_function collects them
        metrics = model._get_training_eval_metrics()
        metrics_tensors = [m._call_result for m in metrics if hasattr(m, '_call_result')]
        metrics_updates = [update for m in metrics for update in m.updates]
    else:
        metrics_tensors, metrics_updates = model.metrics_tensors, model.metrics_updates
    return (inputs, [model.total_loss] + metrics_tensors, model.updates, metrics_updates,
            model._function_kwargs)


def keras_assignment(update):
    """`(assign, target, value, increment?)` that re-creates one of a Keras optimizer's updates
    (an assign op or a `(variable, value)` pair) with `assign(target, value)`; None if it is
    neither. Keras 2.3's variables are resource variables, assigned through their handles."""
    if isinstance(update, tuple):
        return (tf.assign,) + tuple(update) + (False,)
    from tensorflow.python.ops import gen_resource_variable_ops as resource_ops
    kinds = {'Assign': (tf.assign, False), 'AssignAdd': (tf.assign_add, True),
             'AssignVariableOp': (resource_ops.assign_variable_op, False),
             'AssignAddVariableOp': (resource_ops.assign_add_variable_op, True)}
    op = getattr(update, 'op', update)  # Keras 2.3's assignments may be ops already
    if not isinstance(op, tf.Operation) or op.type not in kinds:
        return None
    assign, increment = kinds[op.type]
    return assign, op.inputs[0], op.inputs[1], increment


def updates_function(inputs, updates, name, **kwargs):
    """A `K.function` that only runs `updates`. Keras 2.3's (tf.keras's) orders the updates
    after the first output and fails without one, so it fetches a constant."""
    return K.function(inputs, [tf.constant(0)], updates=updates, name=name, **kwargs)


def fused_kernels():
    """TensorFlow's fused training kernels (a private TF module): `apply_adam` and friends,
    which read and write a variable and its slots in one op. Keras 2.3 makes resource variables
    (through tf.keras's backend), which take `resource_apply_adam` and friends (same arithmetic,
    handles for variables): `fused_kernels().apply_adam(...)` picks the form that fits."""
    return _FusedKernels()


class _FusedKernels(object):
    def __getattr__(self, name):
        from tensorflow.python.framework import op_def_registry
        from tensorflow.python.ops.resource_variable_ops import is_resource_variable
        from tensorflow.python.training import training_ops
        if not hasattr(training_ops, name):  # e.g. apply_adagrad_v2 is new in TF 1.15
            raise AttributeError('TensorFlow %s has no fused kernel %s' % (tf.__version__, name))

        def kernel(*args, **kwargs):
            """The op, or None (use the formula graph) if its variables are of mixed kinds, e.g. a
            tf.Variable with slots from Keras 2.3's K.zeros."""
            # The op's leading ref inputs: the variable and its slots ('ApplyAdaMax').
            op_def = op_def_registry.get_registered_ops()[
                ''.join(word.capitalize() for word in name.split('_'))]
            variables = args[:sum(1 for arg in op_def.input_arg if arg.is_ref)]
            kinds = set(is_resource_variable(v) for v in variables)
            if kinds == {False}:
                return getattr(training_ops, name)(*args, **kwargs)
            if kinds == {True}:  # hyperparameters stay values, variables or not
                return getattr(training_ops, 'resource_' + name)(
                    *[v.handle for v in variables] + list(args[len(variables):]), **kwargs)
            return None
        return kernel


def install_train_function(model, train_function):
    """Make `fit`, `fit_generator` and `train_on_batch` call `train_function(inputs)`: Keras
    builds its own only while `model.train_function` is None (and resets it on compile)."""
    model.train_function = train_function
