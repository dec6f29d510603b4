"""The increment of `iterations` is ordered after every op that reads it (and every update after
every gradient): training is bitwise reproducible, and each step sees the right step number."""
import numpy as np
import pytest
from keras import backend as K

import keras_opt_legacy as kol
import problems
import reference

STEPS, RUNS = 40, 5

# Every case reads `iterations` (legacy decay, bias corrections) and writes several slots; the
# defaults run TF's fused kernel where one exists, so the fusable ones also run with fused=False.
CASES = [
    ('SGD', {'lr': 0.1, 'momentum': 0.9, 'nesterov': True, 'decay': 0.05}),
    ('RMSprop', {'lr': 0.01, 'decay': 0.05}),
    ('Adagrad', {'lr': 0.1, 'decay': 0.05}),
    ('Adadelta', {'lr': 1.0, 'decay': 0.05}),
    ('Adam', {'lr': 0.01, 'decay': 0.05, 'amsgrad': True}),
    ('Adamax', {'lr': 0.02, 'decay': 0.05}),
    ('Nadam', {'lr': 0.01, 'decay': 0.05}),
    ('Ftrl', {'lr': 0.5, 'decay': 0.05, 'l1_regularization_strength': 0.01}),
    ('Adam', {'lr': 0.01, 'decay': 0.05}),
]
CASES += [(name, dict(options, fused=False)) for name, options in CASES
          if name in ('Adadelta', 'Adam', 'Adamax', 'Ftrl') and not options.get('amsgrad')]
IDS = [name + ('-formula' if 'fused' in options else '-amsgrad' if 'amsgrad' in options else '')
       for name, options in CASES]


def trajectory(name, options):
    """The flat weights after each step of STEPS train_on_batch steps, in a fresh graph."""
    K.clear_session()
    return problems.trajectory(getattr(kol, name)(**options), STEPS)


@pytest.mark.parametrize('name, options', CASES, ids=IDS)
def test_training_is_bitwise_reproducible(name, options):
    """Five fresh-graph runs of 40 steps give bitwise identical trajectories."""
    first = trajectory(name, options)
    assert np.abs(first[-1] - problems.flat(problems.initial_weights())).sum() > 0.1
    for run in range(1, RUNS):
        again = trajectory(name, options)
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
