"""The optimizer classes of keras_opt_legacy, one entry each: what the tests that cover every
optimizer need to know about it. Adding an optimizer means: its class, its NumPy reference
(reference.py), and one entry here. tests/test_catalog.py checks that every public class has an
entry, and that the facts stated here (slots, scalars, reference) are the class's.

An entry (`Entry`):

- `name`: the class's name in the public namespace (`kol.<name>`).
- `family`: 'rule' (an update rule), 'wrapper' or 'runge_kutta'.
- `default`: the constructor arguments of a default instance: {} for the rules, the required
  arguments for the wrappers and the general Runge-Kutta classes.
- `options`: the non-default option sets the tests use (`Option`: an id, the constructor
  arguments, and the `kinds` of test that use them, see KINDS). A value wrapped in `fresh(...)`
  is built anew for every optimizer made (an inner optimizer, a schedule).
- `lr`: a learning rate that moves the test problem's weights visibly in 30-40 steps.
- `fused`: the TensorFlow fused kernel (the op type, e.g. 'ApplyAdam') that the default
  `fused=True` path runs without the kernel library (KERAS_OPT_LEGACY_KERNELS=0), or None.
- `kernel`: for a rule with ops of the package's kernel library (keras_opt_legacy.kernels), a
  function of the options (and `shape=None`: of one parameter of that shape) giving the op
  types the default `fused=True` path runs on the parameters and slots when the library is
  usable (`kernel_ops`): the library's ('KolApplyX', and `COMPUTING_OPS` such as 'KolNorms')
  and TF's kernels that remain ('ApplyX'), ref forms (on resource variables
  'KolResourceApplyX' / 'ResourceApplyX' count as them); None where those options run none
  of the library's ops (plain SGD, Adam without amsgrad); None for a rule without any.
- `scalars`: the scalar state listed right after `iterations` in `weights` (Nadam's m_schedule).
- `slots`: the per-parameter slot names, or a function of the options giving them.
- `reference`: the NumPy reference class (reference.py), or None.
- `keras`: the name of Keras's built-in optimizer with the same rule, or None.
- `keras_races`: Keras 2.2.4's built-in reads `iterations` unordered against its increment, a
  race the weight-read gate (`problems.gated`) alone does not remove.
- `space`: for the property tests, a Hypothesis strategy per constructor argument.
- `loose_slots`: slots the property tests do not compare at every step (with the reason).
- `slot_applies`: for a rule whose slots depend on the parameter's shape (Adafactor), a
  function `(options, slot, shape) -> bool`; None: every parameter has every slot.

Test cases: `cases(kind)` gives `pytest.param(entry, options, id='<name>-<option id>')` for every
option set of that kind; `make(entry, options)` builds the optimizer.
"""
import collections
import os
import types

import numpy as np
import pytest
from hypothesis import strategies as st

import keras
import keras_opt_legacy as kol
from keras_opt_legacy import schedules
import problems
import reference
import reference_rules

# Every NumPy reference: the eight Keras-era rules and SGDW/AdamW/NadamW (reference.py), the
# rules of issue 18 (reference_rules.py).
REFERENCES = dict(reference.REFERENCES, **reference_rules.REFERENCES)

# What each kind of option set is for, and the tests that run it.
KINDS = {
    'all-slots': 'defaults, except what it takes to have every slot (SGD: momentum); '
                 'test_api (weights layout), test_state (reset of Keras built-ins)',
    'config': 'every argument other than its default; test_api (config round trip, '
              'fresh-process resume)',
    'reset': 'test_state: reset_optimizer equals a fresh optimizer',
    'determinism': 'reads `iterations` (decay, bias corrections), writes several slots; '
                   'test_determinism, on the fused and the formula path',
    'reference': 'the optimizer\'s own options, with `lr`; test_reference_match',
    'keras': 'options Keras\'s built-in takes too; test_keras_and_tf (same trajectory)',
    'keras-checkpoint': 'test_state: a checkpoint of Keras\'s built-in loads into ours',
    'accumulation': 'test_wrappers: accumulating ours and Keras\'s equals the large batch',
    'resume': 'test_state: exact resume in a fresh process (wrappers, inject optimizers, the '
              'rules of issue 18)',
    'cross-version': 'test_cross_version: a checkpoint resumes in another Keras/TF/Python',
}

# Base classes: in the public namespace, but not optimizers by themselves.
BASES = {'OptimizerBase', 'Optimizer', 'Wrapper', 'InjectOptimizer', 'AdamBase', '_AdamFamily',
         'Averaging'}

# Kinds every rule must have (so a new rule is covered), and those every rule with a Keras
# counterpart must have.
EVERY_RULE = ('all-slots', 'config', 'reset', 'determinism', 'reference')
EVERY_KERAS_RULE = ('keras', 'accumulation')


class fresh(object):
    """A constructor argument built anew for each optimizer `make` builds."""

    def __init__(self, build, text):
        self.build, self.text = build, text

    def __repr__(self):
        return self.text


Option = collections.namedtuple('Option', 'id kwargs kinds')
_ENTRY_FIELDS = ('name family default options lr fused scalars slots reference keras keras_races '
                 'space loose_slots slot_applies kernel')


class Entry(collections.namedtuple('Entry', _ENTRY_FIELDS)):
    __slots__ = ()

    def option(self, option_id):
        for option in self.options:
            if option.id == option_id:
                return option
        raise KeyError('%s has no option set %r (it has %s)' % (
            self.name, option_id, ', '.join(o.id for o in self.options)))

    @property
    def cls(self):
        return getattr(kol, self.name)


def option_id(kwargs):
    """'default', else the arguments as 'k=v,...' in sorted order."""
    return ','.join('%s=%s' % kv for kv in sorted(kwargs.items())) or 'default'


def use(kwargs, *kinds, **named):
    """An option set: `kwargs` for the tests of `kinds`; id= names it (else `option_id`)."""
    unknown = set(kinds) - set(KINDS)
    assert not unknown, 'unknown kinds %s' % unknown
    return Option(named.pop('id', None) or option_id(kwargs), types.MappingProxyType(dict(kwargs)),
                  frozenset(kinds))


def _entry(name, family, options=(), default=None, lr=None, fused=None, scalars=(), slots=(),
           reference=None, keras=None, keras_races=False, space=None, loose_slots=(),
           slot_applies=None, kernel=None):
    ids = [o.id for o in options]
    assert len(set(ids)) == len(ids), '%s: option ids repeat: %s' % (name, ids)
    kwargs = [dict(o.kwargs) for o in options]
    assert all(kwargs.count(k) == 1 for k in kwargs), '%s: an option set repeats' % name
    return Entry(name, family, types.MappingProxyType(dict(default or {})), tuple(options), lr,
                 fused, tuple(scalars), slots, reference, keras, keras_races, space,
                 tuple(loose_slots), slot_applies, kernel)


def rule(name, **fields):
    return _entry(name, 'rule', reference=REFERENCES[name], **fields)


# ---- Hypothesis strategies for the property tests ----------------------------------------------

def f32(low, high):
    """Floats exactly representable in float32, so TF and the float64 reference see one value."""
    return st.floats(float(np.float32(low)), float(np.float32(high)), width=32)


UNIT = f32(0., 0.999)
# Adam's family divides by sqrt(v)+eps or u+eps: with beta_2 near 0 and a zero gradient that is
# eps alone (1e-7), which magnifies float32's rounding of a cancelling m = b1*m + (1-b1)*g (an
# error of ~1e-11 in m moved a parameter by 2e-3 in a run of this test) -- float32 itself, not
# the optimizer. From 0.5 on, u and v remember the last gradients over these few steps.
BETA_2 = f32(0.5, 0.999)


def _away_from_rectification(beta_2):
    """Whether RAdam's rho_t (rules._rectification) stays 0.05 from its threshold 5 over the
    property tests' steps (t <= 6): near it, float32 (the rule) and float64 (the reference) can
    take different sides (beta_2 = 0.99899769: rho_5 = 5.005 in float32, 4.996 in float64; a
    drawn AdaBelief(rectify=True) example failed on it) -- float32, not the optimizer. float32's
    rho_t is within 0.011 of float64's there (measured over 2e5 values); 5% of the range goes.
    (The default 0.999, rho_5 = 4.996, is left to the reference tests.)"""
    rho_inf = 2. / (1. - beta_2) - 1.
    return all(abs(rho_inf - 2. * t * beta_2 ** t / (1. - beta_2 ** t) - 5.) > 0.05
               for t in range(1, 7))


RECTIFIED_BETA_2 = BETA_2.filter(_away_from_rectification)  # RAdam's, AdaBelief's
EPSILON = f32(1e-7, 1e-2)
STRENGTH = f32(0., 0.5)


# ---- the update rules --------------------------------------------------------------------------

# Decoupled weight decay: large enough that, scaled by the lr or not, it moves the property
# tests' parameters visibly in a few steps.
WEIGHT_DECAY = f32(0., 0.5)


def _decay_schedule():
    """A weight-decay schedule read at the update count (the determinism tests' `iterations`)."""
    return fresh(lambda: schedules.PiecewiseLinear([0, 20], [0.5, 0.05]),
                 'PiecewiseLinear([0, 20], [0.5, 0.05])')


def _sgd_slots(options):
    return ('moment',) if options.get('momentum', 0.) > 0 else ()


def _adam_slots(options):
    return ('m', 'v', 'vhat') if options.get('amsgrad') else ('m', 'v')


# The kernel library's ops of each rule (the entries' `kernel`).
def _ops(*types):
    return lambda options, shape=None: frozenset(types)


def _sgd_kernel(options, shape=None):
    return frozenset(['KolApplyKerasMomentum']) if options.get('momentum', 0.) > 0 else None


def _adam_kernel(options, shape=None):
    return frozenset(['KolApplyAdamAmsgrad']) if options.get('amsgrad') else None


def _decayed(rule_kernel, step_without):
    """A W rule's: the decay pass (KolApplyDecay), then the rule's kernel (or `step_without`,
    the TF kernel it keeps)."""
    return lambda options, shape=None: frozenset(['KolApplyDecay']) | (
        rule_kernel(options) or frozenset([step_without]))


def _adamw_kernel(options, shape=None):
    """Decay and Adam's step in one op (KolApplyAdamW); with amsgrad the decay pass, then
    Adam(amsgrad)'s op; a parameter excluded from the decay takes ApplyAdam."""
    if options.get('amsgrad'):
        return frozenset(['KolApplyDecay', 'KolApplyAdamAmsgrad'])
    return frozenset(['KolApplyAdamW'] + (['ApplyAdam'] if options.get(
        'exclude_from_weight_decay') else []))


RULES = [
    rule('SGD', lr=0.1, fused='ApplyGradientDescent', slots=_sgd_slots, keras='SGD',
         kernel=_sgd_kernel,
         space=dict(lr=f32(1e-3, 0.5), momentum=f32(0., 0.99), nesterov=st.booleans()),
         options=[
             use({'momentum': 0.9}, 'all-slots'),
             use({'lr': 0.1}, 'reference', 'keras', 'accumulation'),
             use({'lr': 0.1, 'momentum': 0.9}, 'reference', 'keras', 'keras-checkpoint'),
             use({'lr': 0.1, 'momentum': 0.9, 'nesterov': True},
                 'reference', 'keras', 'accumulation', 'reset'),
             use({'lr': 0.1, 'decay': 0.05}, 'keras'),
             use({'lr': 0.1, 'momentum': 0.9, 'decay': 0.05}, 'keras'),
             use({'lr': 0.1, 'momentum': 0.9, 'nesterov': True, 'decay': 0.05}, 'determinism'),
             use({'lr': fresh(lambda: schedules.CosineDecay(0.05, 9), 'CosineDecay(0.05, 9)'),
                  'momentum': 0.9, 'nesterov': True}, 'cross-version', id='cosine-schedule'),
             use(dict(lr=0.2, momentum=0.5, nesterov=True, decay=0.01, clipnorm=1.), 'config',
                 id='non-default'),
         ]),
    # Its fused path: the kernel library's KolApplyKerasRMSProp; without the library, Adagrad's
    # kernel (TF 1.15's ApplyAdagradV2) without the accumulator update.
    rule('RMSprop', lr=0.01, fused='ApplyAdagradV2', slots=('accumulator',), keras='RMSprop',
         kernel=_ops('KolApplyKerasRMSProp'),
         space=dict(lr=f32(1e-4, 0.1), rho=UNIT, epsilon=EPSILON),
         options=[
             use({}, 'all-slots', 'accumulation', 'keras-checkpoint'),
             use({'lr': 0.01}, 'reference', 'keras'),
             use({'lr': 0.01, 'rho': 0.5, 'epsilon': 1e-4}, 'reference'),
             use({'lr': 0.01, 'decay': 0.05}, 'keras', 'determinism'),
             use({'decay': 0.1}, 'reset', 'cross-version'),
             use(dict(lr=0.01, rho=0.8, epsilon=1e-5, clipvalue=0.5), 'config', id='non-default'),
         ]),
    rule('Adagrad', lr=0.1, fused='ApplyAdagradV2', slots=('accumulator',), keras='Adagrad',
         space=dict(lr=f32(1e-3, 0.5), epsilon=EPSILON),
         options=[
             use({}, 'all-slots', 'reset', 'accumulation'),
             use({'lr': 0.1}, 'reference', 'keras'),
             use({'lr': 0.1, 'epsilon': 1e-3}, 'reference'),
             use({'lr': 0.1, 'decay': 0.05}, 'keras', 'determinism'),
             use(dict(lr=0.2, epsilon=1e-4, decay=0.1), 'config', id='non-default'),
         ]),
    rule('Adadelta', lr=1.0, fused='ApplyAdadelta', slots=('accumulator', 'delta_accumulator'),
         keras='Adadelta', space=dict(lr=f32(0.1, 1.), rho=UNIT, epsilon=EPSILON),
         options=[
             use({}, 'all-slots', 'reset', 'accumulation'),
             use({'lr': 1.0}, 'reference', 'keras'),
             use({'lr': 1.0, 'rho': 0.8}, 'reference'),
             use({'lr': 1.0, 'decay': 0.05}, 'keras', 'determinism'),
             use({'fused': False}, 'cross-version'),
             use(dict(lr=0.5, rho=0.9, epsilon=1e-6), 'config', id='non-default'),
         ]),
    rule('Adam', lr=0.01, fused='ApplyAdam', slots=_adam_slots, keras='Adam', keras_races=True,
         kernel=_adam_kernel,
         space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=BETA_2, epsilon=EPSILON,
                    amsgrad=st.booleans()),
         options=[
             use({}, 'all-slots', 'keras-checkpoint'),
             use({'amsgrad': True}, 'keras-checkpoint'),
             use({'lr': 0.01}, 'reference', 'keras', 'accumulation'),
             use({'lr': 0.01, 'amsgrad': True}, 'reference', 'accumulation', 'reset',
                 'cross-version'),
             use({'lr': 0.01, 'beta_1': 0.5, 'beta_2': 0.9}, 'reference'),
             use({'lr': 0.01, 'amsgrad': True, 'decay': 0.05}, 'keras', 'determinism'),
             use({'lr': 0.01, 'decay': 0.05}, 'determinism'),
             use(dict(lr=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-4, amsgrad=True, decay=0.2),
                 'config', id='non-default'),
         ]),
    rule('Adamax', lr=0.02, fused='ApplyAdaMax', slots=('m', 'u'), keras='Adamax',
         keras_races=True, space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=BETA_2,
                                      epsilon=EPSILON),
         options=[
             use({}, 'all-slots', 'reset', 'accumulation'),
             use({'lr': 0.02}, 'reference'),
             use({'lr': 0.02, 'beta_1': 0.8}, 'reference'),
             use({'lr': 0.02, 'decay': 0.05}, 'keras', 'determinism'),
             use(dict(lr=0.01, beta_1=0.7, beta_2=0.9, epsilon=1e-3), 'config', id='non-default'),
         ]),
    # The kernel library's KolApplyNadam; without it the moving averages in place, then the
    # formula's step. Keras 2.2.4's Nadam has no decay.
    rule('Nadam', lr=0.01, scalars=('m_schedule',), slots=('m', 'v'), keras='Nadam',
         keras_races=True, kernel=_ops('KolApplyNadam'),
         space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=BETA_2, epsilon=EPSILON,
                    schedule_decay=f32(0., 0.5)),  # wide: its warm-up must visibly matter
         options=[
             use({}, 'all-slots', 'reset', 'accumulation', 'keras-checkpoint', 'cross-version'),
             use({'lr': 0.01}, 'reference'),
             use({'lr': 0.01, 'schedule_decay': 0.1}, 'reference', 'keras'),
             use({'lr': 0.01, 'decay': 0.05}, 'determinism'),
             use(dict(lr=0.01, beta_1=0.8, beta_2=0.9, epsilon=1e-3, schedule_decay=0.01),
                 'config', id='non-default'),
         ]),
    rule('Ftrl', lr=0.5, fused='ApplyFtrl', slots=('accumulator', 'linear'),
         # -0.5 exactly takes the sqrt path of the implementation, anything else K.pow.
         space=dict(lr=f32(0.01, 1.), learning_rate_power=st.just(-0.5) | f32(-1., -0.1),
                    initial_accumulator_value=f32(0.01, 1.), l1_regularization_strength=STRENGTH,
                    l2_regularization_strength=STRENGTH,
                    l2_shrinkage_regularization_strength=STRENGTH),
         # `linear` adds (acc'^-power - acc^-power)/lr * p, a difference of nearly equal float32
         # numbers divided by lr, so its own rounding error can exceed 1e-5 of it; the
         # parameter, which divides it by acc'^-power/lr again, is well conditioned.
         loose_slots=('linear',),
         options=[
             use({}, 'all-slots'),
             use({'lr': 0.5}, 'reference', 'reset'),
             use({'lr': 0.5, 'l1_regularization_strength': 0.01}, 'reference'),
             use({'lr': 0.5, 'l2_regularization_strength': 0.1}, 'reference'),
             use({'lr': 0.5, 'l2_shrinkage_regularization_strength': 0.1}, 'reference'),
             use({'lr': 0.5, 'learning_rate_power': -0.7, 'initial_accumulator_value': 0.5},
                 'reference'),
             use({'lr': 0.5, 'decay': 0.05, 'l1_regularization_strength': 0.01}, 'determinism'),
             use(dict(lr=0.1, learning_rate_power=-0.7, initial_accumulator_value=0.3,
                      l1_regularization_strength=0.01, l2_regularization_strength=0.02,
                      l2_shrinkage_regularization_strength=0.03), 'config', id='non-default'),
         ]),
    # Decoupled weight decay built into a rule (reference.Decoupled over the rule's reference):
    # the decay in place, then the parent's step, its fused kernel included.
    rule('SGDW', lr=0.1, fused='ApplyGradientDescent', slots=_sgd_slots,
         kernel=_decayed(_sgd_kernel, 'ApplyGradientDescent'),
         space=dict(lr=f32(1e-3, 0.5), momentum=f32(0., 0.99), nesterov=st.booleans(),
                    weight_decay=WEIGHT_DECAY, scale_by_lr=st.booleans()),
         options=[
             use({'momentum': 0.9}, 'all-slots'),
             use({'lr': 0.1, 'weight_decay': 0.01, 'scale_by_lr': False}, 'reference'),
             use({'lr': 0.1, 'momentum': 0.9, 'nesterov': True, 'weight_decay': 0.1},
                 'reference', 'reset'),
             use({'lr': 0.1, 'momentum': 0.9, 'nesterov': True, 'decay': 0.05,
                  'weight_decay': _decay_schedule()}, 'determinism', id='decayed-schedule'),
             use(dict(lr=0.2, momentum=0.5, nesterov=True, decay=0.01, clipnorm=1.,
                      weight_decay=0.05, exclude_from_weight_decay=['bias'], scale_by_lr=False),
                 'config', id='non-default'),
         ]),
    rule('AdamW', lr=0.01, fused='ApplyAdam', slots=_adam_slots, kernel=_adamw_kernel,
         space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=BETA_2, epsilon=EPSILON,
                    amsgrad=st.booleans(), weight_decay=WEIGHT_DECAY, scale_by_lr=st.booleans()),
         options=[
             use({}, 'all-slots'),
             use({'lr': 0.01, 'weight_decay': 0.1}, 'reference'),
             use({'lr': 0.01, 'amsgrad': True, 'weight_decay': 0.01, 'scale_by_lr': False},
                 'reference'),
             use({'lr': 0.01, 'amsgrad': True, 'weight_decay': 0.1,
                  'exclude_from_weight_decay': ['bias']}, 'reset', 'cross-version',
                 id='amsgrad-biases-excluded'),
             use({'lr': 0.01, 'decay': 0.05, 'weight_decay': _decay_schedule()}, 'determinism',
                 id='decayed-schedule'),
             use(dict(lr=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-4, amsgrad=True, decay=0.2,
                      weight_decay=0.05, exclude_from_weight_decay=['bias'], scale_by_lr=False),
                 'config', id='non-default'),
         ]),
    rule('NadamW', lr=0.01, scalars=('m_schedule',), slots=('m', 'v'),
         kernel=_decayed(_ops('KolApplyNadam'), None),
         space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=BETA_2, epsilon=EPSILON,
                    schedule_decay=f32(0., 0.5), weight_decay=WEIGHT_DECAY,
                    scale_by_lr=st.booleans()),
         options=[
             use({}, 'all-slots', 'reset'),
             use({'lr': 0.01, 'weight_decay': 0.1}, 'reference'),
             use({'lr': 0.01, 'schedule_decay': 0.1, 'weight_decay': 0.02, 'scale_by_lr': False},
                 'reference'),
             use({'lr': 0.01, 'decay': 0.05, 'weight_decay': 0.1}, 'determinism'),
             use(dict(lr=0.01, beta_1=0.8, beta_2=0.9, epsilon=1e-3, schedule_decay=0.01,
                      decay=0.1, weight_decay=0.05, exclude_from_weight_decay=['kernel'],
                      scale_by_lr=False), 'config', id='non-default'),
         ]),
]


# ---- the rules of issue 18 ----------------------------------------------------------------------

def _adafactor_slots(options):
    return ('vr', 'vc', 'v') + (('m',) if options.get('beta_1') else ())


def _adafactor_factors(options, shape):
    """Whether Adafactor factors a parameter of `shape` (keeps vr, vc) with `options`."""
    return options.get('factored', True) and len(shape) >= 2 and \
        min(shape[-2:]) >= options.get('min_dim_size_to_factor', 0)


def _adafactor_slot_applies(options, slot, shape):
    return slot == 'm' or (slot in ('vr', 'vc')) == _adafactor_factors(options, shape)


def _adafactor_kernel(options, shape=None):
    """A factored parameter's passes (the RMS of the update a pass of its own, with clipping),
    and a full v's; on the test model (`shape` None) both: its kernel is factored, its bias not.
    None for the test model where whether it factors depends on min_dim_size_to_factor."""
    if shape is None and options.get('min_dim_size_to_factor'):
        return None
    momentum = 'Momentum' if options.get('beta_1') else ''
    full = {'KolApplyAdafactorMoments', 'KolApplyAdafactor' + momentum}
    factored = {'KolApplyAdafactorFactoredMoments', 'KolApplyAdafactorFactored' + momentum}
    if options.get('clipping_threshold', 1.) is not None:
        factored.add('KolAdafactorFactoredRms')
    if shape is None:
        return frozenset(factored | full if options.get('factored', True) else full)
    return frozenset(factored if _adafactor_factors(options, shape) else full)


# The library's ops that compute from tensors and write no variable.
COMPUTING_OPS = frozenset(['KolNorms', 'KolAdafactorFactoredRms'])


def _adabound_slots(options):
    return ('m', 'v', 'vhat') if options.get('amsbound') else ('m', 'v')


NEW_RULES = [
    # Both sides of its threshold: the momentum step for t <= 5, the rectified one from t = 6.
    rule('RAdam', lr=0.01, slots=('m', 'v'), kernel=_ops('KolApplyRAdam'),
         space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=RECTIFIED_BETA_2, epsilon=EPSILON),
         options=[
             use({}, 'all-slots', 'reset'),
             use({'lr': 0.01}, 'reference', 'resume'),
             use({'lr': 0.01, 'beta_1': 0.5, 'beta_2': 0.99}, 'reference'),
             use({'lr': 0.01, 'decay': 0.05}, 'determinism'),
             use(dict(lr=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-4, decay=0.1), 'config',
                 id='non-default'),
         ]),
    # The biases start at zero: the trust ratio's zero-norm case on the first step.
    rule('LAMB', lr=0.01, slots=('m', 'v'),
         kernel=_ops('KolApplyLambMoments', 'KolApplyLambUpdate'),
         space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=BETA_2, epsilon=EPSILON,
                    weight_decay_rate=f32(0., 0.5)),
         options=[
             use({}, 'all-slots', 'reset'),
             use({'lr': 0.01}, 'reference'),
             use({'lr': 0.01, 'weight_decay_rate': 0.1, 'exclude_from_weight_decay': ['bias']},
                 'reference', 'resume', id='decay-biases-excluded'),
             use({'lr': 0.01, 'weight_decay_rate': 0.1,
                  'exclude_from_layer_adaptation': ['bias']}, 'reference',
                 id='decay-biases-not-adapted'),
             use({'lr': 0.01, 'decay': 0.05, 'weight_decay_rate': 0.01}, 'determinism'),
             use(dict(lr=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-4, weight_decay_rate=0.01,
                      exclude_from_weight_decay=['bias'], exclude_from_layer_adaptation=['bias'],
                      decay=0.1), 'config', id='non-default'),
         ]),
    rule('LARS', lr=5., fused='ApplyMomentum', slots=('momentum',),
         kernel=_ops('KolNorms', 'KolApplyLarsMomentum'),
         space=dict(lr=f32(0.1, 5.), momentum=f32(0., 0.99), weight_decay=f32(0., 0.1),
                    eeta=f32(1e-3, 0.1), nesterov=st.booleans()),
         options=[
             use({}, 'all-slots', 'reset'),
             use({'lr': 5.}, 'reference'),
             use({'lr': 5., 'nesterov': True, 'weight_decay': 0.01}, 'reference', 'resume'),
             use({'lr': 0.1, 'eeta': 0.05, 'skip_list': ['bias']}, 'reference',
                 id='biases-skipped'),
             use({'lr': 5., 'decay': 0.05}, 'determinism'),
             use(dict(lr=1., momentum=0.5, weight_decay=1e-3, eeta=1e-2, epsilon=1e-6,
                      skip_list=['bias'], nesterov=True), 'config', id='non-default'),
         ]),
    # lr=None: tensor2tensor's relative step min(0.01, 1/sqrt(t)) times RMS(p).
    rule('Adafactor', lr=0.01, slots=_adafactor_slots, slot_applies=_adafactor_slot_applies,
         kernel=_adafactor_kernel,
         space=dict(lr=f32(1e-3, 0.1), beta_1=st.just(0.) | f32(0., 0.9),
                    factored=st.booleans(), multiply_by_parameter_scale=st.booleans(),
                    clipping_threshold=st.none() | f32(1., 2.), decay_exponent=f32(0.5, 1.)),
         options=[
             use({'beta_1': 0.9}, 'all-slots', 'reset', 'reference'),
             use({}, 'reference', 'resume'),
             use({'factored': False}, 'reference'),
             use({'lr': 0.01, 'multiply_by_parameter_scale': False, 'beta_1': 0.5},
                 'reference'),
             use({'lr': 0.01, 'decay': 0.05, 'beta_1': 0.9}, 'determinism'),
             use(dict(lr=0.02, beta_1=0.5, clipping_threshold=2., factored=False,
                      multiply_by_parameter_scale=False, min_dim_size_to_factor=4,
                      decay_exponent=0.7), 'config', id='non-default'),
         ]),
    rule('AdaBound', lr=0.01, slots=_adabound_slots, scalars=('initial_lr',),
         kernel=lambda options, shape=None: frozenset(
             ['KolApplyAmsBound' if options.get('amsbound') else 'KolApplyAdaBound']),
         space=dict(lr=f32(1e-4, 0.1), final_lr=f32(0.01, 1.), beta_1=UNIT, beta_2=BETA_2,
                    gamma=f32(1e-3, 0.5), epsilon=EPSILON, amsbound=st.booleans()),
         options=[
             use({'amsbound': True}, 'all-slots', 'reset'),
             use({'lr': 0.01}, 'reference'),
             use({'lr': 0.01, 'amsbound': True, 'final_lr': 0.05, 'gamma': 0.1}, 'reference',
                 'resume', id='amsbound-bounds-bite'),
             use({'lr': 0.01, 'decay': 0.05}, 'determinism'),
             use(dict(lr=0.02, final_lr=0.05, beta_1=0.8, beta_2=0.99, gamma=0.01, epsilon=1e-4,
                      amsbound=True, decay=0.1), 'config', id='non-default'),
         ]),
    rule('Yogi', lr=0.01, slots=lambda options: ('m', 'v') if options.get('beta_1', 0.9) else ('v',),
         kernel=lambda options, shape=None: frozenset(
             ['KolApplyYogi' if options.get('beta_1', 0.9) else 'KolApplyYogiNoMomentum']),
         space=dict(lr=f32(1e-3, 0.1), beta_1=UNIT, beta_2=BETA_2, epsilon=f32(1e-3, 0.1),
                    initial_accumulator_value=f32(1e-6, 0.1)),
         options=[
             use({}, 'all-slots', 'reset'),
             use({'lr': 0.01}, 'reference'),
             use({'lr': 0.01, 'beta_2': 0.9, 'initial_accumulator_value': 0.1}, 'reference',
                 'resume'),
             use({'lr': 0.01, 'beta_1': 0.}, 'reference', id='no-momentum'),  # no m slot
             use({'lr': 0.01, 'decay': 0.05}, 'determinism'),
             use(dict(lr=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-2,
                      initial_accumulator_value=0.01, decay=0.1), 'config', id='non-default'),
         ]),
    # Its denominator is sqrt(s) + eps with s the variance of g - m: with beta_1 near 0, m is
    # nearly g and float32 rounds a residual of ~1e-8 that float64 sees as ~1e-9 -- with a tiny
    # eps that alone changes the step many-fold (float32, not the optimizer: as Adam's BETA_2).
    # The property test draws eps from 1e-6 on; the reference test covers the default 1e-16.
    rule('AdaBelief', lr=0.01, slots=('m', 's'),
         kernel=lambda options, shape=None: frozenset(
             ['KolApplyAdaBeliefRectified' if options.get('rectify') else 'KolApplyAdaBelief']),
         space=dict(lr=f32(1e-4, 0.1), beta_1=UNIT, beta_2=RECTIFIED_BETA_2,
                    epsilon=f32(1e-6, 1e-3), rectify=st.booleans()),
         options=[
             use({}, 'all-slots', 'reset'),
             use({'lr': 0.01}, 'reference'),
             use({'lr': 0.01, 'rectify': True}, 'reference', 'resume'),
             use({'lr': 0.01, 'epsilon': 1e-8}, 'reference'),
             use({'lr': 0.01, 'decay': 0.05, 'rectify': True}, 'determinism'),
             use(dict(lr=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-10, rectify=True, decay=0.1),
                 'config', id='non-default'),
         ]),
    rule('Lion', lr=0.002, slots=('m',), kernel=_ops('KolApplyLion'),
         space=dict(lr=f32(1e-4, 0.01), beta_1=UNIT, beta_2=UNIT, weight_decay=f32(0., 0.5)),
         options=[
             use({}, 'all-slots', 'reset'),
             use({'lr': 0.002}, 'reference'),
             use({'lr': 0.002, 'weight_decay': 0.5}, 'reference', 'resume'),
             use({'lr': 0.002, 'beta_1': 0.5, 'beta_2': 0.9}, 'reference'),
             use({'lr': 0.002, 'decay': 0.05, 'weight_decay': 0.1}, 'determinism'),
             use(dict(lr=0.001, beta_1=0.8, beta_2=0.9, weight_decay=0.05, decay=0.1), 'config',
                 id='non-default'),
         ]),
]
RULES += NEW_RULES


# ---- wrappers ----------------------------------------------------------------------------------

def inner(source):
    """An inner optimizer given as source (its text is its id), built anew for each wrapper."""
    return fresh(lambda: eval(source, {'kol': kol, 'keras': keras, 'problems': problems}), source)


WRAPPERS = [
    _entry('GradientAccumulation', 'wrapper', slots=('accumulator',),
           default={'optimizer': inner('kol.SGD(lr=0.1)'), 'steps': 2},
           options=[
               use({'optimizer': inner('kol.Adam(0.01)'), 'steps': 4}, 'reset', 'resume',
                   id='adam'),
               use({'optimizer': inner('problems.gated(keras.optimizers.Adagrad)()'), 'steps': 3},
                   'reset', id='over-keras-adagrad'),
               use({'optimizer': inner('kol.Adam()'), 'steps': 4, 'model_updates': 'with_update'},
                   'resume', id='with-update-injected'),
               use({'optimizer': inner('keras.optimizers.RMSprop()'), 'steps': 3},
                   'cross-version', id='over-keras-rmsprop'),
           ]),
    _entry('Lookahead', 'wrapper', scalars=('started',), slots=('slow',),
           default={'optimizer': inner('kol.SGD(lr=0.1)')},
           options=[
               use({'optimizer': inner('kol.RMSprop()'), 'sync_period': 2}, 'reset', 'resume',
                   id='rmsprop'),
               use({'optimizer': inner('kol.GradientAccumulation(kol.Adam(0.01), 4)'),
                    'sync_period': 2}, 'cross-version', id='over-accumulation'),
           ]),
    _entry('SkipNonFinite', 'wrapper', scalars=('skipped',),
           default={'optimizer': inner('kol.SGD(lr=0.1)')},
           options=[
               use({'optimizer': inner('kol.Adam(0.01)')}, 'reset', 'resume', id='adam'),
               use({'optimizer': inner('kol.Lookahead(kol.GradientAccumulation(kol.Adamax(), 4), '
                                       '2)')}, 'resume', id='over-lookahead-over-accumulation'),
               use({'optimizer': inner('keras.optimizers.Nadam()')}, 'cross-version',
                   id='over-keras-nadam'),
           ]),
    _entry('WeightDecay', 'wrapper', default={'optimizer': inner('kol.SGD(lr=0.1)'), 'rate': 0.01},
           options=[
               use({'optimizer': inner('kol.Adam(0.01)'), 'rate': 0.1, 'exclude': ['bias']},
                   'reset', id='adam'),
               use({'optimizer': inner('problems.gated(keras.optimizers.Adagrad)()'),
                    'rate': 0.02, 'scale_by_lr': False}, 'reset', id='over-keras-adagrad'),
               use({'optimizer': inner('kol.GradientAccumulation(kol.Adam(0.01, decay=0.1), 4)'),
                    'rate': fresh(lambda: schedules.PiecewiseLinear([0, 3], [0.5, 0.1]),
                                  'PiecewiseLinear([0, 3], [0.5, 0.1])'),
                    'include': ['kernel']}, 'resume', id='over-accumulation-scheduled'),
               use({'optimizer': inner('kol.SkipNonFinite(keras.optimizers.Nadam())'),
                    'rate': 0.05, 'scale_by_lr': False}, 'resume', id='over-skip-over-keras-nadam'),
               use({'optimizer': inner('keras.optimizers.RMSprop()'), 'rate': 0.05,
                    'exclude': ['bias']}, 'cross-version', id='over-keras-rmsprop'),
           ]),
    _entry('LearningRateMultipliers', 'wrapper',
           default={'optimizer': inner('kol.SGD(lr=0.1)'), 'multipliers': {'kernel': 0.5}},
           options=[
               use({'optimizer': inner('kol.Adam(0.01, decay=0.1)'),
                    'multipliers': {'bias': 0.1, 'kernel': 3.}}, 'reset', 'resume',
                   id='adam'),
           ]),
    _entry('ExponentialMovingAverage', 'wrapper', scalars=('started',), slots=('average',),
           default={'optimizer': inner('kol.SGD(lr=0.1)')},
           options=[
               use({'optimizer': inner('kol.Adam(0.01)'), 'decay': 0.9,
                    'dynamic_decay': True}, 'reset', 'resume', id='adam-dynamic'),
               use({'optimizer': inner('kol.GradientAccumulation(keras.optimizers.Adam(0.01), 3)'),
                    'decay': 0.8}, 'resume', id='over-accumulation-keras-adam'),
           ]),
    _entry('StochasticWeightAveraging', 'wrapper', scalars=('averaged',), slots=('average',),
           default={'optimizer': inner('kol.SGD(lr=0.1)'), 'start': 2},
           options=[
               use({'optimizer': inner('kol.Adam(0.01)'), 'start': 3, 'period': 2}, 'reset',
                   'resume', id='adam'),
               use({'optimizer': inner('kol.SkipNonFinite(keras.optimizers.SGD(0.1))'),
                    'start': 2}, 'reset', id='over-skip-keras-sgd'),
           ]),
]


# ---- Runge-Kutta methods -----------------------------------------------------------------------

def _stages(s, keeps_start):
    return (('start',) if keeps_start else ()) + tuple('g%d' % j for j in range(1, s))


RUNGE_KUTTA = [
    _entry('Heun', 'runge_kutta', slots=_stages(2, False),
           options=[use({'lr': 0.05}, 'resume')]),
    _entry('Midpoint', 'runge_kutta', slots=_stages(2, False)),
    _entry('RK4', 'runge_kutta', slots=_stages(4, True)),
    _entry('RK23', 'runge_kutta', scalars=('step_size',), slots=_stages(4, True),
           options=[use({'lr': 0.05}, 'resume')]),
    _entry('RK45', 'runge_kutta', scalars=('step_size',), slots=_stages(7, True)),
    # The general classes, given RK23's tableau.
    _entry('RungeKutta', 'runge_kutta', slots=_stages(4, True),
           default={'a': kol.RK23.a, 'b': kol.RK23.b}),
    _entry('AdaptiveRungeKutta', 'runge_kutta', scalars=('step_size',), slots=_stages(4, True),
           default={'a': kol.RK23.a, 'b': kol.RK23.b, 'b_embedded': kol.RK23.b_embedded,
                    'error_order': 2}),
]

ENTRIES = RULES + WRAPPERS + RUNGE_KUTTA
_BY_NAME = {e.name: e for e in ENTRIES}
assert len(_BY_NAME) == len(ENTRIES), 'a class has two entries'


# ---- helpers -----------------------------------------------------------------------------------

def entry(name):
    """The entry of the class `name` (an Entry is returned as it is)."""
    return name if isinstance(name, Entry) else _BY_NAME[name]


def rules():
    """The update rules: SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam, Ftrl, and SGDW,
    AdamW, NadamW (decoupled weight decay)."""
    return [e for e in ENTRIES if e.family == 'rule']


def wrappers():
    return [e for e in ENTRIES if e.family == 'wrapper']


def runge_kutta():
    return [e for e in ENTRIES if e.family == 'runge_kutta']


def case_id(entry_, option):
    return '%s-%s' % (entry(entry_).name, option.id)


# The version matrix (`make test-matrix` sets KOL_MATRIX=1) checks what depends on the Keras/TF
# version: one option set per class and kind is enough there, so it does not grow with every
# option set added here (the primary stack runs them all).
MATRIX = os.environ.get('KOL_MATRIX') == '1'


def options_of(kind, where=None):
    """[(entry, option)] of every option set of `kind`, in catalog order (in the version matrix,
    the first of each entry)."""
    assert kind in KINDS, 'unknown kind %r' % kind
    found = [(e, o) for e in ENTRIES for o in e.options
             if kind in o.kinds and (where is None or where(e))]
    if MATRIX:
        found = [(e, o) for i, (e, o) in enumerate(found) if all(e is not f for f, _ in found[:i])]
        if kind == 'resume':  # saving is the same for every rule: the wrappers' state differs
            found = [(e, o) for e, o in found if e.family != 'rule']
    assert found, 'no option set of kind %r' % kind
    return found


def cases(kind, where=None):
    """pytest.param(entry, options, id='<name>-<option id>') for every option set of `kind`
    (of the entries `where(entry)` accepts)."""
    return [pytest.param(e, o.kwargs, id=case_id(e, o)) for e, o in options_of(kind, where)]


def lookup(case):
    """(entry, option) of a case id '<name>-<option id>'."""
    name, _, option = case.partition('-')
    found = entry(name)
    return found, found.option(option)


def arguments(options):
    """The constructor arguments of `options`, `fresh` values built."""
    return {key: value.build() if isinstance(value, fresh) else value
            for key, value in options.items()}


def make(entry_, options=None, **extra):
    """A new optimizer of `entry_` (an Entry or a class name) with `options`: a dict of
    constructor arguments, an option id, or None for the default; `extra` arguments added."""
    found = entry(entry_)
    if options is None:
        options = found.default
    elif isinstance(options, str):
        options = found.option(options).kwargs
    elif isinstance(options, Option):
        options = options.kwargs
    return found.cls(**arguments(dict(options, **extra)))


def make_case(case, **extra):
    """`make` for a case id '<name>-<option id>'."""
    found, option = lookup(case)
    return make(found, option, **extra)


def kernel_ops(entry_, options=None, shape=None):
    """The op types (a frozenset) the default path of `entry_` with `options` runs on the test
    model's parameters and slots (on one parameter of `shape`) when the kernel library is usable
    (see `kernel`), or None where it runs none of the library's ops."""
    found = entry(entry_)
    options = found.default if options is None else options
    return None if found.kernel is None else found.kernel(options, shape=shape)


def has_slot(entry_, options, slot, shape):
    """Whether a parameter of `shape` has the slot `slot` (see `slot_applies`)."""
    found = entry(entry_)
    return found.slot_applies is None or found.slot_applies(options, slot, tuple(shape))


def slots(entry_, options=None):
    """The slot names an optimizer of `entry_` with `options` keeps per parameter."""
    found = entry(entry_)
    options = found.default if options is None else options
    return tuple(found.slots(options) if callable(found.slots) else found.slots)
