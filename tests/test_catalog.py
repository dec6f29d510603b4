"""tests/catalog.py stays true: it has one entry per optimizer class of the public namespace (so
a new class is covered by every test that reads it), each rule has the option sets those tests
need and its NumPy reference, and what an entry states about its class (slots, scalar state,
the layout of `weights`) is what the class does."""
import inspect

import pytest
import keras
from keras import backend as K

import keras_opt_legacy as kol
import catalog
import problems
import reference


# The rules of issue 18 (keras_opt_legacy.rules).
NEW_RULES = ('RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound', 'Yogi', 'AdaBelief', 'Lion')


def public_classes():
    """The optimizer classes of `kol.__all__`, base classes included."""
    return {name for name in kol.__all__ if inspect.isclass(getattr(kol, name)) and
            issubclass(getattr(kol, name), keras.optimizers.Optimizer)}


def test_every_public_optimizer_class_has_one_entry():
    classes = public_classes()
    entries = [entry.name for entry in catalog.ENTRIES]
    assert len(entries) == len(set(entries))
    missing = classes - set(entries) - catalog.BASES
    assert not missing, 'no catalog entry (tests/catalog.py) for %s' % sorted(missing)
    assert set(entries) <= classes, 'not a public optimizer class: %s' % sorted(
        set(entries) - classes)
    assert {'SGD', 'RMSprop', 'Adagrad', 'Adadelta', 'Adam', 'Adamax', 'Nadam', 'Ftrl', 'SGDW',
            'AdamW', 'NadamW'} | set(NEW_RULES) == {entry.name for entry in catalog.rules()}


@pytest.mark.parametrize('entry', catalog.rules(), ids=lambda e: e.name)
def test_every_rule_has_its_reference_and_the_option_sets_the_tests_need(entry):
    assert entry.reference is catalog.REFERENCES[entry.name]
    assert issubclass(entry.cls, kol.Optimizer)
    kinds = set().union(*[option.kinds for option in entry.options])
    needed = set(catalog.EVERY_RULE) | (set(catalog.EVERY_KERAS_RULE) if entry.keras else set())
    assert needed <= kinds, 'no option set of kind %s' % sorted(needed - kinds)
    if entry.keras:
        assert issubclass(getattr(keras.optimizers, entry.keras), keras.optimizers.Optimizer)
    else:
        assert not {'keras', 'keras-checkpoint', 'accumulation'} & kinds
    parameters = inspect.signature(entry.cls.__init__).parameters
    assert entry.lr > 0 and set(entry.space) <= set(parameters)
    assert set(entry.loose_slots) <= set().union(
        *[catalog.slots(entry, option.kwargs) for option in entry.options])


def test_every_kind_has_cases_and_their_ids_are_unique_and_found_again():
    for kind in catalog.KINDS:
        ids = [case.id for case in catalog.cases(kind)]
        assert len(ids) == len(set(ids)), kind
        for case, (entry, option) in zip(ids, catalog.options_of(kind)):
            assert catalog.lookup(case) == (entry, option)


@pytest.mark.parametrize('entry', catalog.ENTRIES, ids=lambda e: e.name)
def test_every_option_set_builds_with_the_slots_the_entry_states(entry):
    for options in [entry.default] + [option.kwargs for option in entry.options]:
        optimizer = catalog.make(entry, options)
        assert type(optimizer) is entry.cls
        assert tuple(optimizer.slot_names) == catalog.slots(entry, options), dict(options)


@pytest.mark.parametrize('entry', catalog.ENTRIES, ids=lambda e: e.name)
def test_weights_are_iterations_scalars_then_the_slots(entry):
    """After a step: `iterations`, the entry's scalars, then each slot of each parameter
    (a wrapper's inner optimizer's state follows)."""
    optimizer = catalog.make(entry)
    model = problems.compiled(optimizer)
    model.train_on_batch(*problems.batches(*problems.data())(0))
    params = model._collected_trainable_weights
    expected = ['iterations'] + list(entry.scalars) + [
        '%s/%s' % (slot, p.op.name) for slot in catalog.slots(entry) for p in params
        if catalog.has_slot(entry, entry.default, slot, K.int_shape(p))]
    assert optimizer.weight_names[:len(expected)] == expected
    for name in entry.scalars:
        assert optimizer.weights[optimizer.weight_names.index(name)] is getattr(optimizer, name)
