"""What Horovod relies on, for every optimizer class of the package (found automatically, so a
new class is covered): gradients come only from `get_gradients` (horovod.keras overrides it to
allreduce; a class calling K.gradients itself would let the workers drift apart silently), and
`get_config` returns every constructor argument (horovod.keras rebuilds the optimizer as
`cls.from_config(opt.get_config())`)."""
import importlib
import inspect
import os
import pkgutil

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
import catalog
import problems
from horovod_required import horovod_or_skip

ABSTRACT = catalog.BASES  # base classes, not optimizers by themselves


def package_classes():
    """Every Keras optimizer class defined in keras_opt_legacy. Not in `reproduce`: it runs the
    blog posts' code as they wrote it, faults included."""
    modules = []
    for info in pkgutil.iter_modules(kol.__path__):
        if info.name == 'reproduce':
            continue
        if info.name == 'distributed' and not horovod_or_skip(skip=False):
            continue
        modules.append(importlib.import_module('keras_opt_legacy.' + info.name))
        if info.name == 'distributed':
            modules[-1].init()  # one worker: allreduce is the identity
    found = {}
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, keras.optimizers.Optimizer) and \
                    cls.__module__.startswith('keras_opt_legacy'):
                found[cls.__qualname__] = cls
    return [found[name] for name in sorted(found) if name not in ABSTRACT]


CLASSES = package_classes()
TABLEAU = {'a': kol.RK23.a, 'b': kol.RK23.b, 'b_embedded': kol.RK23.b_embedded, 'error_order': 2}


def required_arguments(cls):
    """The arguments `cls` cannot be built without."""
    arguments = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == 'optimizer':
            arguments[name] = kol.SGD(lr=0.1)
        elif name in ('steps', 'sync_every', 'start'):
            arguments[name] = 2
        elif name == 'rate':
            arguments[name] = 0.01
        elif name == 'multipliers':
            arguments[name] = {'kernel': 0.5}
        elif name in TABLEAU and cls.a is None:
            if name in ('a', 'b') or issubclass(cls, kol.AdaptiveRungeKutta):
                arguments[name] = TABLEAU[name]
    return arguments


# Arguments holding regular expressions searched in parameter names.
PATTERNS = ('exclude', 'include', 'exclude_from_weight_decay', 'exclude_from_layer_adaptation',
            'skip_list')


def other_values(cls, name, default):
    """Values other than the default to try for a parameter."""
    if isinstance(default, bool):
        return [not default]
    if name == 'model_updates':
        return [choice for choice in cls.MODEL_UPDATES if choice != default]
    if name in PATTERNS:  # regular expressions on the parameter names (which they must match)
        return [['kernel'], ['bias']]
    if name == 'multipliers':
        return [{'bias': 2.}]
    if isinstance(default, int) and not isinstance(default, bool):
        return [default + 1]
    if default is None:
        return [1e-4, 2.]
    return [default * 0.5 + 1e-3, default * 0.9, default * 2 + 1e-3, 0.05]


def test_every_class_is_found():
    """Every class of the catalog (each optimizer of the public namespace, see test_catalog),
    and Horovod's."""
    names = {cls.__qualname__ for cls in CLASSES}
    assert {entry.name for entry in catalog.ENTRIES} <= names
    if horovod_or_skip(skip=False):
        assert {'DistributedOptimizer', 'PeriodicAveraging'} <= names


def constructor_parameters(cls):
    """`(name, default)` of each argument `cls` takes: its signature's, clipnorm/clipvalue
    through **kwargs; not a named Runge-Kutta method's tableau, fixed by the class."""
    signature = inspect.signature(cls.__init__).parameters
    found = [(name, p.default) for name, p in signature.items() if name not in ('self', 'kwargs')
             and not (name in TABLEAU and getattr(cls, name, None) is not None)]
    if 'kwargs' in signature:
        found += [('clipnorm', None), ('clipvalue', None)]
    return found


@pytest.mark.parametrize('cls', CLASSES, ids=lambda cls: cls.__qualname__)
def test_get_config_returns_every_constructor_argument(cls):
    """Each argument, set to a value other than its default, is in the config and survives
    `from_config(get_config())`."""
    base = required_arguments(cls)
    for name, default in constructor_parameters(cls):
        if name == 'optimizer':
            assert 'optimizer' in cls(**base).get_config()
            continue
        default = base.get(name, default)
        # A tableau given is checked as given (another one must match it in size).
        for value in [default] if name in TABLEAU else other_values(cls, name, default):
            try:
                optimizer = cls(**dict(base, **{name: value}))
                break
            except (TypeError, ValueError):
                continue  # not a valid value of this parameter: try the next one
        else:
            pytest.fail('no valid value other than %r found for %s' % (default, name))
        config = optimizer.get_config()
        assert name in config, name
        if name not in TABLEAU:  # kept in a normal form (rows padded with zeros)
            assert config[name] == (pytest.approx(value) if isinstance(value, float)
                                    else value), name
        again = type(optimizer).from_config(config)
        assert type(again) is cls and again.get_config() == config, name


def trained_weights(make_optimizer, override=None, subclass=False):
    """Weights after 3 batches; `override(original)` returns a replacement get_gradients,
    installed on the instance or (as horovod.keras does) on a subclass rebuilt from the config."""
    K.clear_session()
    optimizer = make_optimizer()
    if override is not None and subclass:
        original = type(optimizer).get_gradients
        cls = type(type(optimizer).__name__, (type(optimizer),),
                   {'get_gradients': lambda self, loss, params: override(
                       lambda l, p: original(self, l, p))(loss, params)})
        optimizer = cls.from_config(optimizer.get_config())
    elif override is not None:
        optimizer.get_gradients = override(optimizer.get_gradients)
    model = problems.compiled(optimizer)
    x, y = problems.data()
    problems.train(model, 3, problems.batches(x, y))
    return problems.flat(model.get_weights())


def shifted(get_gradients):
    """A get_gradients whose result differs from the true gradient."""
    return lambda loss, params: [g + 1. for g in get_gradients(loss, params)]


@pytest.mark.parametrize('subclass', [False, True], ids=['instance', 'subclass'])
@pytest.mark.parametrize('cls', CLASSES, ids=lambda cls: cls.__qualname__)
def test_gradients_come_from_get_gradients(cls, subclass):
    make = lambda: cls(**required_arguments(cls))  # noqa: E731
    plain = trained_weights(make)
    assert np.all(np.isfinite(plain))
    overridden = trained_weights(make, shifted, subclass)
    # Relative to how far the weights moved at all (LARS at its defaults moves them ~1e-4).
    moved = np.abs(plain - problems.flat(problems.initial_weights())).max()
    assert np.abs(overridden - plain).max() > 0.1 * moved > 0
