"""Optimizer state: reset, saving with state names, strict loading that runs no code from the
file, and a one-call `load_model` that also injects multi-stage optimizers."""
import json
import os
import warnings

import h5py
import numpy as np
from keras import backend as K
from keras.utils.io_utils import ask_to_proceed_with_overwrite

from . import builtin, compat
from .base import COUNTERS, check_state_value, reset_state, split_inner

# Datasets in a saved file's optimizer_weights group (attributes in files of version 1): the
# state names, and the names of the parameters they refer to, in order (a loading model may
# name its layers differently). Datasets, not attributes: an attribute holds at most 64 KB.
STATE_NAMES = 'keras_opt_legacy_state_names'
PARAM_NAMES = 'keras_opt_legacy_param_names'

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
    return reset_state(optimizer, *builtin.state(optimizer), keep_iterations=keep_iterations)


def save_model(model, filepath, overwrite=True):
    """`model.save` plus the names of the optimizer's state, so `load_optimizer_state` can match
    every array by name. With `overwrite=False` and an existing file, the user is asked (as
    Keras asks); answered no, nothing is written."""
    compat.check_standalone(model)
    if not overwrite and os.path.isfile(filepath) and \
            not ask_to_proceed_with_overwrite(filepath):
        return
    model.save(filepath, overwrite=True)
    names, _ = builtin.state(model.optimizer)
    if builtin.is_ours(model.optimizer) and names:
        params = [p.op.name for p in compat.trainable_params(model)]
        text = h5py.special_dtype(vlen=str)
        with h5py.File(filepath, 'r+') as f:
            for key, values in ((STATE_NAMES, names), (PARAM_NAMES, params)):
                f['optimizer_weights'].create_dataset(key, data=np.array(values, dtype=text))


def _entry(filepath, parent, key, kind):
    """`parent[key]`, only if it is a plain `kind` (h5py.Group or Dataset) stored in this file:
    a link to elsewhere (soft, external), external raw storage or a virtual dataset would read
    other files' bytes, so each is refused with a ValueError naming the entry."""
    link = parent.get(key, getlink=True)
    if link is None:
        raise ValueError('%s: the entry %r is missing' % (filepath, key))
    if not isinstance(link, h5py.HardLink):
        raise ValueError('%s: the entry %r is a %s, not stored in the file; such links are not '
                         'followed' % (filepath, key, type(link).__name__))
    entry = parent[key]
    if not isinstance(entry, kind):
        raise ValueError('%s: the entry %r is a %s, not what it should be'
                         % (filepath, key, type(entry).__name__))
    if isinstance(entry, h5py.Dataset) and (getattr(entry, 'is_virtual', False) or
                                            entry.id.get_create_plist().get_external_count()):
        raise ValueError('%s: the entry %r keeps its data outside the file (external or virtual '
                         'storage), which is not read' % (filepath, key))
    return entry


def _check_plain(filepath, group):
    """Every entry below `group` is stored in the file itself (see `_entry`)."""
    for key in group:
        entry = _entry(filepath, group, key, (h5py.Group, h5py.Dataset))
        if isinstance(entry, h5py.Group):
            _check_plain(filepath, entry)


def load_weights(model, filepath):
    """`model.load_weights(filepath)` for a file written by `model.save` or `save_model`, reading
    data only: the architecture is `model`'s (built by your code), and links to other files,
    external or virtual storage are refused first (a ValueError naming the entry)."""
    compat.check_standalone(model)
    with h5py.File(filepath, 'r') as f:
        _check_plain(filepath, f['model_weights'] if 'model_weights' in f else f)
    model.load_weights(filepath)


def _read(f, filepath):
    """The optimizer's saved class name, its state as `{name: dataset}` or a list of datasets
    (no names), and the names of the parameters it updated, from the open file `f`.

    Only metadata is read here (no array: a declared shape is compared before anything is
    read). Reads JSON text and numeric arrays only: nothing in the file is unpickled,
    unmarshalled or run."""
    if 'training_config' not in f.attrs or 'optimizer_weights' not in f:
        raise ValueError('%s holds no optimizer state: save a model that was compiled and '
                         'trained (model.save or keras_opt_legacy.save_model)' % filepath)
    config = _json(f.attrs['training_config'])
    try:
        class_name = config['optimizer_config']['class_name']
    except (KeyError, TypeError):
        raise ValueError('%s: its training_config names no optimizer class' % filepath)
    group = _entry(filepath, f, 'optimizer_weights', h5py.Group)
    weight_names = _attribute_list(group, 'weight_names')
    if weight_names is None:
        raise ValueError('%s: optimizer_weights does not list its weight_names' % filepath)
    datasets = [_entry(filepath, group, n, h5py.Dataset) for n in weight_names]
    for dataset in datasets:
        if dataset.dtype.kind not in 'biuf':
            raise ValueError('%s: optimizer state %s of dtype %s is not numeric'
                             % (filepath, dataset.name, dataset.dtype))
    names = _names(filepath, group, STATE_NAMES, len(datasets))
    if names is None:
        return class_name, datasets, []
    return class_name, dict(zip(names, datasets)), _names(filepath, group, PARAM_NAMES) or []


def _attribute_list(group, name):
    """The list attribute `name` of `group` as text, also in the chunks ('name0', 'name1', ...)
    Keras writes past 64 KB; None if absent."""
    if name in group.attrs:
        return [_text(n) for n in group.attrs[name]]
    chunks = []
    while '%s%d' % (name, len(chunks)) in group.attrs:
        chunks.append(group.attrs['%s%d' % (name, len(chunks))])
    return [_text(n) for chunk in chunks for n in chunk] if chunks else None


def _names(filepath, group, key, count=None):
    """Our names `key` in `group`: a dataset (an attribute in version 1 files), `count` of them
    if given (checked before it is read); None if absent."""
    if key not in group:
        names = _attribute_list(group, key)
    else:
        dataset = _entry(filepath, group, key, h5py.Dataset)
        if dataset.dtype.kind not in 'OSU' or len(dataset.shape) != 1 or (
                count is not None and dataset.shape[0] != count):
            raise ValueError('%s: %s is not a list of %s names' % (filepath, key, count or 'the'))
        names = [_text(n) for n in dataset[()]]
    if names is not None and count is not None and len(names) != count:
        raise ValueError('%s: %d state names for %d arrays' % (filepath, len(names), count))
    return names


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
    with h5py.File(filepath, 'r') as f:
        _load(optimizer, params, names, variables, builtin.non_negative(optimizer, names),
              filepath, *_read(f, filepath))


def _load(optimizer, params, names, variables, non_negative, filepath, class_name, saved,
          saved_params):
    """Check every saved entry against the optimizer's state (shapes and dtypes from the file's
    metadata), then read the arrays, check their values, and assign them all at once."""
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
            assignments.append((name, variable, value))
    unused = [n for n in saved if n not in names and not (converted and n.startswith('vhat/'))]
    problems += ['%s: in the file, not in the optimizer' % n for n in unused]
    if problems:
        raise ValueError('the optimizer state in %s does not fit %s; nothing was loaded:\n  %s'
                         % (filepath, type(optimizer).__name__, '\n  '.join(problems)))
    values = []
    for name, variable, dataset in assignments:
        value = dataset[()]
        check_state_value(name, value, K.dtype(variable), name in non_negative,
                          '; nothing was loaded from %s' % filepath)
        values.append((variable, value))
    if converted and 'm_schedule' in names and 'm_schedule' not in saved:
        values.append((optimizer.m_schedule, _nadam_m_schedule(optimizer, saved)))
    K.batch_set_value(values)


def _nadam_m_schedule(optimizer, saved):
    """Keras does not save Nadam's m_schedule; it is the product of the momentum schedule over
    the steps taken, so it follows from `iterations` (to float32 rounding)."""
    beta_1 = np.float32(K.get_value(optimizer.beta_1))
    m_schedule = np.float32(1.)
    for t in range(1, int(saved['iterations'][()]) + 1):
        m_schedule *= beta_1 * (np.float32(1.) - np.float32(0.5) * np.float32(0.96) ** np.float32(
            t * optimizer.schedule_decay))
    return m_schedule


def load_model(filepath, custom_objects=None):
    """Load a model saved with its optimizer and restore the optimizer strictly
    (`load_optimizer_state`), injecting optimizers that drive the train function themselves
    (Runge-Kutta methods, GradientAccumulation(model_updates='with_update')) -- one call where
    `keras.models.load_model` would need several.

    Not for untrusted files: the architecture is rebuilt by `keras.models.load_model`, which runs
    the code a `Lambda` layer stored in the file. For such a file, build the model in your own
    code, then `model.load_weights(filepath)` and `load_optimizer_state(model, filepath)`, which
    reads data only."""
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
