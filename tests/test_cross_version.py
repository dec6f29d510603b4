"""Checkpoints move between Keras versions: saved here, resumed in another environment (another
Keras/TensorFlow/Python, e.g. keras 2.2.4 <-> 2.3.1), and back, the continuation equals the one
in the process that saved.

The other environment is the Python in $KOL_CROSS_PYTHON (`make test-matrix` sets it to the
primary .venv's, `make test` to the keras 2.3.1 environment's once that is built); without it
the tests skip, saying so. The configurations are the catalog's kind 'cross-version'
(tests/catalog.py); both environments run them as tests/resume.py's jobs.
"""
import os
import sys

import numpy as np
import pytest

import catalog
import resume

STEPS = 7  # mid-cycle for the accumulation and Lookahead configurations
# Measured: bit for bit (0.0) between keras 2.2.4 + TF 1.15 (Python 3.7) and keras 2.2.5 + TF 1.14,
# 2.3.1 + TF 1.14 and 2.3.1 + TF 1.15 (Python 3.6 and 3.7), both ways.
TOLERANCE = 1e-7
DATA_SIZE = 256

CONFIGS = [case.id for case in catalog.cases('cross-version')]


def other_python():
    python = os.environ.get('KOL_CROSS_PYTHON')
    if not python:
        pytest.skip('no other environment: set KOL_CROSS_PYTHON to its python '
                    '(make test-matrix does)')
    if not os.access(python, os.X_OK):
        pytest.skip('KOL_CROSS_PYTHON=%s does not exist yet (make test-matrix builds it)' % python)
    return python


@pytest.mark.parametrize('direction', ['saved-here', 'saved-there'])
def test_a_checkpoint_resumes_identically_in_the_other_environment(tmp_path, direction):
    """Each configuration trains STEPS steps, is saved (kol.save_model) and continues STEPS more
    in one environment; the other loads it (kol.load_model) and continues the same steps."""
    here, there = (sys.executable, None), (other_python(), {'PYTHONHASHSEED': '0'})
    (saver, saver_env), (loader, loader_env) = \
        (here, there) if direction == 'saved-here' else (there, here)
    directory = str(tmp_path)
    data = dict(data_size=DATA_SIZE, batch_size=16)
    saves = [dict(do='save', case=case, path=os.path.join(directory, case + '.h5'), steps=STEPS,
                  then=STEPS, save='kol', **data) for case in CONFIGS]
    saved, saved_under = resume.in_fresh_process(saves, directory, saver, saver_env)
    loads = [dict(do='resume', path=job['path'], start=STEPS, steps=STEPS, load='kol', **data)
             for job in saves]
    resumed, resumed_under = resume.in_fresh_process(loads, directory, loader, loader_env)

    stacks = 'saved under %s, resumed under %s' % (saved_under, resumed_under)
    diffs = {case: float(np.max(np.abs(there.weights - here_.weights)))
             for case, (_, here_), there in zip(CONFIGS, saved, resumed)}
    print('%s: largest difference per configuration %s' % (stacks, diffs))
    bad = {case: d for case, d in diffs.items() if not d <= TOLERANCE}
    assert not bad, '%s: continuations differ by more than %g: %s' % (stacks, TOLERANCE, bad)
