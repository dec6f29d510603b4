"""The one home of version checks and of Keras's private training internals.

Everything that depends on the installed Keras/TensorFlow version, or that touches a private Keras
attribute (`_make_train_function`, `_feed_inputs`, ...), lives here, so the rest of the package is
written against one stable surface.
"""
import keras
from keras import backend as K
import tensorflow as tf

SUPPORTED = 'keras >=2.2.4,<2.4 (standalone `import keras`) with tensorflow >=1.13,<2.0'


def _version(text):
    return tuple(int(part) for part in text.split('.')[:3] if part.isdigit())


KERAS_VERSION = _version(keras.__version__)
TF_VERSION = _version(tf.__version__)


def check_versions(keras_version=KERAS_VERSION, tf_version=TF_VERSION):
    """Raise ImportError naming the supported range if the installed stack is outside it."""
    if not (2, 2, 4) <= keras_version < (2, 4):
        raise ImportError('keras_opt_legacy supports %s; found keras %s. Keras 2.4+ is tf.keras '
                          'and has its own optimizers.' % (SUPPORTED, '.'.join(map(str, keras_version))))
    if not (1, 13) <= tf_version < (2, 0):
        raise ImportError('keras_opt_legacy supports %s; found tensorflow %s.'
                          % (SUPPORTED, '.'.join(map(str, tf_version))))
    if keras.backend.backend() != 'tensorflow':
        raise ImportError('keras_opt_legacy needs the TensorFlow backend; Keras is using %r.'
                          % keras.backend.backend())


# How Keras lays out each built-in's `weights`: (iterations listed first?, slot groups in order,
# each group one variable per parameter). Keras 2.2.4 leaves `iterations` out of RMSprop, Adagrad
# and Adadelta, and Nadam's m_schedule out everywhere.
KERAS_LAYOUTS = {
    'SGD': (True, ['moment']),
    'RMSprop': (False, ['accumulator']),
    'Adagrad': (False, ['accumulator']),
    'Adadelta': (False, ['accumulator', 'delta_accumulator']),
    'Adam': (True, ['m', 'v', 'vhat']),
    'Adamax': (True, ['m', 'u']),
    'Nadam': (True, ['m', 'v']),
}


def keras_weight_names(class_name, count, params):
    """Names of the `count` arrays a Keras built-in `class_name` lists in `weights`, slots named
    after `params` as ours are ('m/dense_1/kernel'); by position if the layout is unknown."""
    iterations_first, groups = KERAS_LAYOUTS.get(class_name, (None, None))
    if params is not None and groups is not None and \
            count == int(iterations_first) + len(groups) * len(params):
        return (['iterations'] if iterations_first else []) + [
            '%s/%s' % (group, p.op.name) for group in groups for p in params]
    return ['state_%d' % i for i in range(count)]


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


def make_train_function(model):
    """Build Keras's own train function (and so the optimizer's state) now."""
    model._make_train_function()


def trainable_params(model):
    """The parameters the optimizer updates, in Keras's order."""
    return model._collected_trainable_weights


def keras_state(optimizer, params):
    """`(names, variables)` of all the state of a Keras built-in optimizer after `get_updates`:
    its `weights` plus the counters Keras leaves out (`iterations`, Nadam's `m_schedule`), so a
    wrapper that lists them saves and resumes it exactly."""
    weights = list(optimizer.weights)
    names = keras_weight_names(type(optimizer).__name__, len(weights), params)
    counters = [('iterations', optimizer.iterations)]
    if getattr(optimizer, 'm_schedule', None) is not None:
        counters.append(('m_schedule', optimizer.m_schedule))
    counter_variables = [variable for _, variable in counters]
    rest = [(name, w) for name, w in zip(names, weights)
            if not any(w is variable for variable in counter_variables)]
    return [name for name, _ in counters + rest], [w for _, w in counters + rest]


def check_compiled_with(model, optimizer, fix):
    """Raise a clear error unless `model` is compiled with `optimizer`; `fix` says what to do."""
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
    return (inputs, [model.total_loss] + model.metrics_tensors, model.updates,
            model.metrics_updates, model._function_kwargs)


def fused_kernels():
    """TensorFlow's fused training kernels (a private TF module): `apply_adam` and friends,
    which read and write a variable and its slots in one op."""
    from tensorflow.python.training import training_ops
    return training_ops


def install_train_function(model, train_function):
    """Make `fit`, `fit_generator` and `train_on_batch` call `train_function(inputs)`: Keras
    builds its own only while `model.train_function` is None (and resets it on compile)."""
    model.train_function = train_function
