"""Checkpoints move between Keras versions: saved here, resumed in another environment (another
Keras/TensorFlow/Python, e.g. keras 2.2.4 <-> 2.3.1), and back, the continuation equals the one
in the process that saved.

The other environment is the Python in $KOL_CROSS_PYTHON (`make test-matrix` sets it to the
primary .venv's, `make test` to the keras 2.3.1 environment's once that is built); without it
the tests skip, saying so. This file is also the script the other environment runs.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 7  # mid-cycle for the accumulation and Lookahead configurations
# Measured: bit for bit (0.0) between keras 2.2.4 + TF 1.15 (Python 3.7) and keras 2.2.5 + TF 1.14,
# 2.3.1 + TF 1.14 and 2.3.1 + TF 1.15 (Python 3.6 and 3.7), both ways.
TOLERANCE = 1e-7

CONFIGS = {  # name -> the optimizer, as source (so the other process builds the same one)
    'adam-amsgrad': 'kol.Adam(0.01, amsgrad=True)',
    'nadam': 'kol.Nadam()',
    'rmsprop-decay': 'kol.RMSprop(decay=0.1)',
    'sgd-schedule': 'kol.SGD(schedules.CosineDecay(0.05, 9), momentum=0.9, nesterov=True)',
    'adadelta-formulas': 'kol.Adadelta(fused=False)',
    'accumulation-lookahead': 'kol.Lookahead(kol.GradientAccumulation(kol.Adam(0.01), 4), 2)',
    'accumulation-over-keras-rmsprop': 'kol.GradientAccumulation(keras.optimizers.RMSprop(), 3)',
    'skip-over-keras-nadam': 'kol.SkipNonFinite(keras.optimizers.Nadam())',
}


def run(directory, mode):
    """In this process: 'save' trains STEPS steps per configuration, saves, then continues STEPS
    more into NAME.expected.npy; 'resume' loads each checkpoint and continues into NAME.npy."""
    sys.path.insert(0, HERE)
    import keras
    import tensorflow as tf
    from keras import backend as K
    import keras_opt_legacy as kol
    from keras_opt_legacy import schedules  # noqa: F401 (used by CONFIGS)
    import problems
    batch_of = problems.batches(*problems.data(n=256), size=16)
    for name, source in CONFIGS.items():
        K.clear_session()
        path = os.path.join(directory, name + '.h5')
        if mode == 'save':
            model = problems.mlp()
            model.compile(eval(source), 'mse')
            problems.train(model, STEPS, batch_of)
            kol.save_model(model, path)
            out = path + '.expected.npy'
        else:
            model = kol.load_model(path)
            out = path + '.npy'
        problems.train(model, STEPS, lambda i: batch_of(i + STEPS))
        np.save(out, problems.flat(model.get_weights()))
    with open(os.path.join(directory, mode + '.json'), 'w') as f:
        json.dump({'keras': keras.__version__, 'tensorflow': tf.__version__,
                   'python': '%d.%d' % sys.version_info[:2]}, f)


def other_python():
    python = os.environ.get('KOL_CROSS_PYTHON')
    if not python:
        pytest.skip('no other environment: set KOL_CROSS_PYTHON to its python '
                    '(make test-matrix does)')
    if not os.access(python, os.X_OK):
        pytest.skip('KOL_CROSS_PYTHON=%s does not exist yet (make test-matrix builds it)' % python)
    return python


def in_other(python, directory, mode):
    env = dict(os.environ, PYTHONHASHSEED='0')
    subprocess.run([python, os.path.abspath(__file__), directory, mode], check=True, env=env)


@pytest.mark.parametrize('direction', ['saved-here', 'saved-there'])
def test_a_checkpoint_resumes_identically_in_the_other_environment(tmp_path, direction):
    python = other_python()
    directory = str(tmp_path)
    if direction == 'saved-here':
        subprocess.run([sys.executable, os.path.abspath(__file__), directory, 'save'], check=True)
        in_other(python, directory, 'resume')
    else:
        in_other(python, directory, 'save')
        subprocess.run([sys.executable, os.path.abspath(__file__), directory, 'resume'],
                       check=True)
    with open(os.path.join(directory, 'save.json')) as f, \
            open(os.path.join(directory, 'resume.json')) as g:
        stacks = 'saved under %s, resumed under %s' % (json.load(f), json.load(g))
    diffs = {}
    for name in CONFIGS:
        path = os.path.join(directory, name + '.h5')
        diffs[name] = float(np.max(np.abs(np.load(path + '.npy') -
                                          np.load(path + '.expected.npy'))))
    print('%s: largest difference per configuration %s' % (stacks, diffs))
    bad = {name: d for name, d in diffs.items() if not d <= TOLERANCE}
    assert not bad, '%s: continuations differ by more than %g: %s' % (stacks, TOLERANCE, bad)


if __name__ == '__main__':
    run(*sys.argv[1:])
