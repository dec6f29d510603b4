"""Data-parallel training on Horovod (an optional extra: `make horovod` in this repository).

Every worker runs the same script on its own part of the data (`horovodrun -np 2 ...`):

    from keras_opt_legacy import distributed
    distributed.init()
    model.compile(distributed.DistributedOptimizer(kol.Adam()), 'mse')
    model.fit(x_part, y_part, callbacks=distributed.callbacks('checkpoints'))

`DistributedOptimizer` combines the workers' gradients once per update, where the update is
applied: with gradient accumulation, once every `steps` batches rather than on every batch.
`PeriodicAveraging` lets the workers step alone and averages their parameters and optimizer state
every `sync_every` updates (local SGD). An allreduce inside a `tf.cond` branch is safe: every
worker runs the same graph on the same step count, so all take the same branch at the same step.
"""
import tensorflow as tf
from keras import backend as K
from keras.callbacks import Callback

try:
    import horovod.tensorflow as hvd
    from horovod.tensorflow.functions import broadcast_object
except ImportError as error:  # the extra is not installed
    raise ImportError(
        'keras_opt_legacy.distributed needs Horovod built with TensorFlow and Gloo (%s). In this '
        'repository run `make horovod`; elsewhere: HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 '
        "pip install --no-build-isolation 'keras_opt_legacy[horovod]'" % error)

from . import builtin, checks, compat, ops
from .base import PreparedStep, register, resolve_gradients
from .callbacks import Checkpoint
from .runge_kutta import InjectOptimizer
from .wrappers import GradientAccumulation, Wrapper

init, rank, size = hvd.init, hvd.rank, hvd.size


@register
class DistributedOptimizer(Wrapper):
    """Train `optimizer` on the combined gradient of all workers: their mean (`average`), sum,
    or with `weights` (this worker's weight, e.g. its sample count) sum(w_i g_i) / sum(w_i)
    (sum(w_i g_i) without `average`).

    The gradient is reduced once per update. `backward_passes_per_step=k` accumulates k
    batches first, as `GradientAccumulation(optimizer, k)` (the mean over the batches, which is
    a batch k times larger); a `GradientAccumulation` given directly is reduced in the same way,
    once every `steps` batches. Clipping applies to the combined gradient. Multi-stage
    optimizers (Heun, RK4, ...) work too, with `opt.inject(model)`: each stage reduces the
    gradient it evaluates.

    A sparse gradient (an Embedding's IndexedSlices) is combined by an allgather of the rows
    each worker touched (Horovod's way; the optimizer then sees a sparse gradient: see the
    package's sparse updates); `sparse_as_dense=True` densifies it first and allreduces the
    table instead (cheaper when most rows are touched).

    `weights` is kept in a variable (`opt.worker_weight`, settable with `K.set_value`).
    `iterations` counts batches (a multi-stage optimizer counts them itself: this one stays 0).
    Every worker must run the same number of batches and take the same decisions: a wrapper
    around this one (SkipNonFinite) would decide on this worker's gradient alone.
    """

    averages_inside = True  # the combined gradient, then the inner steps: an average sees them

    wraps_inject = True

    def __init__(self, optimizer, backward_passes_per_step=1, average=True, weights=None,
                 sparse_as_dense=False):
        backward_passes_per_step = checks.positive_integer('backward_passes_per_step',
                                                           backward_passes_per_step)
        average = checks.flag('average', average)
        weights = None if weights is None else checks.checked_number('weights', weights)
        sparse_as_dense = checks.flag('sparse_as_dense', sparse_as_dense)
        super(DistributedOptimizer, self).__init__(optimizer)
        self.backward_passes_per_step, self.average = backward_passes_per_step, average
        self.sparse_as_dense = sparse_as_dense
        self.worker_weight = None
        if weights is not None:
            with tf.name_scope(self._scope):
                self.worker_weight = K.variable(weights, name='worker_weight')
        # The accumulation whose mean gradient is reduced, if any.
        self._accumulation = self.optimizer if isinstance(
            self.optimizer, GradientAccumulation) else None
        if backward_passes_per_step > 1:
            if self.needs_inject or self._accumulation is not None:
                raise ValueError('backward_passes_per_step > 1 cannot accumulate the gradients '
                                 'of %s (a multi-stage optimizer, or an accumulation already)'
                                 % type(self.optimizer).__name__)
            self._accumulation = GradientAccumulation(self.optimizer, backward_passes_per_step)

    @property
    def needs_inject(self):
        return getattr(self.optimizer, 'needs_inject', False)

    def reduce(self, grads):
        """The gradients `grads` of this worker combined with all the others'."""
        if self.sparse_as_dense:
            grads = [tf.convert_to_tensor(g) for g in grads]
        if self.worker_weight is None:
            op = hvd.Average if self.average else hvd.Sum
            return [hvd.allreduce(g, op=op) for g in grads]
        weight = tf.convert_to_tensor(self.worker_weight)
        totals = [hvd.allreduce(tf.convert_to_tensor(g) * weight, op=hvd.Sum) for g in grads]
        if not self.average:
            return totals
        weight_total = hvd.allreduce(weight, op=hvd.Sum)
        return [t / weight_total for t in totals]

    def prepare_step(self, grads, params, rate_factors=None):
        params = self._create_slots(params)
        if self._accumulation is not None:
            inner = self._accumulation
            step = inner.prepare_step(grads, params, rate_factors, reduce=self.reduce)
            self._list_state(params, inner=builtin.inner_state(inner, params))
        else:
            inner = self.optimizer
            step = self._prepare_inner(lambda: self.reduce(resolve_gradients(grads)), params,
                                       rate_factors)

        def build():
            inner_ops = step()
            return inner_ops + [ops.count_after(self.iterations, inner_ops)]
        return PreparedStep(build, applies=step.applies)

    @property
    def inject_reason(self):
        return 'wraps %s, which %s' % (type(self.optimizer).__name__,
                                       self.optimizer.inject_reason)

    def get_updates(self, loss, params):
        self._check_injecting()
        if not isinstance(self.optimizer, InjectOptimizer):
            return super(DistributedOptimizer, self).get_updates(loss, params)
        # Its stages build their gradients with `get_gradients`: reduce them there (this
        # instance, this call only).
        inner = self.optimizer
        inner.get_gradients = lambda loss, params: inner.clip_gradients(
            self.reduce(self.get_gradients(loss, params)))
        try:
            self.updates = inner.get_updates(loss, params)
        finally:
            del inner.get_gradients
        self._list_state(params, inner=builtin.inner_state(inner, params))
        return self.updates

    def inject(self, model):
        """Inject the inner optimizer (one that needs it) for `model`, compiled with this one."""
        compat.check_compiled_with(model, self, 'call opt.inject(model)')
        with self.injecting():
            self.optimizer.inject(model)

    def get_config(self):
        config = super(DistributedOptimizer, self).get_config()
        config.update(backward_passes_per_step=self.backward_passes_per_step,
                      average=self.average, sparse_as_dense=self.sparse_as_dense,
                      weights=None if self.worker_weight is None else
                      float(K.get_value(self.worker_weight)))
        return config


@register
class PeriodicAveraging(Wrapper):
    """Local SGD: each worker applies `optimizer` with its own gradients, and every
    `sync_every` applied updates the parameters and the optimizer's state (its floating-point
    variables: counters are equal anyway) are replaced by their mean over the workers.

    `iterations` counts applied updates (under gradient accumulation, real updates)."""

    config_keys = ('sync_every',)

    def __init__(self, optimizer, sync_every):
        sync_every = checks.positive_integer('sync_every', sync_every)
        super(PeriodicAveraging, self).__init__(optimizer)
        self.sync_every = sync_every

    def prepare_step(self, grads, params, rate_factors=None):
        params = self._create_slots(params)
        inner = self._prepare_inner(grads, params, rate_factors)
        shared = params + [v for v in builtin.state(self.optimizer, params)[1]
                           if v.dtype.base_dtype.is_floating]

        def sync():
            means = [hvd.allreduce(tf.convert_to_tensor(v), op=hvd.Average) for v in shared]
            return ops.assign_all(list(zip(shared, means)))

        def build():
            inner_ops = inner()
            return inner_ops + ops.every_kth_update(self.iterations, self.sync_every,
                                                    inner.applies, sync, after=inner_ops)
        return PreparedStep(build, applies=inner.applies)



# ---- state: broadcast, checkpoints, resume --------------------------------------------------

def broadcast_state(model, root_rank=0):
    """Copy the model's weights and all of its optimizer's state from `root_rank` to every
    worker. The optimizer's slots exist only once the train function is built: it is built
    here if needed (an optimizer that needs `inject` must be injected first)."""
    compat.make_train_function(model)
    variables = model.weights + builtin.state(model.optimizer,
                                              compat.trainable_params(model))[1]
    unique = list({id(v): v for v in variables}.values())
    K.get_session().run(hvd.broadcast_variables(unique, root_rank))


class BroadcastState(Callback):
    """`broadcast_state` when training begins (once: later `fit` calls keep the state)."""

    def __init__(self, root_rank=0):
        super(BroadcastState, self).__init__()
        self.root_rank, self._done = root_rank, False

    def on_train_begin(self, logs=None):
        if not self._done:
            broadcast_state(self.model, self.root_rank)
            self._done = True


def callbacks(checkpoint_directory=None, **checkpoint_options):
    """The callbacks every worker passes to `fit`: the initial state broadcast from rank 0, and
    on rank 0 only an atomic `callbacks.Checkpoint` (one writer)."""
    found = [BroadcastState()]
    if checkpoint_directory is not None and rank() == 0:
        found.append(Checkpoint(checkpoint_directory, **checkpoint_options))
    return found


def load_latest(directory, custom_objects=None, model=None):
    """`(model, completed epochs)` from the newest checkpoint rank 0 finds in `directory`
    (visible to every worker), loaded by every worker, or `(None, 0)`. Any number of workers
    can resume a checkpoint. `model`: as in `Checkpoint.load_latest` (without it, the code of
    any `Lambda` layer in the file runs)."""
    path = broadcast_object(Checkpoint.latest(directory) if rank() == 0 else None, 0,
                            session=K.get_session(), name='latest_checkpoint')
    if path is None:
        return None, 0
    return Checkpoint.load(path, custom_objects, model=model)
