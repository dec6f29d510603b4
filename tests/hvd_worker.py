"""One Horovod worker, launched by tests/test_distributed.py through
`horovodrun -np N -H localhost:N --gloo python hvd_worker.py SCENARIO OUT_DIR ...`.

Scenarios:
  train OUT            every configuration of CONFIGS on this worker's part of each batch; writes
                       OUT/<config>-rank<r>.npz (weights and optimizer state after every update)
                       and, on rank 0, OUT/<config>.timeline.json (Horovod's record of its
                       allreduce executions)
  resume OUT CKPT E    resume from the newest checkpoint in CKPT (or start), train to epoch E
                       with a rank-0 checkpoint every epoch; with KILL_AT=<batch>, rank 1
                       kills itself (SIGKILL) at that batch of this run
"""
import os
import signal
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import horovod.keras  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import backend as K  # noqa: E402

import keras_opt_legacy as kol  # noqa: E402
from keras_opt_legacy import compat, distributed  # noqa: E402
from keras_opt_legacy.averaging import Averaging  # noqa: E402
from keras_opt_legacy.builtin import state as state_of  # noqa: E402
import problems  # noqa: E402
import sparse_problems  # noqa: E402

BATCH = 64      # the global batch: the workers split it
STEPS = 4       # batches per update under accumulation
UPDATES = 6
X, Y = problems.data(n=BATCH * STEPS * UPDATES)
# Per-parameter learning-rate factors (LearningRateMultipliers); dense_2/bias keeps 1.
MULTIPLIERS = {'dense_1/': 0.1, 'dense_2/kernel': 3.0}

# name -> (optimizer, batches per update); the reference (tests/test_distributed.py) is the
# inner optimizer alone on whole batches, see `single`.
CONFIGS = {
    'sgd': lambda: (distributed.DistributedOptimizer(kol.SGD(lr=0.1)), 1),
    'adam': lambda: (distributed.DistributedOptimizer(kol.Adam(lr=0.01)), 1),
    'accumulation_adam': lambda: (distributed.DistributedOptimizer(
        kol.GradientAccumulation(kol.Adam(lr=0.01), STEPS)), STEPS),
    'backward_passes_adam': lambda: (distributed.DistributedOptimizer(
        kol.Adam(lr=0.01), backward_passes_per_step=STEPS), STEPS),
    'accumulation_keras_adam': lambda: (distributed.DistributedOptimizer(
        kol.GradientAccumulation(keras.optimizers.Adam(lr=0.01), STEPS)), STEPS),
    'heun': lambda: (distributed.DistributedOptimizer(kol.Heun(lr=0.1)), 1),
    # Sample-count weights: rank 0 gets a quarter of each batch, rank 1 the rest.
    'weighted_sgd': lambda: (distributed.DistributedOptimizer(
        kol.SGD(lr=0.1), weights=len(split(0, BATCH, 'weighted_sgd')[0])), 1),
    'periodic_sgd': lambda: (distributed.PeriodicAveraging(
        kol.SGD(lr=0.1, momentum=0.9), sync_every=3), 1),
    # Horovod's own wrapper: a subclass rebuilt by from_config(get_config()), overriding
    # get_gradients.
    'horovod_keras_adam': lambda: (horovod.keras.DistributedOptimizer(kol.Adam(lr=0.01)), 1),
    'horovod_keras_heun': lambda: (horovod.keras.DistributedOptimizer(kol.Heun(lr=0.1)), 1),
    # Learning-rate multipliers inside and around the distributed optimizer.
    'multipliers_adam': lambda: (distributed.DistributedOptimizer(
        kol.LearningRateMultipliers(kol.Adam(lr=0.01), MULTIPLIERS)), 1),
    'multipliers_around_distributed_adam': lambda: (kol.LearningRateMultipliers(
        distributed.DistributedOptimizer(kol.Adam(lr=0.01)), MULTIPLIERS), 1),
    # Weight averages (issue 17) around and inside the distributed optimizer, and over an
    # accumulation reduced once per update: the averages follow the combined updates.
    'ema_around_distributed_adam': lambda: (kol.ExponentialMovingAverage(
        distributed.DistributedOptimizer(kol.Adam(lr=0.01)), decay=0.8, dynamic_decay=True), 1),
    'distributed_ema_adam': lambda: (distributed.DistributedOptimizer(
        kol.ExponentialMovingAverage(kol.Adam(lr=0.01), decay=0.8)), 1),
    'swa_around_distributed_accumulation_adam': lambda: (kol.StochasticWeightAveraging(
        distributed.DistributedOptimizer(kol.GradientAccumulation(kol.Adam(lr=0.01), STEPS)),
        start=2, period=2), STEPS),
    # Sparse gradients (issue 19), on sparse_problems' embedding model (the same data): the
    # table's IndexedSlices combined by an allgather of the rows (the default) or densified and
    # allreduced (sparse_as_dense=True).
    'embedding_sgd': lambda: (distributed.DistributedOptimizer(kol.SGD(lr=0.1)), 1),
    'embedding_adagrad': lambda: (distributed.DistributedOptimizer(kol.Adagrad(lr=0.1)), 1),
    'embedding_adam': lambda: (distributed.DistributedOptimizer(kol.Adam(lr=0.01)), 1),
    'embedding_lazy_adam': lambda: (distributed.DistributedOptimizer(
        kol.Adam(lr=0.01, lazy=True)), 1),
    'embedding_sgd_sparse_as_dense': lambda: (distributed.DistributedOptimizer(
        kol.SGD(lr=0.1), sparse_as_dense=True), 1),
    'embedding_adam_sparse_as_dense': lambda: (distributed.DistributedOptimizer(
        kol.Adam(lr=0.01), sparse_as_dense=True), 1),
}


def compiled(name, optimizer):
    """The model of configuration `name` ('embedding_*': sparse_problems') with `optimizer`."""
    return (sparse_problems if name.startswith('embedding') else problems).compiled(optimizer)


def averages_of(optimizer):
    """The flat values of every weight average (ExponentialMovingAverage,
    StochasticWeightAveraging) in `optimizer`'s chain, outermost first; None if there is none."""
    found = []
    while optimizer is not None:
        if isinstance(optimizer, Averaging):
            found.append(problems.flat(optimizer.average_values()))
        optimizer = getattr(optimizer, 'optimizer', None)
    return np.concatenate(found) if found else None


def split(batch, size, config):
    """This worker's part of global batch `batch` (of `size` samples)."""
    start, end = batch * size, (batch + 1) * size
    if config == 'weighted_sgd':  # uneven: 1/4 and 3/4
        cut = start + size // 4
        start, end = (start, cut) if distributed.rank() == 0 else (cut, end)
    else:
        part = size // distributed.size()
        start, end = start + distributed.rank() * part, start + (distributed.rank() + 1) * part
    return X[start:end], Y[start:end]


def snapshot(model):
    return problems.flat(model.get_weights()), problems.flat(
        K.batch_get_value(state_of(model.optimizer)[1]))


def train(out):
    for name, make in sorted(CONFIGS.items()):
        K.clear_session()
        optimizer, per_update = make()
        model = compiled(name, optimizer)
        if distributed.rank() != 0:  # broadcast_state must overwrite all of it, slots included
            compat.make_train_function(model)  # the slots exist from here on
            variables = model.weights + state_of(model.optimizer)[1]
            K.batch_set_value([(v, K.get_value(v) + 1) for v in variables])
        distributed.broadcast_state(model)
        timeline = os.path.join(out, name + '.timeline.json')
        distributed.hvd.start_timeline(timeline)
        weights, states, averages = [], [], []
        for batch in range(UPDATES * per_update):
            model.train_on_batch(*split(batch, BATCH, name))
            if (batch + 1) % per_update == 0:
                w, s = snapshot(model)
                weights.append(w)
                states.append(s)
                averages.append(averages_of(model.optimizer))
        distributed.hvd.stop_timeline()
        extra = {} if averages[0] is None else {'averages': np.array(averages)}
        np.savez(os.path.join(out, '%s-rank%d.npz' % (name, distributed.rank())),
                 weights=np.array(weights), states=np.array(states), **extra)


class KillAt(keras.callbacks.Callback):
    """Rank 1 dies without a word at batch `at` of this run (as a crashed machine would)."""

    def __init__(self, at):
        super(KillAt, self).__init__()
        self.at, self.seen = at, 0

    def on_batch_begin(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at and distributed.rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def resume(out, directory, epochs):
    model, epoch = distributed.load_latest(directory)
    if model is None:
        model = problems.mlp()
        model.compile(distributed.DistributedOptimizer(kol.Adam(lr=0.01)), 'mse')
    callbacks = distributed.callbacks(directory)
    if os.environ.get('KILL_AT'):
        callbacks.append(KillAt(int(os.environ['KILL_AT'])))
    distributed.broadcast_state(model)
    start = snapshot(model)
    parts = [split(batch, BATCH, 'resume') for batch in range(len(X) // BATCH)]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    model.fit(x, y, batch_size=BATCH // distributed.size(), epochs=epochs, initial_epoch=epoch,
              shuffle=False, verbose=0, callbacks=callbacks)
    end = snapshot(model)
    np.savez(os.path.join(out, 'resume-rank%d.npz' % distributed.rank()), initial_epoch=epoch,
             start_weights=start[0], start_states=start[1], weights=end[0], states=end[1],
             iterations=K.get_value(model.optimizer.optimizer.iterations),
             writers=sum(isinstance(c, kol.callbacks.Checkpoint) for c in callbacks))


if __name__ == '__main__':
    distributed.init()
    tf.set_random_seed(0)
    scenario, out = sys.argv[1], sys.argv[2]
    if scenario == 'train':
        train(out)
    elif scenario == 'resume':
        resume(out, sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit('unknown scenario %r' % scenario)
