"""Extending the package is correct by construction: a subclass that changes a rule gets that rule
(not the parent's fused kernel), classes defined inside a function construct, train, save and
load, and `learning_rate=` works on subclasses of any signature."""
import os

import numpy as np
import pytest
import keras
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import ops
import problems

X, Y = problems.data()
BATCH_OF = problems.batches(X, Y)
DECAY = 0.05


def rule_classes():
    """Every update rule of the package (found through the registry, so a new one is covered)."""
    return sorted((cls for cls in set(kol.custom_objects().values())
                   if isinstance(cls, type) and issubclass(cls, kol.Optimizer)
                   and not issubclass(cls, kol.InjectOptimizer) and cls is not kol.AdamBase),
                  key=lambda cls: cls.__name__)


RULES = [(cls, {}) for cls in rule_classes()] + [(kol.SGD, {'momentum': 0.9}),
                                                 (kol.SGD, {'momentum': 0.9, 'nesterov': True}),
                                                 (kol.Adam, {'amsgrad': True})]


def with_decay(parent):
    """`parent` with its rule changed: the new parameter value also loses DECAY * p."""
    class Decayed(parent):
        def _apply(self, p, g, slots, step):
            return [(v, ops.new_value(v, x) - DECAY * p if v is p else x)
                    for v, x in super(Decayed, self)._apply(p, g, slots, step)]
    return Decayed


def one_step(optimizer):
    model = problems.compiled(optimizer)
    model.train_on_batch(*BATCH_OF(0))
    return model.get_weights()


@pytest.mark.parametrize('cls, options', RULES,
                         ids=['%s%s' % (cls.__qualname__, ''.join('-' + k for k in options))
                              for cls, options in RULES])
def test_a_subclass_that_changes_the_rule_gets_its_rule_with_fused_true(cls, options):
    """Measured before the fix: the subclass ran its parent's fused kernel, and the change did
    nothing (Adam: weights where the changed formula moves them by 5%)."""
    assert cls(**options).fused is True
    got = one_step(with_decay(cls)(**options))
    plain = one_step(cls(fused=False, **options))
    for w, w0, p in zip(got, problems.initial_weights(), plain):
        np.testing.assert_allclose(w, p - DECAY * w0, rtol=1e-6, atol=1e-7)


def test_a_subclass_that_changes_the_step_values_gets_them():
    class HalfRateAdam(kol.Adam):
        def _step_values(self, lr, t):
            return super(HalfRateAdam, self)._step_values(0.5 * lr, t)
    got = problems.trajectory(HalfRateAdam(lr=0.02), 5)
    np.testing.assert_array_equal(got, problems.trajectory(kol.Adam(lr=0.01, fused=False), 5))


def test_the_kernel_is_used_exactly_where_it_computes_the_rule():
    class Configured(kol.Adam):  # only a constructor: the rule, and so the kernel, are Adam's
        def __init__(self, **kwargs):
            super(Configured, self).__init__(lr=0.1, **kwargs)

    class OwnRule(kol.Adam):
        def _apply(self, p, g, slots, step):
            return super(OwnRule, self)._apply(p, g, slots, step)

    class OwnRuleAndKernel(OwnRule):
        def _fused(self, p, g, slots, step):
            return None

    class ChangedAgain(OwnRuleAndKernel):
        def _final_updates(self, step):
            return []
    assert kol.Adam._kernel_is_current() and Configured._kernel_is_current()
    assert not OwnRule._kernel_is_current()
    assert OwnRuleAndKernel._kernel_is_current()
    assert not ChangedAgain._kernel_is_current()
    assert not kol.Optimizer._kernel_is_current()


def local_classes():
    """A rule, a wrapper and a schedule defined inside a function (as bert4keras's factories
    define theirs), registered."""
    @kol.register
    class SignSGD(kol.Optimizer):
        slot_names = ('m',)

        def __init__(self, lr=0.01, beta=0.9, **kwargs):
            super(SignSGD, self).__init__(lr=lr, **kwargs)
            self.beta = self._hyper('beta', beta, kol.checks.UNIT_INTERVAL, variable=True)

        def _apply(self, p, g, slots, step):
            m = self.beta * slots['m'] + (1. - self.beta) * g
            return [(slots['m'], m), (p, p - step.lr * K.sign(m))]

    @kol.register
    class Counting(kol.Wrapper):  # counts the steps it passes on
        def prepare_step(self, grads, params):
            inner = self._prepare_inner(grads, params)

            def build():
                inner_ops = inner()
                return inner_ops + [ops.count_after(self.iterations, inner_ops)]
            return kol.PreparedStep(build, applies=inner.applies)

    @kol.register
    class Halved(kol.schedules.ExponentialDecay):
        def rate(self, step):
            return 0.5 * super(Halved, self).rate(step)
    return SignSGD, Counting, Halved


def test_local_classes_train_save_load_and_resume(tmp_path):
    SignSGD, Counting, Halved = local_classes()
    assert '<' not in SignSGD.__name__
    schedule = Halved(0.1, decay_steps=10, decay_rate=0.5)
    model = problems.compiled(Counting(SignSGD(lr=schedule, beta=0.8)))
    problems.train(model, 4, BATCH_OF)
    path = str(tmp_path / 'local.h5')
    kol.save_model(model, path)
    problems.train(model, 4, lambda i: BATCH_OF(4 + i))
    expected = problems.flat(model.get_weights())
    for load in (kol.load_model, keras.models.load_model):
        loaded = load(path)
        assert type(loaded.optimizer) is Counting
        assert type(loaded.optimizer.optimizer._schedule) is Halved
        kol.load_optimizer_state(loaded, path)
        assert K.get_value(loaded.optimizer.iterations) == 4
        problems.train(loaded, 4, lambda i: BATCH_OF(4 + i))
        np.testing.assert_array_equal(problems.flat(loaded.get_weights()), expected)
    assert os.path.exists(path)


def test_an_unregistered_local_subclass_constructs_and_trains():
    def factory(base):
        class NewOptimizer(base):  # qualname 'factory.<locals>.NewOptimizer'
            pass
        return NewOptimizer
    for base in (kol.Adam, kol.Lookahead, kol.RK4):
        cls = factory(base)
        optimizer = cls(kol.SGD(0.1)) if base is kol.Lookahead else cls(lr=0.01)
        model = problems.compiled(optimizer)
        model.train_on_batch(*BATCH_OF(0))


def test_learning_rate_on_subclasses_of_any_signature():
    class NoLr(kol.Adam):  # passes everything on (bert4keras's factories do)
        def __init__(self, *args, **kwargs):
            super(NoLr, self).__init__(*args, **kwargs)
    assert K.get_value(NoLr(learning_rate=0.02).lr) == np.float32(0.02)
    assert K.get_value(NoLr(0.03).lr) == np.float32(0.03)

    class OwnName(kol.Optimizer):
        def __init__(self, rate=0.1, **kwargs):
            super(OwnName, self).__init__(lr=rate, **kwargs)
    with pytest.raises(TypeError, match='not both'):
        OwnName(learning_rate=0.2)
    with pytest.raises(TypeError, match='lr'):
        kol.Adam(learning_rate=None)
    with pytest.raises(TypeError, match='not both'):
        kol.Adam(lr=0.01, learning_rate=0.02)
    assert K.get_value(kol.Adam(lr=0.001, learning_rate=0.02).lr) == np.float32(0.02)
