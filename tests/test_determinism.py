"""The increment of `iterations` is ordered after every op that reads it (and every update after
every gradient): training is bitwise reproducible, and each step sees the right step number."""
import numpy as np
import pytest
from keras import backend as K

import keras_opt_legacy as kol
import catalog
import problems
import reference

STEPS, RUNS = 40, 5

# Every case (catalog kind 'determinism') reads `iterations` (legacy decay, bias corrections)
# and writes several slots. Each runs on both paths: the default (the kernel library's op or
# TF's fused kernel where one exists, in-place updates elsewhere) and fused=False (the formula
# graph).
# In the version matrix: the rules on a TF kernel, on the library's or with Keras's counterpart
# (the ordering of their kernels on ref vs resource variables); the others share the in-place
# and formula paths.
CASES = [pytest.param(entry, dict(option.kwargs, **path),
                      id=catalog.case_id(entry, option) + suffix)
         for entry, option in catalog.options_of('determinism')
         if not catalog.MATRIX or entry.keras or entry.fused or
         catalog.kernel_ops(entry, option.kwargs) is not None
         for path, suffix in [({}, ''), ({'fused': False}, '-formula')]]


def trajectory(entry, options):
    """The flat weights after each step of STEPS train_on_batch steps, in a fresh graph."""
    K.clear_session()
    return problems.trajectory(catalog.make(entry, options), STEPS)


@pytest.mark.parametrize('entry, options', CASES)
def test_training_is_bitwise_reproducible(entry, options):
    """Five fresh-graph runs of 40 steps give bitwise identical trajectories."""
    first = trajectory(entry, options)
    assert np.abs(first[-1] - problems.flat(problems.initial_weights())).sum() > 0.1
    for run in range(1, RUNS):
        again = trajectory(entry, options)
        assert np.array_equal(first, again), 'run %d differs from run 0 from step %d on' % (
            run, np.argmax(np.any(first != again, axis=1)))


@pytest.mark.parametrize('fused', [False, True], ids=['formula', 'fused'])
def test_decayed_adam_sees_each_step_number_once(fused):
    """Adam with decay=0.1 reads `iterations` twice per step (decayed lr, bias corrections); a read
    of the incremented counter would change both, so it follows the reference at every step."""
    options = {'lr': 0.01, 'decay': 0.1}
    model = problems.mlp()
    model.compile(kol.Adam(fused=fused, **options), 'mse')
    ref = reference.Adam(**options)
    weights = [w.astype(np.float64) for w in problems.initial_weights()]
    batch_of = problems.batches(*problems.data())
    for i in range(STEPS):
        x, y = batch_of(i)
        model.train_on_batch(x, y)
        ref.step(weights, problems.numpy_gradients(weights, x, y))
        assert K.get_value(model.optimizer.iterations) == i + 1
        np.testing.assert_allclose(problems.flat(model.get_weights()), problems.flat(weights),
                                   rtol=1e-5, atol=1e-6, err_msg='step %d' % i)
