"""Exact resume in a fresh Python process, written once.

`fresh_process(tmp_path, optimizer, steps, then)` trains `problems.compiled(optimizer)` for
`steps` batches, saves the model, trains `then` batches more, and has a child Python process
load the file and train the same `then` batches. It returns a `Resumed` of three `Run`s:
`before` (the first `steps`, here), `here` (the continuation in this process) and `there` (the
continuation in the child). A `Run` holds the flat weights after each step, the learning rate
before each step (with rates=True), and the class name of the loaded or trained optimizer.

This file is also the child's script: `python resume.py JOBS.json` runs a list of jobs, 'resume'
(load a file and continue) or 'save' (build a catalog case, train, save, continue), each writing
its runs into an .npz file; test_cross_version runs it under another Keras/TensorFlow/Python.
"""
import collections
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import backend as K  # noqa: E402

import keras_opt_legacy as kol  # noqa: E402
import problems  # noqa: E402

Run = collections.namedtuple('Run', 'weights rates optimizer')
Resumed = collections.namedtuple('Resumed', 'before here there')

SAVE = {'kol': lambda model, path: kol.save_model(model, path),  # + the state's names
        'keras': lambda model, path: model.save(path)}
# 'keras': no custom_objects, importing keras_opt_legacy suffices.
LOAD = {'kol': lambda path: kol.load_model(path),
        'keras': lambda path: keras.models.load_model(path)}


def batches(data_size=problems.N, batch_size=16):
    """The i-th batch of `problems.data(n=data_size)`, cycling in order."""
    return problems.batches(*problems.data(n=data_size), size=batch_size)


def train(model, start, steps, batch_of, rates=False):
    """Train on batches start..start+steps-1: a Run."""
    weights, seen = [], []
    for i in range(start, start + steps):
        if rates:
            seen.append(kol.current_learning_rate(model.optimizer))
        model.train_on_batch(*batch_of(i))
        weights.append(problems.flat(model.get_weights()))
    return Run(np.array(weights), np.array(seen) if rates else None,
               type(model.optimizer).__name__)


def save_and_continue(optimizer, path, steps, then, data_size=problems.N, batch_size=16,
                      save='kol', rates=False):
    """In this process: `problems.compiled(optimizer)` (injected if it needs that) trained
    `steps` batches, saved to `path` by `save` ('kol': kol.save_model, 'keras': model.save),
    then `then` batches more. (before, here) Runs."""
    model = problems.compiled(optimizer)
    batch_of = batches(data_size, batch_size)
    before = train(model, 0, steps, batch_of, rates)
    SAVE[save](model, path)
    return before, train(model, steps, then, batch_of, rates)


def load_and_continue(path, start, steps, data_size=problems.N, batch_size=16, load='kol',
                      rates=False):
    """In this process: the model in `path`, loaded by `load` ('kol': kol.load_model, 'keras':
    keras.models.load_model), trained on batches start..start+steps-1: a Run."""
    return train(LOAD[load](path), start, steps, batches(data_size, batch_size), rates)


def fresh_process(tmp_path, optimizer, steps, then=None, data_size=problems.N, batch_size=16,
                  save='kol', load='kol', rates=False):
    """Save after `steps` batches, continue `then` (default: `steps`) batches here and, from
    the file, in a fresh Python process: a Resumed(before, here, there)."""
    then = steps if then is None else then
    path = str(tmp_path / 'model.h5')
    before, here = save_and_continue(optimizer, path, steps, then, data_size, batch_size, save,
                                     rates)
    job = dict(do='resume', path=path, start=steps, steps=then, data_size=data_size,
               batch_size=batch_size, load=load, rates=rates)
    (there,), _ = in_fresh_process([job], str(tmp_path))
    return Resumed(before, here, there)


# ---- jobs, run here or in another process -------------------------------------------------------

def run_job(job):
    """One job (a dict; see `in_fresh_process`) in this process, in a fresh graph: its Runs."""
    K.clear_session()
    data = dict(data_size=job.get('data_size', problems.N), batch_size=job.get('batch_size', 16))
    if job['do'] == 'resume':
        return [load_and_continue(job['path'], job['start'], job['steps'], load=job['load'],
                                  rates=job.get('rates', False), **data)]
    import catalog
    return list(save_and_continue(catalog.make_case(job['case']), job['path'], job['steps'],
                                  job['then'], save=job['save'], rates=job.get('rates', False),
                                  **data))


def environment():
    return {'keras': keras.__version__, 'tensorflow': tf.__version__,
            'python': '%d.%d' % sys.version_info[:2]}


def in_fresh_process(jobs, directory, python=None, env=None):
    """Run `jobs` in one new process of `python` (default: this one), `env` added to the
    environment: (the Runs of each job, that process's `environment()`).

    A job is dict(do='resume', path=, start=, steps=, load='kol'|'keras'), or dict(do='save',
    case='<catalog case id>', path=, steps=, then=, save='kol'|'keras'), either with data_size=,
    batch_size=, rates=."""
    index = len([n for n in os.listdir(directory) if n.startswith('jobs-')])
    spec = os.path.join(directory, 'jobs-%d.json' % index)
    with open(spec, 'w') as f:
        json.dump(jobs, f)
    subprocess.run([python or sys.executable, os.path.abspath(__file__), spec], check=True,
                   env=dict(os.environ, PYTHONWARNINGS='ignore', **(env or {})))
    with open(spec + '.environment.json') as f:
        about = json.load(f)
    return [_read(spec, k) for k in range(len(jobs))], about


def _write(spec, k, runs):
    arrays = {}
    for j, run in enumerate(runs):
        arrays['weights%d' % j] = run.weights
        arrays['optimizer%d' % j] = np.array(run.optimizer)
        if run.rates is not None:
            arrays['rates%d' % j] = run.rates
    np.savez('%s.%d.npz' % (spec, k), **arrays)


def _read(spec, k):
    with np.load('%s.%d.npz' % (spec, k)) as f:
        runs = [Run(f['weights%d' % j], f['rates%d' % j] if 'rates%d' % j in f.files else None,
                    str(f['optimizer%d' % j]))
                for j in range(len([n for n in f.files if n.startswith('weights')]))]
    return runs[0] if len(runs) == 1 else tuple(runs)


def main(spec):
    with open(spec) as f:
        jobs = json.load(f)
    for k, job in enumerate(jobs):
        _write(spec, k, run_job(job))
    with open(spec + '.environment.json', 'w') as f:
        json.dump(environment(), f)


if __name__ == '__main__':
    main(sys.argv[1])
