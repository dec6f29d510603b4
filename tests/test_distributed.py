"""Data-parallel training on 2 Horovod workers on localhost (horovodrun --gloo, worker code in
hvd_worker.py): the workers stay identical, 2 x 32 equals 1 x 64, allreduce runs once per update
(counted in Horovod's own timeline), weighted averaging, periodic averaging, an embedding's
sparse gradient (allgathered rows, or sparse_as_dense=True: allreduced dense) equal to one worker,
a killed worker fails the job, and a restart resumes from rank 0's checkpoint on 2 or 1 workers."""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import keras
from keras import backend as K

from horovod_required import horovod_or_skip

horovod_or_skip()

import keras_opt_legacy as kol  # noqa: E402
from keras_opt_legacy import distributed  # noqa: E402
import problems  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, 'hvd_worker.py')
sys.path.insert(0, HERE)
import hvd_worker as worker  # noqa: E402

TIMEOUT = 240  # seconds for one horovodrun job; a hang fails the test instead of CI


def horovodrun(workers, *args, **env):
    """Run hvd_worker.py on `workers` local processes; `(exit code, output, seconds)`. On a
    timeout the whole process group goes, workers included."""
    command = [os.path.join(os.path.dirname(sys.executable), 'horovodrun'), '-np', str(workers),
               '-H', 'localhost:%d' % workers, '--gloo', sys.executable, WORKER] + list(args)
    env = dict(os.environ, HOROVOD_TIMELINE='DYNAMIC', **env)
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, env=env, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail('horovodrun %s did not finish within %ds:\n%s' % (args, TIMEOUT, output))
    return process.returncode, output, time.time() - start


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Every configuration of hvd_worker.CONFIGS trained on 2 workers: name -> [rank 0, rank 1]
    results (weights and optimizer state after each update)."""
    out = str(tmp_path_factory.mktemp('horovod'))
    code, output, seconds = horovodrun(2, 'train', out)
    assert code == 0, output
    print('2-worker training of %d configurations: %.1fs' % (len(worker.CONFIGS), seconds))
    return out, {name: [np.load(os.path.join(out, '%s-rank%d.npz' % (name, rank)))
                        for rank in (0, 1)] for name in worker.CONFIGS}


def single_worker(name, averages=False):
    """The same configuration's inner optimizer on one process, whole batches of 64: the
    weights after each update (with `averages`: and the weight averages' values)."""
    optimizer = {
        'sgd': lambda: kol.SGD(lr=0.1),
        'weighted_sgd': lambda: kol.SGD(lr=0.1),
        'adam': lambda: kol.Adam(lr=0.01),
        'horovod_keras_adam': lambda: kol.Adam(lr=0.01),
        'horovod_keras_heun': lambda: kol.Heun(lr=0.1),
        'accumulation_adam': lambda: kol.GradientAccumulation(kol.Adam(lr=0.01), worker.STEPS),
        'backward_passes_adam': lambda: kol.GradientAccumulation(kol.Adam(lr=0.01),
                                                                 worker.STEPS),
        'accumulation_keras_adam': lambda: kol.GradientAccumulation(
            keras.optimizers.Adam(lr=0.01), worker.STEPS),
        'heun': lambda: kol.Heun(lr=0.1),
        'multipliers_adam': lambda: kol.LearningRateMultipliers(kol.Adam(lr=0.01),
                                                                worker.MULTIPLIERS),
        'multipliers_around_distributed_adam': lambda: kol.LearningRateMultipliers(
            kol.Adam(lr=0.01), worker.MULTIPLIERS),
        'ema_around_distributed_adam': lambda: kol.ExponentialMovingAverage(
            kol.Adam(lr=0.01), decay=0.8, dynamic_decay=True),
        'distributed_ema_adam': lambda: kol.ExponentialMovingAverage(kol.Adam(lr=0.01),
                                                                     decay=0.8),
        'swa_around_distributed_accumulation_adam': lambda: kol.StochasticWeightAveraging(
            kol.GradientAccumulation(kol.Adam(lr=0.01), worker.STEPS), start=2, period=2),
        'embedding_sgd': lambda: kol.SGD(lr=0.1),
        'embedding_adagrad': lambda: kol.Adagrad(lr=0.1),
        'embedding_adam': lambda: kol.Adam(lr=0.01),
        'embedding_lazy_adam': lambda: kol.Adam(lr=0.01, lazy=True),
        'embedding_sgd_sparse_as_dense': lambda: kol.SGD(lr=0.1),
        'embedding_adam_sparse_as_dense': lambda: kol.Adam(lr=0.01),
    }[name]()
    per_update, inside = 1, optimizer
    while inside is not None:  # an accumulation, maybe inside an average
        per_update = getattr(inside, 'steps', per_update)
        inside = getattr(inside, 'optimizer', None)
    model = worker.compiled(name, optimizer)
    weights, averaged = [], []
    for batch in range(worker.UPDATES * per_update):
        part = slice(batch * worker.BATCH, (batch + 1) * worker.BATCH)
        model.train_on_batch(worker.X[part], worker.Y[part])
        if (batch + 1) % per_update == 0:
            weights.append(problems.flat(model.get_weights()))
            averaged.append(worker.averages_of(model.optimizer))
    return (np.array(weights), np.array(averaged)) if averages else np.array(weights)


SYNCHRONOUS = sorted(set(worker.CONFIGS) - {'periodic_sgd'})


@pytest.mark.parametrize('name', SYNCHRONOUS)
def test_workers_stay_identical_and_equal_one_worker_on_the_whole_batch(trained, name):
    rank0, rank1 = trained[1][name]
    # Identical after every update, weights and all optimizer state.
    np.testing.assert_array_equal(rank0['weights'], rank1['weights'])
    np.testing.assert_array_equal(rank0['states'], rank1['states'])
    alone = single_worker(name)
    assert np.abs(alone[-1] - alone[0]).max() > 1e-2  # it trains
    difference = np.abs(rank0['weights'] - alone).max()
    print('%s: 2 workers vs 1 on the whole batch: max |diff| %.2e' % (name, difference))
    assert difference <= 1e-5


AVERAGING = ['distributed_ema_adam', 'ema_around_distributed_adam',
             'swa_around_distributed_accumulation_adam']


@pytest.mark.parametrize('name', AVERAGING)
def test_weight_averages_are_identical_on_every_worker_and_equal_one_worker(trained, name):
    """The averages (also in `states`, broadcast from rank 0 at the start) are the same on both
    workers after every update, and those of one worker on the whole batch."""
    rank0, rank1 = trained[1][name]
    np.testing.assert_array_equal(rank0['averages'], rank1['averages'])
    weights, averages = single_worker(name, averages=True)
    assert np.abs(averages - weights).max() > 1e-3  # an average, not the parameters
    difference = np.abs(rank0['averages'] - averages).max()
    print('%s: averages, 2 workers vs 1 on the whole batch: max |diff| %.2e' % (name, difference))
    assert difference <= 1e-5


def test_misuse_is_an_error_naming_the_fix():
    distributed.init()  # one worker
    with pytest.raises(ValueError, match='backward_passes_per_step'):
        distributed.DistributedOptimizer(kol.GradientAccumulation(kol.SGD(), 2),
                                         backward_passes_per_step=2)
    with pytest.raises(ValueError, match='weights must be >= 0'):
        distributed.DistributedOptimizer(kol.SGD(), weights=-1.)
    model = problems.mlp()
    model.compile(distributed.DistributedOptimizer(kol.Heun()), 'mse')
    with pytest.raises(RuntimeError, match=r'opt.inject\(model\)'):
        model.train_on_batch(*problems.data())


def allreduce_counts(timeline, collective='ALLREDUCE'):
    """How many times each tensor was allreduced (or `collective`: 'ALLGATHER'), from a Horovod
    timeline (rank 0 writes it: one NEGOTIATE_<collective> begin per execution)."""
    with open(timeline) as f:
        events = json.load(f)
    names = {e['pid']: e['args']['name'] for e in events
             if e.get('name') == 'process_name' and 'name' in e.get('args', {})}
    return collections.Counter(names[e['pid']] for e in events if e.get('ph') == 'B' and
                               e.get('name') == 'NEGOTIATE_' + collective)


@pytest.mark.parametrize('name, per_update, per_batch', [
    ('sgd', 1, 1), ('accumulation_adam', worker.STEPS, 1),
    ('backward_passes_adam', worker.STEPS, 1), ('accumulation_keras_adam', worker.STEPS, 1),
    ('heun', 1, 2), ('weighted_sgd', 1, 1), ('horovod_keras_adam', 1, 1),
    ('horovod_keras_heun', 1, 2), ('multipliers_adam', 1, 1),
    ('multipliers_around_distributed_adam', 1, 1), ('ema_around_distributed_adam', 1, 1),
    ('distributed_ema_adam', 1, 1), ('swa_around_distributed_accumulation_adam', worker.STEPS, 1)])
def test_allreduce_runs_once_per_update(trained, name, per_update, per_batch):
    """Each gradient (and the weight, if weighted) is allreduced once per update: not on every
    batch of an accumulation; Heun's two stages each reduce the gradient they evaluate."""
    counts = allreduce_counts(os.path.join(trained[0], name + '.timeline.json'))
    tensors = 4 + (name == 'weighted_sgd')  # 2 kernels, 2 biases (+ the weight)
    print('%s: %d batches, %d updates, allreduces per tensor: %s'
          % (name, worker.UPDATES * per_update, worker.UPDATES, sorted(set(counts.values()))))
    assert len(counts) == tensors
    assert set(counts.values()) == {worker.UPDATES * per_batch}


@pytest.mark.parametrize('name', sorted(n for n in worker.CONFIGS if n.startswith('embedding')))
def test_the_table_gradient_is_allgathered_or_allreduced_dense(trained, name):
    """Per update: the table's IndexedSlices is allgathered, values and indices (the 4 dense
    gradients allreduced), or with sparse_as_dense=True all 5 gradients are allreduced."""
    timeline = os.path.join(trained[0], name + '.timeline.json')
    reduced, gathered = allreduce_counts(timeline), allreduce_counts(timeline, 'ALLGATHER')
    dense = name.endswith('sparse_as_dense')
    print('%s: %d tensors allreduced %s times, %d allgathered %s times'
          % (name, len(reduced), sorted(set(reduced.values())), len(gathered),
             sorted(set(gathered.values()))))
    assert len(reduced) == (5 if dense else 4) and set(reduced.values()) == {worker.UPDATES}
    if dense:
        assert not gathered
    else:
        assert len(gathered) == 2 and set(gathered.values()) == {worker.UPDATES}


def unflatten(vector):
    """problems.flat's inverse for the MLP's parameters."""
    shapes = [w.shape for w in problems.initial_weights()]
    ends = np.cumsum([int(np.prod(shape)) for shape in shapes])[:-1]
    return [part.reshape(shape) for part, shape in zip(np.split(vector, ends), shapes)]


def test_periodic_averaging_syncs_every_k_updates(trained):
    rank0, rank1 = trained[1]['periodic_sgd']
    every = 3
    for update in range(worker.UPDATES):
        weights = np.abs(rank0['weights'][update] - rank1['weights'][update]).max()
        states = np.abs(rank0['states'][update] - rank1['states'][update]).max()
        if (update + 1) % every == 0:
            assert weights == 0 and states == 0, update  # averaged: parameters and momenta
        else:
            assert weights > 1e-3 and states > 1e-3, update  # each worker on its own data
    # The sync averages what each worker holds after its own step (its reads follow the step):
    # SGD with momentum 0.9 and lr 0.1, v = 0.9 m - 0.1 g, p + v, from the update before.
    sync, half = every - 1, worker.BATCH // 2
    moved, momenta = [], []
    for rank, result in enumerate((rank0, rank1)):
        p = unflatten(result['weights'][sync - 1])
        m = unflatten(result['states'][sync - 1][2:])  # after this wrapper's and SGD's iterations
        start = sync * worker.BATCH + rank * half
        g = problems.numpy_gradients(p, worker.X[start:start + half], worker.Y[start:start + half])
        v = [0.9 * mi - 0.1 * gi for mi, gi in zip(m, g)]
        moved.append(problems.flat([pi + vi for pi, vi in zip(p, v)]))
        momenta.append(problems.flat(v))
    np.testing.assert_allclose(rank0['weights'][sync], np.mean(moved, axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(rank0['states'][sync][2:], np.mean(momenta, axis=0), rtol=0,
                               atol=1e-5)
    counts = allreduce_counts(os.path.join(trained[0], 'periodic_sgd.timeline.json'))
    assert len(counts) == 8  # 4 parameters + 4 momenta
    assert set(counts.values()) == {worker.UPDATES // every}


def test_a_killed_worker_fails_the_job_and_a_restart_resumes_on_any_number(tmp_path):
    checkpoints, out = str(tmp_path / 'checkpoints'), str(tmp_path / 'out')
    os.makedirs(out)
    batches = len(worker.X) // worker.BATCH  # per epoch
    # Rank 1 dies in the middle of the second epoch: the job stops with an error, no hang.
    code, output, seconds = horovodrun(2, 'resume', out, checkpoints, '3',
                                       KILL_AT=str(batches + batches // 2))
    print('killed worker: job ended after %.1fs with exit code %d' % (seconds, code))
    assert code != 0
    assert 'exited with non-zero status' in output and 'Exit code: 137' in output, output
    assert [os.path.basename(p) for p in kol.callbacks.Checkpoint.checkpoints(checkpoints)] == \
        ['checkpoint-%08d.h5' % batches]  # written by rank 0 at the end of epoch 1
    distributed.init()  # one worker here, to load the checkpoint
    saved = kol.load_model(kol.callbacks.Checkpoint.latest(checkpoints))
    saved_weights = problems.flat(saved.get_weights())
    K.clear_session()

    finals = {}
    for workers in (2, 1):  # the same job, resumed on 2 workers and on 1
        again = str(tmp_path / ('checkpoints%d' % workers))
        shutil.copytree(checkpoints, again)
        code, output, seconds = horovodrun(workers, 'resume', out, again, '3')
        assert code == 0, output
        results = [np.load(os.path.join(out, 'resume-rank%d.npz' % rank))
                   for rank in range(workers)]
        assert [result['writers'] for result in results] == [1] + [0] * (workers - 1)
        for result in results:
            assert result['initial_epoch'] == 1
            np.testing.assert_array_equal(result['start_weights'], saved_weights)
            assert result['iterations'] == 3 * batches  # batches before the crash included
            np.testing.assert_array_equal(result['weights'], results[0]['weights'])
        finals[workers] = results[0]['weights']
    difference = np.abs(finals[2] - finals[1]).max()
    print('resumed on 2 workers vs on 1: max |diff| %.2e' % difference)
    assert difference <= 1e-5
