"""Train-step time per optimizer: keras_opt_legacy vs Keras 2.2.4's built-in vs TF's fused kernels,
and the update's own cost as effective memory bandwidth.

(1) Step time. For each optimizer, in its own interleaved measurement (bench/harness.py style,
    every candidate in its own tf.Graph + tf.Session, wall-clock AND CPU time of the process):
    - 'ours': keras_opt_legacy's optimizer with default arguments (so, once the package has the
      `fused=` option, fused=True: TF's fused kernel where the arithmetic is Keras's);
    - 'ours (kernels off)': for the optimizers on the package's kernel library (LIBRARY), the
      same built with KERAS_OPT_LEGACY_KERNELS=0: its path without the library, as before
      issue 20 (TF's kernels in part, in-place updates);
    - 'ours fused=False': the same with fused=False, only when the installed package accepts it
      (detected per class: `fused` in the signature, else a try that catches TypeError);
    - 'Keras': `keras.optimizers.X` (Keras 2.2.4 has no Ftrl);
    - 'TF fused': `keras.optimizers.TFOptimizer(tf.train.XOptimizer(...))` (TF's fused training
      kernels, e.g. ApplyAdam), where TF has one (AdaMax, Nadam, AdamW and LARS from
      tf.contrib.opt);
    - 'TF Adam': `TFOptimizer(tf.train.AdamOptimizer())` (ApplyAdam) for every optimizer: the
      issue 20 yardstick, each rule's step / TF's fused Adam step (Adam's own 'TF fused');
    - 'base': for an extension of one of ours (AdamW, LearningRateMultipliers over Adam,
      ExponentialMovingAverage over Adam), keras_opt_legacy's optimizer without it (kol.Adam),
      so that 'ours / base' is the extension's cost measured in the same interleaved rounds;
    - 'gradient only': forward + backward, no update, in a K.function fed like the train
      function. It fetches a one-element slice of every gradient: grappler turns ops that only
      feed control dependencies into NoOps, so a `tf.group` of the gradients (or an `updates=`
      entry) would not compute them at all (it then costs the same as the loss alone).
    Every candidate runs `model.train_function` (the K.function `train_on_batch` calls) on a
    prebuilt batch, so Keras's per-call data checks, identical for all, are left out.
    Two models, batch 8: (a) the issue's MLP 2048-2048-2048-1 (8.39M parameters, 6 variables);
    (b) many small variables: SMALL_LAYERS x Dense(16) (default 50 layers, 100 variables; more
    with --small-layers, at a cost of minutes of graph building).
(2) Update bandwidth (MLP). The update's own time, two ways: "step - gradient" (per round, train
    step minus gradient only; median over rounds) and "update alone" (a graph with variables of
    the MLP's shapes, their gradients held in variables, and only the optimizer's update; timed
    interleaved like (1)). Effective GB/s = bytes the update must touch per step / update time,
    next to the machine's memory bandwidth (NumPy copy and triad, 256 MB and 16 MB float32
    arrays, one and two threads, best of several, before and after the TF runs). Bytes per
    parameter: what a one-pass in-place update must move (see BYTES; stated in the output).
    Caveat: inside a train step the update of a late layer may overlap the backward pass of an
    early one, so step - gradient can understate the update's cost.
(3) Extension overhead (MLP, extensions with extra traffic: the EMA). Per round, ours - base
    (update alone, and train step), median of the paired differences; the extra bytes per
    parameter it must move (EXTRA: the EMA's floor is one read-modify-write, 12 bytes) over
    that time, as GB/s, next to the machine's bandwidth.
Also recorded: system CPU time and minor page faults per step (freshly mapped memory that the
kernel zeroes: what large temporaries cost when the allocator returns them to the OS), the nodes
one update executes (a traced run, after grappler) and the ops the optimizer adds to the graph,
and each candidate's set-up time (build + first run).

The rules of issue 18 are here too (RAdam ... Lion, Adam amsgrad, SGD nesterov: RULES), and a
section "Issue 20 targets" sums up each optimizer's step against TF's fused Adam, momentum SGD
and RMSprop against TF's own kernels, the small model's ours / fused=False, and the set-up
(build) time with and without the library.

Usage: python bench/optimizer_step.py [--quick] [--optimizers SGD,Adam] [--models mlp,small]
                                      [--small-layers N] [--results NAME]
       (--optimizers rules: the rules of RULES)
Results go to bench/results/NAME.json and .md (default optimizer_step: a full run's name; give a
subset run a name of its own, e.g. --results weight_decay, to keep the full run's files).
"""
import argparse
import gc
import inspect
import os
import resource
import sys
import threading
import time
import warnings
from collections import Counter

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
warnings.filterwarnings('ignore')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SEED = 0
BATCH = 8
SMALL_LAYERS = 50  # 100 variables: building 200+ layer models for every candidate takes minutes
RULES = ['SGD nesterov', 'Adam amsgrad', 'RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound',
         'AMSBound', 'Yogi', 'AdaBelief', 'AdaBelief rectify', 'Lion']
OPTIMIZERS = ['SGD', 'SGD momentum', 'RMSprop', 'Adagrad', 'Adadelta', 'Adam', 'Adamax', 'Nadam',
              'Ftrl', 'AdamW', 'Adam multipliers', 'Adam EMA'] + RULES
# On the kernel library by default (keras_opt_legacy.kernels): these get 'ours (kernels off)'.
LIBRARY = {'SGD momentum', 'SGD nesterov', 'RMSprop', 'Nadam', 'AdamW', 'Adam EMA',
           'Adam amsgrad', 'RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound', 'AMSBound', 'Yogi',
           'AdaBelief', 'AdaBelief rectify', 'Lion'}
OFF = 'ours (kernels off)'
# Issue 20's targets: each rule's step <= this x TF's fused Adam step (MLP)
ADAM_TARGET = dict({name: 1.15 for name in OPTIMIZERS}, LAMB=1.35, LARS=1.35)
OWN_TARGET = {'SGD momentum': 1.05, 'RMSprop': 1.05}  # x TF's own kernel (its 'TF fused')
WEIGHT_DECAY = 0.01  # AdamW's (PyTorch's default), scaled by the rate: p -= lr * 0.01 * p
MULTIPLIERS = {'dense_1/': 0.5}  # the first layer at half the rate
FULL = dict(rounds=10, warmup=2, calls=4, optimizers=OPTIMIZERS, models=['mlp', 'small'],
            update_alone=['mlp'], bandwidth_repeats=5, burn_in=30)
QUICK = dict(rounds=5, warmup=1, calls=3, optimizers=['SGD', 'Adam'], models=['mlp', 'small'],
             update_alone=['mlp'], bandwidth_repeats=3, burn_in=15)
# Bytes an in-place update must move per float32 parameter and step: every array it reads or
# writes, once (a fused one-pass kernel's traffic; unfused graphs move more).
BYTES = {
    'SGD': (12, 'read p, g; write p'),
    'SGD momentum': (20, 'read p, g, m; write m, p'),
    'RMSprop': (20, 'read p, g, a; write a, p'),
    'Adagrad': (20, 'read p, g, a; write a, p'),
    'Adadelta': (28, 'read p, g, a, d; write a, d, p'),
    'Adam': (28, 'read p, g, m, v; write m, v, p (the issue: 7 x 4 bytes)'),
    'Adamax': (28, 'read p, g, m, u; write m, u, p'),
    'Nadam': (28, 'read p, g, m, v; write m, v, p'),
    'Ftrl': (28, 'read p, g, acc, lin; write acc, lin, p'),
    'AdamW': (28, "Adam's: a one-pass kernel would decay p while it steps it (a separate decay "
                  'pass moves 8 more: read p, write p)'),
    'Adam multipliers': (28, "Adam's: the factor is on the rate, a scalar"),
    'Adam EMA': (40, "Adam's 28 + the average's 12 (read p and avg, write avg)"),
    'SGD nesterov': (20, 'read p, g, m; write m, p'),
    'Adam amsgrad': (36, 'read p, g, m, v, vhat; write m, v, vhat, p'),
    'RAdam': (28, 'read p, g, m, v; write m, v, p'),
    'LAMB': (40, 'two passes: read p, g, m, v, write m, v, r (norms); read p, r, write p'),
    'LARS': (28, 'norms: read p, g; step: read p, g, m, write m, p'),
    'Adafactor': (24, 'three passes, its floor with clipping and parameter scaling (the '
                      'factored moments and RMS(p) need all of g before the update, its RMS '
                      'before the step): read g, p; read g; read g, p, write p'),
    'AdaBound': (28, 'read p, g, m, v; write m, v, p'),
    'AMSBound': (36, 'read p, g, m, v, vhat; write m, v, vhat, p'),
    'Yogi': (28, 'read p, g, m, v; write m, v, p'),
    'AdaBelief': (28, 'read p, g, m, s; write m, s, p'),
    'AdaBelief rectify': (28, 'read p, g, m, s; write m, s, p'),
    'Lion': (20, 'read p, g, m; write m, p'),
}
# The extra traffic of an extension over its base, per parameter and step: floor, what it must
# move (bytes/param); ours, what keras_opt_legacy's graph moves; what, the account of both.
EXTRA = {
    # ours: from the ops one update executes (see "Op types"): the kernel library's one pass
    # (KolApplyEma); without it ('off') two in-place ApplyGradientDescent passes per parameter
    # (ops.average_in_place(exact=False)).
    'Adam EMA': dict(floor=12, ours=12, off=20,
                     what='the floor is one read-modify-write of every parameter (read p and '
                          "avg, write avg); keras_opt_legacy's KolApplyEma is that one pass; "
                          'without the library its two in-place passes, avg -= (1 - d) * avg '
                          'then avg -= -(1 - d) * p, move 20 (read and write avg; read avg and '
                          'p, write avg); TF\'s EMA: Sub, Mul, AssignSub, about 32 with its '
                          'temporaries'),
}
EMA_DECAY = 0.999
BASE = 'Adam'  # the 'base' candidate of every extension: kol.Adam()
CANDIDATES = ['gradient only', 'ours', OFF, 'ours fused=False', 'Keras', 'TF fused', 'TF Adam',
              'base']


# ---- the optimizers ---------------------------------------------------------------------------

def optimizer_specs(tf, keras, kol):
    """name -> dict(ours=(class or factory, kwargs), keras=factory or None, fused=(label,
    factory) or None, note, and for an extension base=(label, factory): ours without it). Same
    hyperparameters everywhere (Keras's defaults, epsilon 1e-7)."""
    ko, tt = keras.optimizers, tf.train

    def adam_multipliers(fused=True):
        return kol.LearningRateMultipliers(kol.Adam(fused=fused), MULTIPLIERS)

    def contrib(name):
        try:
            return getattr(tf.contrib.opt, name, None)
        except Exception:  # noqa: BLE001 -- contrib missing or failing to load
            return None
    adamax, nadam = contrib('AdaMaxOptimizer'), contrib('NadamOptimizer')
    adamw = contrib('AdamWOptimizer')
    lars = contrib('LARSOptimizer')

    def adam_ema(fused=True):
        return kol.ExponentialMovingAverage(kol.Adam(fused=fused), decay=EMA_DECAY)

    class TFAdamEMA(object):
        """TF's Adam, then tf.train.ExponentialMovingAverage.apply on the updated variables
        (its documented pattern: the EMA op under a control dependency on the step)."""

        def __init__(self):
            self.adam = tt.AdamOptimizer(0.001, 0.9, 0.999, 1e-7)
            self.ema = tt.ExponentialMovingAverage(EMA_DECAY)

        def compute_gradients(self, *args, **kwargs):
            return self.adam.compute_gradients(*args, **kwargs)

        def apply_gradients(self, grads_and_vars, global_step=None, name=None):
            grads_and_vars = list(grads_and_vars)
            step = self.adam.apply_gradients(grads_and_vars, global_step=global_step)
            with tf.control_dependencies([step]):
                return self.ema.apply([v for g, v in grads_and_vars if g is not None])
    return {
        'SGD': dict(ours=(kol.SGD, dict(lr=0.01)), keras=lambda: ko.SGD(0.01),
                    fused=('tf.train.GradientDescentOptimizer',
                           lambda: tt.GradientDescentOptimizer(0.01)),
                    note='Keras 2.2.4 SGD keeps a moment slot and updates it even with momentum=0'),
        'SGD momentum': dict(ours=(kol.SGD, dict(lr=0.01, momentum=0.9)),
                             keras=lambda: ko.SGD(0.01, momentum=0.9),
                             fused=('tf.train.MomentumOptimizer',
                                    lambda: tt.MomentumOptimizer(0.01, 0.9)),
                             note='TF: accum = mu*accum + g; p -= lr*accum (same traffic)'),
        'RMSprop': dict(ours=(kol.RMSprop, {}), keras=lambda: ko.RMSprop(),
                        fused=('tf.train.RMSPropOptimizer', lambda: tt.RMSPropOptimizer(
                            0.001, decay=0.9, momentum=0., epsilon=1e-7)),
                        note='TF: epsilon inside the sqrt, and a momentum slot read and written '
                             'even with momentum=0 (28 bytes/param, not 20)'),
        'Adagrad': dict(ours=(kol.Adagrad, {}), keras=lambda: ko.Adagrad(),
                        fused=('tf.train.AdagradOptimizer', lambda: tt.AdagradOptimizer(
                            0.01, initial_accumulator_value=0.1)),
                        note='TF: no epsilon, accumulator starts at 0.1'),
        'Adadelta': dict(ours=(kol.Adadelta, {}), keras=lambda: ko.Adadelta(),
                         fused=('tf.train.AdadeltaOptimizer', lambda: tt.AdadeltaOptimizer(
                             1.0, rho=0.95, epsilon=1e-7)), note=''),
        'Adam': dict(ours=(kol.Adam, {}), keras=lambda: ko.Adam(),
                     fused=('tf.train.AdamOptimizer',
                            lambda: tt.AdamOptimizer(0.001, 0.9, 0.999, 1e-7)),
                     note=''),
        'Adamax': dict(ours=(kol.Adamax, {}), keras=lambda: ko.Adamax(),
                       fused=('tf.contrib.opt.AdaMaxOptimizer', lambda: adamax(
                           0.002, 0.9, 0.999, 1e-7)) if adamax else None, note=''),
        'Nadam': dict(ours=(kol.Nadam, {}), keras=lambda: ko.Nadam(),
                      fused=('tf.contrib.opt.NadamOptimizer', lambda: nadam(
                          0.002, 0.9, 0.999, 1e-7)) if nadam else None,
                      note='TF fused Nadam is ApplyAdam(use_nesterov=True): no momentum schedule, '
                           'different arithmetic (a speed reference only)'),
        'Ftrl': dict(ours=(kol.Ftrl, {}), keras=None,
                     fused=('tf.train.FtrlOptimizer', lambda: tt.FtrlOptimizer(
                         0.001, -0.5, initial_accumulator_value=0.1)),
                     note='Keras 2.2.4 has no Ftrl'),
        'AdamW': dict(ours=(kol.AdamW, dict(weight_decay=WEIGHT_DECAY)), keras=None,
                      fused=('tf.contrib.opt.AdamWOptimizer', lambda: adamw(
                          0.001 * WEIGHT_DECAY, 0.001, 0.9, 0.999, 1e-7)) if adamw else None,
                      base=('kol.Adam()', lambda: kol.Adam()),
                      note='kol.AdamW(weight_decay=%g), default (fused) path; Keras 2.2.4 has no '
                           'AdamW; TF: weight_decay=lr*%g (not scaled by the rate: the same '
                           'decay at a constant rate), decay as its own pass (var - wd*var, '
                           'then ApplyAdam)' % (WEIGHT_DECAY, WEIGHT_DECAY)),
        'Adam multipliers': dict(ours=(adam_multipliers, {}), keras=None, fused=None,
                                 base=('kol.Adam()', lambda: kol.Adam()),
                                 note='kol.LearningRateMultipliers(kol.Adam(), %r)'
                                      % (MULTIPLIERS,)),
        'SGD nesterov': dict(ours=(kol.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
                             keras=lambda: ko.SGD(0.01, momentum=0.9, nesterov=True),
                             fused=('tf.train.MomentumOptimizer(use_nesterov=True)',
                                    lambda: tt.MomentumOptimizer(0.01, 0.9, use_nesterov=True)),
                             note='TF: Nesterov on its accum = mu*accum + g (same traffic)'),
        'Adam amsgrad': dict(ours=(kol.Adam, dict(amsgrad=True)),
                             keras=lambda: ko.Adam(amsgrad=True), fused=None, note=''),
        'RAdam': dict(ours=(kol.RAdam, {}), keras=None, fused=None, note=''),
        'LAMB': dict(ours=(kol.LAMB, dict(weight_decay_rate=0.01)), keras=None, fused=None,
                     note='weight_decay_rate=0.01'),
        'LARS': dict(ours=(kol.LARS, {}), keras=None,
                     fused=('tf.contrib.opt.LARSOptimizer', lambda: lars(0.01))
                     if lars else None, note='TF: its norms, then ApplyMomentum'),
        'Adafactor': dict(ours=(kol.Adafactor, {}), keras=None, fused=None,
                          note='three passes of the kernel library'),
        'AdaBound': dict(ours=(kol.AdaBound, {}), keras=None, fused=None, note=''),
        'AMSBound': dict(ours=(kol.AdaBound, dict(amsbound=True)), keras=None, fused=None,
                         note=''),
        'Yogi': dict(ours=(kol.Yogi, {}), keras=None, fused=None, note=''),
        'AdaBelief': dict(ours=(kol.AdaBelief, {}), keras=None, fused=None, note=''),
        'AdaBelief rectify': dict(ours=(kol.AdaBelief, dict(rectify=True)), keras=None,
                                  fused=None, note=''),
        'Lion': dict(ours=(kol.Lion, {}), keras=None, fused=None, note=''),
        'Adam EMA': dict(ours=(adam_ema, {}), keras=None,
                         fused=('tf.train.AdamOptimizer + tf.train.ExponentialMovingAverage(%g)'
                                % EMA_DECAY, TFAdamEMA),
                         base=('kol.Adam()', lambda: kol.Adam()),
                         note='kol.ExponentialMovingAverage(kol.Adam(), decay=%g); Keras has no '
                              'EMA; TF: its EMA updates avg -= (avg - p) * (1 - decay), an op '
                              'per term' % EMA_DECAY),
    }


# ---- models and candidates --------------------------------------------------------------------

def make_model(kind, keras):
    Dense = keras.layers.Dense
    if kind == 'mlp':
        return keras.Sequential([Dense(2048, activation='relu', input_shape=(2048,)),
                                 Dense(2048, activation='relu'), Dense(1)])
    return keras.Sequential([Dense(16, activation='relu', input_shape=(16,))] +
                            [Dense(16, activation='relu') for _ in range(SMALL_LAYERS - 1)])


MODELS = ('mlp', 'small')


def model_title(kind):
    return 'MLP 2048-2048-2048-1' if kind == 'mlp' else '%d x Dense(16)' % SMALL_LAYERS


def make_batch(kind):
    import numpy as np
    rng = np.random.RandomState(SEED)
    width, out = (2048, 1) if kind == 'mlp' else (16, 16)
    return [rng.rand(BATCH, width).astype('float32'), rng.rand(BATCH, out).astype('float32'),
            np.ones(BATCH, 'float32')]


class Candidate(object):
    """One model in its own graph and session; `step()` runs one train (or gradient) step."""

    def __init__(self, kind, make_optimizer, libs):
        tf, keras, _ = libs
        from keras import backend as K
        started = time.perf_counter()
        self.graph, self.session = tf.Graph(), None
        self.feed = make_batch(kind)
        with self.graph.as_default():
            self.session = tf.Session(graph=self.graph)
            with self.session.as_default():
                tf.set_random_seed(SEED)
                model = make_model(kind, keras)
                if make_optimizer is None:  # gradient only
                    model.compile(keras.optimizers.SGD(0.), 'mse')  # never used
                    grads = K.gradients(model.total_loss, model.trainable_weights)
                    probe = tf.concat([tf.reshape(g, [-1])[:1] for g in grads], 0)
                    self.function = K.function(model._feed_inputs + model._feed_targets +
                                               model._feed_sample_weights,
                                               [model.total_loss, probe])
                else:
                    model.compile(make_optimizer(), 'mse')
                    model._make_train_function()
                    self.function = model.train_function
                self.ops = len(self.graph.get_operations())
                self.library_ops = harness.library_ops(self.graph)
                self.params = model.count_params()
                self.variables = len(model.trainable_weights)
                self.build_seconds = time.perf_counter() - started
                started = time.perf_counter()
                self.function(self.feed)  # first run: grappler, executor set-up
                self.first_run_seconds = time.perf_counter() - started

    def step(self):
        with self.graph.as_default(), self.session.as_default():
            self.function(self.feed)

    def close(self):
        self.session.close()


def layer_shapes(kind):
    """The trainable variables' shapes of `kind`'s model."""
    if kind == 'mlp':
        return [(2048, 2048), (2048,), (2048, 2048), (2048,), (2048, 1), (1,)]
    return [(16, 16), (16,)] * SMALL_LAYERS


def variable_names(kind):
    """The trainable variables' names in `kind`'s model (Keras's, in a fresh graph)."""
    return ['dense_%d/%s' % (i // 2 + 1, 'bias' if i % 2 else 'kernel')
            for i in range(len(layer_shapes(kind)))]


class UpdateOnly(object):
    """One optimizer's update alone, in its own graph and session: variables of the model's
    shapes, and gradients held in variables (already in memory, as after a backward pass).
    `step()` applies one update; `ops` counts the ops the optimizer added to the graph (state
    creation included), `executed` the nodes one update runs (after grappler), by op type."""

    def __init__(self, kind, make_optimizer, libs):
        import numpy as np
        tf, keras, _ = libs
        from keras import backend as K
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.session = tf.Session(graph=self.graph)
            with self.session.as_default():
                rng = np.random.RandomState(SEED)
                shapes = layer_shapes(kind)
                params = [K.variable(rng.randn(*shape) * .05, name=name)  # the model's names
                          for name, shape in zip(variable_names(kind), shapes)]
                grads = [K.variable(rng.randn(*shape) * .01, name='g%d' % i).value()
                         for i, shape in enumerate(shapes)]
                before = len(self.graph.get_operations())
                optimizer = make_optimizer()
                if isinstance(optimizer, keras.optimizers.TFOptimizer):  # as its get_updates
                    update = optimizer.optimizer.apply_gradients(
                        list(zip(grads, params)), global_step=optimizer.iterations)
                elif hasattr(optimizer, 'prepare_step'):  # ours: the public graph-mode API
                    update = optimizer.apply_gradients(list(zip(grads, params)))
                else:  # a Keras built-in, fed our gradients
                    optimizer.get_gradients = lambda loss, params: grads
                    update = tf.group(*optimizer.get_updates(loss=tf.constant(0.),
                                                             params=params))
                self.ops = len(self.graph.get_operations()) - before
                self.library_ops = harness.library_ops(self.graph)
                self.op_types = Counter(op.type for op in self.graph.get_operations()[before:])
                self.variables = len(params)
                self.session.run(tf.global_variables_initializer())
                self.step = self.session.make_callable(update)
                self.step()
                self.executed = executed_op_types(self.session, update)

    def close(self):
        self.session.close()


def executed_op_types(session, fetch):
    """Op type -> number of nodes one traced `session.run(fetch)` executed (after grappler)."""
    import tensorflow as tf
    metadata = tf.RunMetadata()
    session.run(fetch, options=tf.RunOptions(trace_level=tf.RunOptions.SOFTWARE_TRACE),
                run_metadata=metadata)
    return Counter(node.timeline_label.split(' = ', 1)[1].split('(', 1)[0]
                   if ' = ' in node.timeline_label else node.node_name
                   for device in metadata.step_stats.dev_stats for node in device.node_stats)


def accepts_fused(ours, tf):
    """Does `ours` (a keras_opt_legacy class, or a function making one) take `fused=`?"""
    if not inspect.isclass(ours):
        return 'fused' in inspect.signature(ours).parameters
    return harness.accepts_fused(ours, tf)


def group_factories(name, spec, libs, fused_option, library):
    """candidate name -> optimizer factory for one optimizer (only the candidates that exist);
    `library`: whether the kernel library is usable (then OFF for the optimizers on it)."""
    tf, keras = libs[:2]
    cls, kwargs = spec['ours']
    factories = {'ours': lambda: cls(**kwargs)}
    if library and name in LIBRARY:
        factories[OFF] = factories['ours']  # built with KERAS_OPT_LEGACY_KERNELS=0
    if fused_option:
        factories['ours fused=False'] = lambda: cls(fused=False, **kwargs)
    if spec['keras']:
        factories['Keras'] = spec['keras']
    if spec['fused']:
        factories['TF fused'] = lambda: keras.optimizers.TFOptimizer(spec['fused'][1]())
    if name != 'Adam':  # Adam's 'TF fused' is TF Adam
        factories['TF Adam'] = lambda: keras.optimizers.TFOptimizer(
            tf.train.AdamOptimizer(0.001, 0.9, 0.999, 1e-7))
    if spec.get('base'):
        factories['base'] = spec['base'][1]
    return factories


def built_as(label, build):
    """`build()` with the kernel library disabled for the OFF candidate (checked: it has none
    of the library's ops)."""
    with harness.kernels_off(label == OFF):
        candidate = build()
    assert label != OFF or candidate.library_ops == 0, (label, candidate.library_ops)
    return candidate


# ---- measurement ------------------------------------------------------------------------------

def _probes():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {'cpu': time.process_time(), 'sys': usage.ru_stime, 'faults': usage.ru_minflt,
            'wall': time.perf_counter()}


def measure_all(candidates, rounds, warmup, calls, seed=SEED):
    """harness.measure, recording wall-clock, CPU time, system CPU time and minor page faults
    (per call) in the same interleaved blocks: probe -> harness.measure-style results."""
    return harness.measure_probes(candidates, _probes, rounds, warmup, calls, seed)


PAIRS = (('ours', 'Keras'), ('ours', 'TF fused'), ('ours fused=False', 'Keras'),
         ('ours fused=False', 'ours'), ('TF fused', 'Keras'), ('ours', 'base'),
         ('TF fused', 'base'), ('ours', 'TF Adam'), ('ours', OFF), (OFF, 'TF Adam'),
         (OFF, 'TF fused'), ('ours', 'ours fused=False'))


def ratio_summary(measured, name=None):
    """clock -> 'a / b' -> spread of the paired per-round ratios a/b (those that exist; for
    Adam, 'TF Adam' is its 'TF fused')."""
    out = {clock: {'%s / %s' % (a, b): harness.ratios(measured[clock], {a: b})[a]
                   for a, b in PAIRS if a in measured[clock] and b in measured[clock]}
           for clock in ('wall', 'cpu')}
    if name == 'Adam':
        for ratios in out.values():
            if 'ours / TF fused' in ratios:
                ratios['ours / TF Adam'] = ratios['ours / TF fused']
    return out


def step_minus_gradient(measured, clock='wall'):
    """candidate -> spread of the per-round (step - gradient only), seconds."""
    r = measured[clock]
    gradient = r['gradient only']['rounds']
    return {c: harness._spread([x - g for x, g in zip(r[c]['rounds'], gradient)])
            for c in r if c != 'gradient only'}


def run_group(kind, name, spec, libs, fused_option, gradient, settings, library):
    """One optimizer on one model: (1) train steps, with `gradient` interleaved; (2) the update
    alone (models in settings['update_alone'] only). Each candidate set is built, timed
    interleaved, and closed before the next."""
    factories = group_factories(name, spec, libs, fused_option, library)
    built = {'gradient only': gradient}
    for label, factory in factories.items():
        built[label] = built_as(label, lambda: Candidate(kind, factory, libs))
    measured = measure_all({label: c.step for label, c in built.items()}, settings['rounds'],
                           settings['warmup'], settings['calls'])
    setup = {label: dict(build_seconds=c.build_seconds, first_run_seconds=c.first_run_seconds,
                         graph_ops=c.ops, library_ops=c.library_ops)
             for label, c in built.items()}
    for label, c in built.items():
        if c is not gradient:
            c.close()
    built = None
    gc.collect()
    if kind not in settings['update_alone']:
        return measured, None, dict(setup=setup)
    alone = {label: built_as(label, lambda: UpdateOnly(kind, factory, libs))
             for label, factory in factories.items()}
    update = measure_all({label: c.step for label, c in alone.items()}, settings['rounds'],
                         settings['warmup'], settings['calls'])
    ops = {label: dict(ops=c.ops, per_variable=c.ops / c.variables, types=dict(c.op_types),
                       executed=sum(c.executed.values()), executed_types=dict(c.executed),
                       executed_per_variable=sum(c.executed.values()) / c.variables)
           for label, c in alone.items()}
    for c in alone.values():
        c.close()
    gc.collect()
    return measured, update, dict(setup=setup, ops=ops)


# ---- machine memory bandwidth -----------------------------------------------------------------

def memory_bandwidth(repeats, sizes_mb=(256, 16)):
    """NumPy copy and triad on float32 arrays of each size, best of `repeats`, 1 and 2 threads.

    copy: b[:] = a, counted as 2 arrays moved (STREAM convention: read a, write b).
    triad: a = b + s*c done as NumPy's two passes (a = s*c; a += b), counted as the 5 array
    transfers those passes make (STREAM's one-pass triad counts 3). 256 MB arrays measure main
    memory; 16 MB ones (about one 2048x2048 kernel) what a working set near the 32 MB L3 gets."""
    import numpy as np
    out = {}
    for megabytes in sizes_mb:
        n = megabytes * 2**20 // 4
        a, b, c = (np.full(n, value, dtype='float32') for value in (1., 2., 3.))

        def copy(lo, hi):
            np.copyto(b[lo:hi], a[lo:hi])

        def triad(lo, hi):
            np.multiply(c[lo:hi], np.float32(3.), out=a[lo:hi])
            np.add(a[lo:hi], b[lo:hi], out=a[lo:hi])

        def timed(kernel, threads):
            bounds = [(n * i // threads, n * (i + 1) // threads) for i in range(threads)]
            workers = [threading.Thread(target=kernel, args=bound) for bound in bounds]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return time.perf_counter() - start

        tries = repeats * max(1, 256 // megabytes // 4)  # small arrays: more, cheap tries
        for kernel, arrays in ((copy, 2), (triad, 5)):
            for threads in (1, 2):
                best = min(timed(kernel, threads) for _ in range(tries))
                out['%s, %d MB, %d thread%s' % (kernel.__name__, megabytes, threads,
                                                's' if threads > 1 else '')] = \
                    arrays * a.nbytes / best / 1e9
        del a, b, c
    return out


# ---- report -----------------------------------------------------------------------------------

def fmt(value, spec='%.2f'):
    return '—' if value is None else spec % value


def spread_cell(ratios, key):
    q = ratios.get(key)
    return '%.2fx (%.2f-%.2f)' % (q['median'], q['q1'], q['q3']) if q else '—'


def time_table(model_results, part, clock, optimizers, names, keys):
    """One row per optimizer: median ms of `names`, then paired ratios `keys` (IQR)."""
    lines = ['| optimizer | ' + ' | '.join(names) + ' | ' + ' | '.join(keys) + ' |',
             '|---|' + '---:|' * (len(names) + len(keys))]
    for name in optimizers:
        r = model_results[name][part][clock]
        ratios = model_results[name][part + ' ratios'][clock]
        lines.append('| %s | %s | %s |' % (
            name, ' | '.join(fmt(r[c]['median'] * 1e3 if c in r else None) for c in names),
            ' | '.join(spread_cell(ratios, k) for k in keys)))
    return '\n'.join(lines)


def bandwidth_table(model_results, optimizers, params, reference):
    lines = ['| optimizer | bytes/param | MB/step | candidate | update alone ms | GB/s | '
             'GB/s best | %% of %.1f | step - gradient ms (IQR) | GB/s from step - gradient | '
             'faults/step: step (MB) | sys ms/step: step | faults/step: update alone |'
             % reference, '|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for name in optimizers:
        g = model_results[name]
        faults = g['step']['faults']['gradient only']['median']
        lines.append('| %s | | | gradient only (its own step) | | | | | | | %.0f (%.0f) | %.1f | |'
                     % (name, faults, faults * resource.getpagesize() / 2**20,
                        g['step']['sys']['gradient only']['median'] * 1e3))
        diff = step_minus_gradient(g['step'])
        for c in CANDIDATES[1:]:
            if c not in diff:
                continue
            per_param = BYTES[BASE if c in ('base', 'TF Adam') else name][0]  # Adam's
            volume = per_param * params
            gbs = lambda t: volume / t / 1e9 if t > 0 else float('nan')  # noqa: E731
            alone, d = g['update']['wall'][c], diff[c]
            faults = g['step']['faults'][c]['median']
            lines.append(
                '| %s | %d | %.0f | %s | %.2f | %.1f | %.1f | %.0f%% | %.2f (%.2f-%.2f) | %.1f | '
                '%.0f (%.0f) | %.1f | %.0f |' % (
                    name, per_param, volume / 1e6, c, alone['median'] * 1e3,
                    gbs(alone['median']), gbs(alone['min']),
                    100 * gbs(alone['median']) / reference, d['median'] * 1e3, d['q1'] * 1e3,
                    d['q3'] * 1e3, gbs(d['median']), faults,
                    faults * resource.getpagesize() / 2**20,
                    g['step']['sys'][c]['median'] * 1e3,
                    g['update']['faults'][c]['median']))
    return '\n'.join(lines)


def paired_difference(measured, a, b, clock='wall'):
    """Spread of the per-round differences a - b (seconds): paired, so drift cancels."""
    r = measured[clock]
    return harness._spread([x - y for x, y in zip(r[a]['rounds'], r[b]['rounds'])])


def extra_table(model_results, optimizers, params, bandwidth):
    """Per extension with extra traffic (EXTRA): its time over base (update alone, train step)
    and the GB/s its extra bytes take in that time."""
    reference = bandwidth['copy, 256 MB, 2 threads']
    lines = ['| extension | candidate | update alone: - base, ms (IQR) | GB/s at the floor | '
             '%% of %.1f | GB/s at what ours moves | train step: - base, ms (IQR) | GB/s at the '
             'floor |' % reference, '|---|---|---:|---:|---:|---:|---:|---:|']
    for name in optimizers:
        if name not in EXTRA or 'update' not in model_results[name]:
            continue
        g, extra = model_results[name], EXTRA[name]
        gbs = lambda bytes_, t: bytes_ * params / t / 1e9 if t > 0 else float('nan')  # noqa
        for c in ('ours', OFF, 'TF fused'):  # fused=False - base would count the unfused rule
            if c not in g['update']['wall']:
                continue
            moved = {'ours': extra['ours'], OFF: extra.get('off')}.get(c)
            u, st = paired_difference(g['update'], c, 'base'), paired_difference(g['step'], c,
                                                                                 'base')
            lines.append('| %s | %s | %.2f (%.2f-%.2f) | %.1f | %.0f%% | %s | %.2f (%.2f-%.2f) | '
                         '%.1f |' % (
                             name, c, u['median'] * 1e3, u['q1'] * 1e3, u['q3'] * 1e3,
                             gbs(extra['floor'], u['median']),
                             100 * gbs(extra['floor'], u['median']) / reference,
                             '%.1f' % gbs(moved, u['median']) if moved else '—',
                             st['median'] * 1e3, st['q1'] * 1e3, st['q3'] * 1e3,
                             gbs(extra['floor'], st['median'])))
    return '\n'.join(lines)


def ops_table(results, optimizers):
    """Per update: nodes executed (after grappler), and ops added to the graph."""
    lines = ['| model (variables) | optimizer | ' + ' | '.join(CANDIDATES[1:]) + ' |',
             '|---|---|' + '---:|' * (len(CANDIDATES) - 1)]
    for kind, model_results in results.items():
        for name in optimizers:
            ops = model_results[name]['ops']
            cells = ['%d (%.1f/var); %d (%.1f/var)' % (
                ops[c]['executed'], ops[c]['executed_per_variable'], ops[c]['ops'],
                ops[c]['per_variable']) if c in ops else '—' for c in CANDIDATES[1:]]
            lines.append('| %s (%d) | %s | %s |' % (
                kind, model_results['_meta']['variables'], name, ' | '.join(cells)))
    return '\n'.join(lines)


def op_types_lines(model_results, optimizers, top=8):
    """The op types one update executes, per variable, most frequent first."""
    lines = []
    variables = model_results['_meta']['variables']
    for name in optimizers:
        for c, info in model_results[name]['ops'].items():
            types = sorted(info['executed_types'].items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append('- %s, %s: %s' % (name, c, ', '.join(
                '%s %.2f' % (t, n / variables) for t, n in types[:top])))
    return '\n'.join(lines)


def setup_table(results, optimizers):
    lines = ['| model | optimizer | ' + ' | '.join(CANDIDATES) + ' |',
             '|---|---|' + '---:|' * len(CANDIDATES)]
    for kind, model_results in results.items():
        for name in optimizers:
            setup = model_results[name]['setup']
            lines.append('| %s | %s | %s |' % (kind, name, ' | '.join(
                '%.1f + %.1f' % (setup[c]['build_seconds'], setup[c]['first_run_seconds'])
                if c in setup else '—' for c in CANDIDATES)))
    return '\n'.join(lines)


def targets_table(results, optimizers):
    """Issue 20's targets, per optimizer: the train step (wall-clock, paired ratios) on the MLP
    against TF's fused Adam (and momentum SGD / RMSprop against TF's own kernel), on the small
    model against the formula graph (fused=False), the set-up time with and without the
    library, and the step against the path without the library."""
    lines = ['| optimizer | MLP: ours / TF Adam | target | MLP: ours / TF own | target | '
             'MLP: ours / kernels off | small: ours / fused=False | small: ours / kernels off | '
             'build + first run s, MLP: ours / kernels off | small: ours / kernels off |',
             '|---|---:|---|---:|---|---:|---:|---:|---:|---:|']

    def ratio(kind, name, key):
        r = results.get(kind, {}).get(name)
        return r['step ratios']['wall'].get(key) if r else None

    def verdict(q, target):
        return '' if q is None else '<= %.2f: %s' % (target, 'yes' if q['median'] <= target
                                                     else 'NO')

    def setup(kind, name):
        r = results.get(kind, {}).get(name)
        if not r or OFF not in r['setup']:
            return '—'
        return ' / '.join('%.1f' % (r['setup'][c]['build_seconds'] +
                                    r['setup'][c]['first_run_seconds']) for c in ('ours', OFF))
    for name in optimizers:
        adam, own = ratio('mlp', name, 'ours / TF Adam'), ratio('mlp', name, 'ours / TF fused')
        cells = [name, spread_cell({'k': adam}, 'k') if adam else '—',
                 verdict(adam, ADAM_TARGET[name]),
                 spread_cell({'k': own}, 'k') if own and name in OWN_TARGET else '—',
                 verdict(own, OWN_TARGET[name]) if name in OWN_TARGET else '']
        for kind, key in (('mlp', 'ours / %s' % OFF), ('small', 'ours / ours fused=False'),
                          ('small', 'ours / %s' % OFF)):
            q = ratio(kind, name, key)
            cells.append(spread_cell({'k': q}, 'k') if q else '—')
        cells += [setup('mlp', name), setup('small', name)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


STEP_KEYS = ['ours / TF Adam', 'ours / TF fused', 'ours / %s' % OFF, 'ours / Keras',
             'ours fused=False / Keras', 'ours fused=False / ours', 'ours / base']
UPDATE_KEYS = STEP_KEYS + ['TF fused / Keras', 'TF fused / base']


def report(results, settings, specs, fused_option, bandwidth, seconds, quick, command=None):
    optimizers = settings['optimizers']
    reference = bandwidth['copy, 256 MB, 2 threads']
    fused_note = ('accepted by: %s' % ', '.join(n for n, v in fused_option.items() if v)
                  if any(fused_option.values()) else
                  'not in the installed package: no "ours fused=False" candidates')
    sections = [
        '# Optimizer step time%s' % (' (--quick)' if quick else ''),
        'keras_opt_legacy ("ours", default arguments) vs Keras 2.2.4 built-ins vs TF fused kernels '
        '(`TFOptimizer(tf.train.X)`). Batch %d; `model.train_function` on a prebuilt batch. Each '
        'optimizer is measured on its own: its train-step candidates and the gradient-only model '
        'interleaved (%d rounds of %d calls after %d warm-up rounds), then (MLP) its '
        'update-alone candidates likewise. Times: median ms; ratios: medians of per-round paired '
        'ratios (IQR in brackets). `fused=` option: %s; where "ours" and "ours fused=False" '
        'execute the same nodes (see "Graph ops per update"), the option changes nothing for '
        'that optimizer. Unfused updates allocate large temporaries, and whether the allocator '
        'hands them back to the OS (page faults, system time: see the bandwidth table) varies '
        'between graphs and runs, so two identical unfused graphs can differ by 10-20%%. '
        '"base" (extensions only: AdamW, Adam multipliers, Adam EMA) is kol.Adam() in the '
        'same rounds: '
        '"ours / base" is what the extension costs.'
        % (BATCH, settings['rounds'], settings['calls'], settings['warmup'], fused_note)]
    if command:
        sections.insert(1, 'Command: `%s`' % command)
    sections.append(
        '## Issue 20 targets\n\nTrain step, wall-clock, paired per-round ratios (median, IQR). '
        'Targets: every rule <= 1.15x TF\'s fused Adam on the MLP (LAMB, LARS <= 1.35x); '
        'momentum SGD and RMSprop <= 1.05x TF\'s own kernels (MomentumOptimizer, '
        'RMSPropOptimizer: their "TF fused"); on the small model no rule slower than its formula '
        'graph (ours / fused=False <= 1); set-up (model + compile + train function, then the '
        'first run: one measurement each) not above the path without the library ("kernels '
        'off": KERAS_OPT_LEGACY_KERNELS=0, as before issue 20).\n\n' +
        targets_table(results, optimizers))
    for kind, model_results in results.items():
        meta = model_results['_meta']
        title = '%s (%d parameters, %d variables)' % (model_title(kind), meta['params'],
                                                      meta['variables'])
        for clock, clock_name in (('wall', 'wall-clock'), ('cpu', 'CPU time, all threads')):
            sections.append('## %s: train step, %s, ms\n\n%s' % (
                title, clock_name, time_table(model_results, 'step', clock, optimizers,
                                              CANDIDATES, STEP_KEYS)))
        for clock, clock_name in (('wall', 'wall-clock'), ('cpu', 'CPU time, all threads')):
            if 'update' not in model_results[settings['optimizers'][0]]:
                break
            sections.append('## %s: update alone, %s, ms\n\n%s' % (
                title, clock_name, time_table(model_results, 'update', clock, optimizers,
                                              CANDIDATES[1:], UPDATE_KEYS)))
    notes = ['- %s: TF fused = %s%s.%s' % (
        n, 'TFOptimizer(%s)' % specs[n]['fused'][0] if specs[n]['fused'] else 'none',
        '; base = %s' % specs[n]['base'][0] if specs[n].get('base') else '',
        ' ' + specs[n]['note'] + '.' if specs[n]['note'] else '') for n in optimizers]
    sections.append('The baselines:\n\n' + '\n'.join(notes))
    sections.append(
        '## Machine memory bandwidth\n\nMeasured before and after the TF runs; best of '
        'both.\n\n| NumPy kernel, float32 arrays | GB/s (best) |\n'
        '|---|---:|\n' + '\n'.join('| %s | %.1f |' % kv for kv in bandwidth.items()) +
        '\n\ncopy counts 2 arrays moved (read + write, STREAM convention); the triad is '
        'NumPy\'s two passes (a = s*c; a += b), counted as 5 array transfers. TF runs an update '
        'on up to 2 threads here (its intra-op pool). L3 is 32 MB; one 2048x2048 float32 array '
        'is 16.8 MB, so an update of one MLP kernel (4 to 7 such arrays) is mostly, not wholly, '
        'a main-memory workload.')
    if 'mlp' in results and 'mlp' in settings['update_alone']:
        params = results['mlp']['_meta']['params']
        assumptions = '\n'.join('- %s: %d bytes/param (%s)' % (n, BYTES[n][0], BYTES[n][1])
                                for n in optimizers)
        sections.append(
            '## Update bandwidth, MLP (%d parameters), wall-clock\n\n'
            'Effective GB/s = bytes the update must touch per step / update time. Assumed '
            'traffic (float32, every array read or written exactly once, as a one-pass in-place '
            'kernel would; the same figure for every candidate of an optimizer: it is the work, '
            'not what a given graph moves):\n\n%s\n\n'
            'Update time measured two ways: "update alone" (the update ops only, gradients held '
            'in variables) and "step - gradient" (per round: train step minus gradient-only, '
            'median). The second can understate the update: inside a step, the update of a late '
            'layer overlaps the backward pass of an early one, and a just-computed gradient may '
            'still be in cache. Faults and sys time are per train step (minor page faults: '
            'freshly mapped pages the kernel had to zero). Reference: NumPy copy, 2 threads = '
            '%.1f GB/s (256 MB arrays).\n\n%s'
            % (params, assumptions, reference,
               bandwidth_table(results['mlp'], optimizers, params, reference)))
    extensions = [n for n in optimizers if n in EXTRA]
    if extensions and 'mlp' in results and 'mlp' in settings['update_alone']:
        params = results['mlp']['_meta']['params']
        sections.append(
            '## Extension overhead, MLP (%d parameters), wall-clock\n\n'
            'The extension\'s own time: per round, candidate minus base (kol.Adam(), timed in '
            'the same rounds), median of the paired differences (IQR). GB/s = the extra bytes '
            'per parameter it must move / that time ("ours fused=False" is left out: its '
            'difference to base includes the unfused rule). Extra traffic:\n\n%s\n\n%s'
            % (params, '\n'.join('- %s: %d bytes/param at the floor, %d as implemented (%s '
                                  'without the library): %s'
                                  % (n, EXTRA[n]['floor'], EXTRA[n]['ours'],
                                     EXTRA[n].get('off', '—'), EXTRA[n]['what'])
                                  for n in extensions),
               extra_table(results['mlp'], optimizers, params, bandwidth)))
    if 'mlp' in results and 'mlp' in settings['update_alone']:
        sections.append('## Graph ops per update\n\nIn the update-alone graphs (variables, their '
                        'gradients, the optimizer): nodes one update executes (a traced run, after '
                        'grappler; variables and constants included); then ops the optimizer '
                        'added to the graph (state creation and initializers included). Per '
                        'trainable variable in brackets; the per-step scalar work (step '
                        'counter, bias corrections) is spread over the 6 variables.\n\n' +
                        ops_table({'mlp': results['mlp']}, optimizers))
        sections.append('Op types one update executes, per variable (%s):\n\n%s'
                        % (model_title('mlp'), op_types_lines(results['mlp'], optimizers)))
    sections.append('## Set-up seconds per train-step candidate (build + first run)\n\n'
                    'Build = model + compile + train function; first run = grappler and executor '
                    'set-up. Not part of the times above.\n\n' + setup_table(results, optimizers))
    sections.append('Total run time: %.0f s' % seconds)
    return '\n\n'.join(sections)


def main():
    global SMALL_LAYERS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='SGD and Adam only, fewer rounds (~1 min)')
    parser.add_argument('--optimizers', help='comma-separated subset, e.g. "SGD,Adam"')
    parser.add_argument('--models', help='comma-separated subset of mlp,small')
    parser.add_argument('--small-layers', type=int, default=SMALL_LAYERS,
                        help='Dense(16) layers of the small model (2 variables each)')
    parser.add_argument('--results', default='optimizer_step', metavar='NAME',
                        help='write bench/results/NAME.json and NAME.md (default: '
                             'optimizer_step, the full run\'s; name a partial run otherwise)')
    args = parser.parse_args()
    SMALL_LAYERS = args.small_layers
    settings = dict(QUICK if args.quick else FULL)
    if args.optimizers:
        settings['optimizers'] = [o.strip() for o in args.optimizers.split(',')]
        if settings['optimizers'] == ['rules']:
            settings['optimizers'] = list(RULES)
    if args.models:
        settings['models'] = [m.strip() for m in args.models.split(',')]
    unknown = (set(settings['optimizers']) - set(OPTIMIZERS)) | (set(settings['models']) -
                                                                   set(MODELS))
    if unknown:
        parser.error('unknown optimizer(s) or model(s): %s' % ', '.join(sorted(unknown)))
    if not args.results or os.sep in args.results or args.results.startswith('.'):
        parser.error('--results takes a file name (no directory): %r' % args.results)
    started = time.perf_counter()

    print('measuring memory bandwidth ...', file=sys.stderr)
    bandwidth_runs = [memory_bandwidth(settings['bandwidth_repeats'])]
    gc.collect()
    libs = harness.quiet_tensorflow()
    tf, keras, kol = libs
    specs = optimizer_specs(tf, keras, kol)
    fused_option = {name: accepts_fused(specs[name]['ours'][0], tf)
                    for name in settings['optimizers']}
    from keras_opt_legacy import kernels
    library = kernels.library() is not None
    print('kernel library: %s' % ('usable' if library else 'not usable (%s): no "%s" '
                                  'candidates' % (kernels.why_not(), OFF)), file=sys.stderr)

    results = {}
    for kind in settings['models']:
        gradient = Candidate(kind, None, libs)
        for _ in range(settings['burn_in']):  # let the process's heap settle before timing
            gradient.step()
        model_results = {'_meta': dict(kind=kind, params=gradient.params,
                                       variables=gradient.variables)}
        for name in settings['optimizers']:
            t0 = time.perf_counter()
            step, update, info = run_group(kind, name, specs[name], libs, fused_option[name],
                                           gradient, settings, library)
            model_results[name] = dict(step=step, **info)
            model_results[name].update({'step ratios': ratio_summary(step, name),
                                        'seconds': time.perf_counter() - t0})
            if update is not None:
                model_results[name].update(update=update, **{'update ratios':
                                                             ratio_summary(update, name)})
            if name in EXTRA and update is not None:  # the extension's own time, seconds
                model_results[name]['minus base'] = {
                    c: {'update alone': paired_difference(update, c, 'base'),
                        'step': paired_difference(step, c, 'base')}
                    for c in update['wall'] if c != 'base'}
                print('%-5s %-16s ours - base: update alone %.2f ms, step %.2f ms' % (
                    kind, name, model_results[name]['minus base']['ours']['update alone'][
                        'median'] * 1e3, model_results[name]['minus base']['ours']['step'][
                        'median'] * 1e3), file=sys.stderr)
            ratios = model_results[name]['step ratios']['wall']
            print('%-5s %-17s %5.1f s  step: ours/TF Adam %s, ours/TF fused %s, ours/off %s, '
                  'ours/fused=False %s%s' % (
                      kind, name, model_results[name]['seconds'],
                      spread_cell(ratios, 'ours / TF Adam'), spread_cell(ratios, 'ours / TF fused'),
                      spread_cell(ratios, 'ours / %s' % OFF),
                      spread_cell(ratios, 'ours / ours fused=False'),
                      ', ours/base %s' % spread_cell(ratios, 'ours / base')
                      if 'ours / base' in ratios else ''), file=sys.stderr)
        gradient.close()
        results[kind] = model_results
        gc.collect()

    print('measuring memory bandwidth again ...', file=sys.stderr)
    bandwidth_runs.append(memory_bandwidth(settings['bandwidth_repeats']))
    bandwidth = {key: max(run[key] for run in bandwidth_runs) for key in bandwidth_runs[0]}
    seconds = time.perf_counter() - started
    command = ' '.join(['python', os.path.relpath(sys.argv[0])] + [
        "'%s'" % a if ' ' in a else a for a in sys.argv[1:]])
    markdown = report(results, settings, specs, fused_option, bandwidth, seconds, args.quick,
                      command)
    print(markdown)
    paths = harness.write_results(args.results, {
        'quick': args.quick, 'settings': settings, 'seconds': seconds, 'batch': BATCH,
        'small_layers': SMALL_LAYERS, 'bytes_per_param': {n: BYTES[n][0] for n in BYTES},
        'extra_bytes_per_param': {n: {k: EXTRA[n][k] for k in ('floor', 'ours', 'off')}
                                  for n in EXTRA},
        'fused_option': fused_option, 'memory_bandwidth_gbs': bandwidth,
        'command': command,
        'memory_bandwidth_runs_gbs': bandwidth_runs,
        'results': results}, markdown)
    print('total %.0f s; wrote %s' % (seconds, ', '.join(os.path.relpath(p) for p in paths)))


if __name__ == '__main__':
    main()
