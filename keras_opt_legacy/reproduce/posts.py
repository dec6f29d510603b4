"""Optimizers as the classic posts wrote them (not public API), for the reproduction.

- `HandwrittenSGD`: the posts' minimal `get_updates`-style SGD.
- `NaiveSoftBatchSGD`: the well-known soft-batch post's version, kept to show its bug:
  `K.switch(cond, K.update(p, new_p), p)` builds the assign op *outside* the conditional, and TF
  runs it on every batch, so the weights move every batch, not every `steps` batches.
- `FixedSoftBatchSGD`: the same code with the three fixes it needs: `K.update(p, K.switch(cond,
  new_p, p))` (select the value, then assign once); the accumulator's reset ordered after its
  read (`K.switch` is a `tf.cond`, whose output is ready as soon as the taken branch is: the zeros
  may be assigned before `a + g` has read the accumulator); and the `iterations` increment
  ordered after the ops that read it (else a cycle may end a batch early).
`keras_opt_legacy.GradientAccumulation` is the general version (any optimizer, state saved).

`race_free(cls)` removes one race from any such class, to compare arithmetic exactly;
`race_free(cls, counter_last=True)` also the other one of Keras's Adam, Adamax and Nadam.
"""
import tensorflow as tf
from keras import backend as K
from keras.legacy import interfaces
from keras.optimizers import Optimizer

from keras_opt_legacy import compat
from keras_opt_legacy.ops import after_all


def race_free(optimizer_class, counter_last=False):
    """`optimizer_class` with its updates waiting for every gradient (and the loss).

    Keras 2.2.4's optimizers -- and every `get_updates` written like them -- may assign a weight
    before a backward-pass op has read it (TF1 ref variables alias `W/read`), so their
    trajectories vary from run to run; this removes that race. `counter_last=True` also removes
    the separate `iterations` race of Keras's Adam, Adamax and Nadam (their step count `t`, and
    whatever else a subclass computes from `iterations`, read unordered against its increment):
    the increment runs after every other update."""

    class RaceFree(optimizer_class):
        def get_gradients(self, loss, params):
            return after_all(optimizer_class.get_gradients(self, loss, params), also=[loss])

        if counter_last:
            def get_updates(self, loss, params):
                updates = list(optimizer_class.get_updates(self, loss, params))
                counters = [u for u in updates if _increments(u, self.iterations)]
                if len(counters) != 1:
                    raise ValueError('expected one increment of iterations among the updates of '
                                     '%s, found %d' % (optimizer_class.__name__, len(counters)))
                others = [u for u in updates if u is not counters[0]]
                with tf.control_dependencies(others):  # after every read of the counter
                    self.updates = others + [K.update_add(self.iterations, 1)]
                return self.updates
    RaceFree.__name__ = 'RaceFree' + optimizer_class.__name__
    return RaceFree


def _increments(update, variable):
    assignment = compat.keras_assignment(update)
    return bool(assignment and assignment[3] and assignment[1].op is variable.op)


class HandwrittenSGD(Optimizer):
    """Plain SGD written the way the posts teach `get_updates`."""

    def __init__(self, lr=0.01, **kwargs):
        super(HandwrittenSGD, self).__init__(**kwargs)
        with K.name_scope(self.__class__.__name__):
            self.iterations = K.variable(0, dtype='int64', name='iterations')
            # `learning_rate`: Keras 2.3 made `lr` a read-only alias of it
            self.learning_rate = K.variable(lr, name='lr')

    @interfaces.legacy_get_updates_support
    def get_updates(self, loss, params):
        grads = self.get_gradients(loss, params)
        self.updates = [K.update_add(self.iterations, 1)]
        for p, g in zip(params, grads):
            self.updates.append(K.update(p, p - self.learning_rate * g))
        return self.updates


class NaiveSoftBatchSGD(Optimizer):
    """SGD meant to apply the mean gradient of `steps` batches once every `steps` batches."""

    def __init__(self, lr=0.01, steps=4, **kwargs):
        super(NaiveSoftBatchSGD, self).__init__(**kwargs)
        with K.name_scope(self.__class__.__name__):
            self.iterations = K.variable(0, dtype='int64', name='iterations')
            # `learning_rate`: Keras 2.3 made `lr` a read-only alias of it
            self.learning_rate = K.variable(lr, name='lr')
        self.steps = steps

    @interfaces.legacy_get_updates_support
    def get_updates(self, loss, params):
        grads = self.get_gradients(loss, params)
        self.updates = []
        apply_now = K.equal(self.iterations % self.steps, self.steps - 1)
        accumulators = [K.zeros(K.int_shape(p)) for p in params]
        self.weights = [self.iterations] + accumulators
        for p, g, a in zip(params, grads, accumulators):
            total = a + g
            new_p = p - self.learning_rate * total / self.steps
            self.updates.append(self._update_param(p, new_p, apply_now))
            self.updates.append(self._update_accumulator(a, total, apply_now))
        self.updates.append(self._count(self.updates))
        return self.updates

    def _update_param(self, p, new_p, apply_now):
        # The bug: K.update(p, new_p) is an op of its own, run whatever the switch selects.
        return K.switch(apply_now, K.update(p, new_p), p)

    def _update_accumulator(self, a, total, apply_now):
        # On the last batch of a cycle the zeros can be assigned before `total` read `a`.
        return K.update(a, K.switch(apply_now, K.zeros_like(a), total))

    def _count(self, updates):
        return K.update_add(self.iterations, 1)  # unordered: may run before apply_now reads


class FixedSoftBatchSGD(NaiveSoftBatchSGD):
    """The naive version with its three fixes."""

    def _update_param(self, p, new_p, apply_now):
        return K.update(p, K.switch(apply_now, new_p, p))  # select the value, assign once

    def _update_accumulator(self, a, total, apply_now):
        with tf.control_dependencies([total]):  # read the accumulator before resetting it
            return super(FixedSoftBatchSGD, self)._update_accumulator(a, total, apply_now)

    def _count(self, updates):
        with tf.control_dependencies(updates):  # after every read of the counter
            return K.update_add(self.iterations, 1)
