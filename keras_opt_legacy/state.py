"""Optimizer state: reset, saving with state names, strict loading that runs no code from the
file, and a one-call `load_model` that also injects multi-stage optimizers."""
import json
import warnings

import h5py
import numpy as np
from keras import backend as K

from . import builtin, compat
from .base import COUNTERS, label, reset_state, split_inner

# Attributes of a saved file's optimizer_weights: the state names, and the names of the
# parameters they refer to, in order (a loading model may name its layers differently).
STATE_NAMES = 'keras_opt_legacy_state_names'
PARAM_NAMES = 'keras_opt_legacy_param_names'

state_of = builtin.state  # `(names, variables)` of all the state of any optimizer


def reset_optimizer(optimizer, keep_iterations=False):
    """Re-initialize the optimizer's state (slots, accumulators, counters) in place.

    Works on keras_opt_legacy's optimizers and wrappers and on Keras's built-ins, once training
    has built their state (before, it warns and does nothing). The model's weights are untouched
    and the next steps equal those of a fresh optimizer of the same config; with
    `keep_iterations`, the step counters (and Nadam's m_schedule) keep counting, e.g. to continue
    a schedule. The initializer op is built once: repeated resets do not grow the graph.
    Returns whether anything was reset.
    """
    compat.check_standalone(optimizer)
    names, variables = builtin.state(optimizer)
    if not variables:
        warnings.warn('%s has no state yet: it is built by the first training step (fit, '
                      'train_on_batch) or apply_gradients; nothing was reset'
                      % label(type(optimizer)))
        return False
    reset_state(optimizer, names, variables, keep_iterations)
    return True


def save_model(model, filepath, overwrite=True):
    """`model.save` plus the names of the optimizer's state, so `load_optimizer_state` can match
    every array by name."""
    compat.check_standalone(model)
    model.save(filepath, overwrite=overwrite)
    names, _ = builtin.state(model.optimizer)
    if builtin.is_ours(model.optimizer) and names:
        params = [p.op.name for p in compat.trainable_params(model)]
        with h5py.File(filepath, 'r+') as f:
            f['optimizer_weights'].attrs[STATE_NAMES] = [n.encode('utf8') for n in names]
            f['optimizer_weights'].attrs[PARAM_NAMES] = [n.encode('utf8') for n in params]


def _read(filepath):
    """The optimizer's saved class name and state, as `{name: array}` or a list (no names).

    Reads JSON text and numeric arrays only: nothing in the file is unpickled, unmarshalled or
    run (Keras's load_model rebuilds Lambda layers from the bytecode they carry)."""
    with h5py.File(filepath, 'r') as f:
        if 'training_config' not in f.attrs or 'optimizer_weights' not in f:
            raise ValueError('%s holds no optimizer state: save a model that was compiled and '
                             'trained (model.save or keras_opt_legacy.save_model)' % filepath)
        config = _json(f.attrs['training_config'])
        group = f['optimizer_weights']
        arrays = [np.array(group[_text(n)]) for n in group.attrs['weight_names']]
        names = [_text(n) for n in group.attrs[STATE_NAMES]] if STATE_NAMES in group.attrs \
            else None
        params = [_text(n) for n in group.attrs.get(PARAM_NAMES, [])]
    for array in arrays:
        if array.dtype.kind not in 'biuf':
            raise ValueError('%s: optimizer state of dtype %s is not numeric' % (filepath,
                                                                                 array.dtype))
    class_name = config['optimizer_config']['class_name']
    return class_name, (dict(zip(names, arrays)) if names is not None else arrays), params


def _rename_params(state, saved_params, params):
    """Name each saved slot after the loading model's parameter at the same position: a state
    name is 'inner/'* + slot + '/' + parameter name (slot names hold no '/')."""
    if len(saved_params) != len(params):
        raise ValueError('the file\'s optimizer updated %d parameters; this model has %d'
                         % (len(saved_params), len(params)))
    renamed = dict(zip(saved_params, [p.op.name for p in params]))
    result = {}
    for name, value in state.items():
        prefix, rest = split_inner(name)
        slot, _, param = rest.partition('/')
        result[prefix + slot + ('/' + renamed.get(param, param) if param else '')] = value
    return result


def _text(value):
    return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _json(value):
    return json.loads(_text(value))


def load_optimizer_state(model, filepath):
    """Restore the state of `model.optimizer` from a file saved by `model.save`,
    `keras_opt_legacy.save_model` or the Checkpoint callback -- strictly.

    State is matched by name (files saved by keras_opt_legacy), by our own layout (a plain
    `model.save` of the same optimizer), or converted from a Keras 2.2.4 built-in of the same
    kind (`keras.optimizers.Adam` into `keras_opt_legacy.Adam`: the layouts agree; Keras's unused
    `vhat` placeholders are dropped, and a counter Keras never saved -- RMSprop/Adagrad/Adadelta's
    `iterations` -- keeps its current value). Every shape and dtype is checked first; on any
    mismatch a ValueError lists them all and nothing is assigned.
    """
    compat.check_standalone(model)
    optimizer = model.optimizer
    if optimizer is None:
        raise RuntimeError('compile the model first: the optimizer whose state to load comes '
                           'from model.compile')
    if not builtin.state(optimizer)[1]:
        if getattr(optimizer, 'needs_inject', False):
            raise RuntimeError('call opt.inject(model) before loading its state (or load with '
                               'keras_opt_legacy.load_model, which does both)')
        compat.make_train_function(model)
    params = compat.trainable_params(model)
    names, variables = builtin.saved_state(optimizer, params)
    class_name, saved, saved_params = _read(filepath)
    if saved_params:
        saved = _rename_params(saved, saved_params, params)

    if isinstance(saved, list):
        if class_name == type(optimizer).__name__:
            saved = dict(zip(names, saved)) if len(saved) == len(names) else {
                'state_%d' % i: a for i, a in enumerate(saved)}
        elif class_name in compat.KERAS_LAYOUTS and \
                type(optimizer).__qualname__ == class_name:
            # Ours of the same kind use Keras's slot names: name the arrays by Keras's layout.
            saved = dict(zip(builtin.weight_names(class_name, len(saved), params), saved))
        else:
            raise ValueError('%s was saved with the optimizer %s; the model is compiled with %s'
                             % (filepath, class_name, type(optimizer).__name__))
    converted = class_name != type(optimizer).__name__
    problems = []
    if converted and builtin.is_ours(optimizer) and class_name not in compat.KERAS_LAYOUTS:
        problems.append('saved by the optimizer %s; the model is compiled with %s'
                        % (class_name, type(optimizer).__name__))
    assignments = []
    for name, variable in zip(names, variables):
        if name not in saved:
            if not (converted and name in COUNTERS):  # counters Keras never saved
                problems.append('%s: missing from the file' % name)
            continue
        value = saved[name]
        shape = tuple(K.int_shape(variable))
        if value.shape != shape:
            problems.append('%s: shape %s in the file, %s in the optimizer'
                            % (name, value.shape, shape))
        elif value.dtype.kind != np.dtype(K.dtype(variable)).kind:
            problems.append('%s: dtype %s in the file, %s in the optimizer'
                            % (name, value.dtype, K.dtype(variable)))
        else:
            assignments.append((variable, value))
    unused = [n for n in saved if n not in names and not (converted and n.startswith('vhat/'))]
    problems += ['%s: in the file, not in the optimizer' % n for n in unused]
    if problems:
        raise ValueError('the optimizer state in %s does not fit %s; nothing was loaded:\n  %s'
                         % (filepath, type(optimizer).__name__, '\n  '.join(problems)))
    if converted and 'm_schedule' in names and 'm_schedule' not in saved:
        assignments.append((optimizer.m_schedule, _nadam_m_schedule(optimizer, saved)))
    K.batch_set_value(assignments)


def _nadam_m_schedule(optimizer, saved):
    """Keras does not save Nadam's m_schedule; it is the product of the momentum schedule over
    the steps taken, so it follows from `iterations` (to float32 rounding)."""
    beta_1 = np.float32(K.get_value(optimizer.beta_1))
    m_schedule = np.float32(1.)
    for t in range(1, int(saved['iterations']) + 1):
        m_schedule *= beta_1 * (np.float32(1.) - np.float32(0.5) * np.float32(0.96) ** np.float32(
            t * optimizer.schedule_decay))
    return m_schedule


def load_model(filepath, custom_objects=None):
    """Load a model saved with its optimizer and restore the optimizer strictly
    (`load_optimizer_state`), injecting optimizers that drive the train function themselves
    (Runge-Kutta methods, GradientAccumulation(model_updates='with_update')) -- one call where
    `keras.models.load_model` would need several."""
    import keras
    model = keras.models.load_model(filepath, custom_objects=custom_objects, compile=False)
    with h5py.File(filepath, 'r') as f:
        if 'training_config' not in f.attrs:
            warnings.warn('%s was saved without an optimizer: the model is not compiled'
                          % filepath)
            return model
        config = _json(f.attrs['training_config'])
    custom_objects = custom_objects or {}
    optimizer = compat.deserialize_optimizer(config['optimizer_config'], custom_objects)

    def custom(value):  # names stay names (Keras resolves them), unless a custom object matches
        if isinstance(value, dict):
            return {k: custom(v) for k, v in value.items()}
        if isinstance(value, list):
            return [custom(v) for v in value]
        return custom_objects.get(value, value) if isinstance(value, str) else value
    model.compile(optimizer=optimizer, loss=custom(config['loss']),
                  metrics=custom(config['metrics']), loss_weights=config['loss_weights'],
                  sample_weight_mode=config['sample_weight_mode'])
    if getattr(optimizer, 'needs_inject', False):
        optimizer.inject(model)
    with h5py.File(filepath, 'r') as f:
        has_state = 'optimizer_weights' in f
    if has_state:
        load_optimizer_state(model, filepath)
    return model
