"""Embedding training (issue 19): keras_opt_legacy's sparse updates vs Keras 2.2.4's built-ins.

The model: Embedding(1,000,000 x 64) -> GlobalAveragePooling1D -> Dense(1), MSE (64,000,065
parameters; the table is 256 MB of float32). Batches of 256 sequences of 20 ids drawn uniformly
from the vocabulary (8 prebuilt batches, cycled); each step calls `model.train_function` (what
`train_on_batch` runs, without Keras's per-call data checks, identical for all candidates).
The table's gradient is a tf.IndexedSlices of 5,120 rows.

Candidates, per optimizer X in SGD, momentum SGD (0.9), RMSprop, Adagrad, Adam (Keras's default
hyperparameters; SGD lr 0.01):
- 'Keras': keras.optimizers.X (densifies the gradient and runs its formula on the whole table);
- 'ours': kol.X with default arguments (the exact path: rows only for SGD and Adagrad, the
  gradient densified once + fused kernel / in-place update for the others);
and in the Adam group also 'ours lazy=True' (kol.Adam(lazy=True)) and 'TF LazyAdam'
(keras.optimizers.TFOptimizer(tf.contrib.opt.LazyAdamOptimizer(0.001))), plus in every group
'gradient only' (forward + backward, no update: the floor; it fetches one value of each gradient,
the IndexedSlices' values, so nothing is densified).

(1) Step time. Each group's candidates (own tf.Graph and Session each) are timed interleaved in
    this process (bench/harness.py: rounds of `calls` steps per candidate in a shuffled order,
    after warm-up rounds), wall-clock and CPU time of the process (all threads; less disturbed by
    other load on the machine). Reported: medians, and medians of per-round paired ratios (IQR).
(2) Peak memory added by training. Each candidate in its own subprocess, run one after the
    other (not interleaved: a process's peak RSS includes whatever else it holds, so several
    candidates in one process cannot be told apart): build the model and initialize the table,
    read the RSS (`before`), reset the kernel's peak-RSS mark (write 5 to /proc/self/clear_refs),
    then compile, build the train function and initialize the optimizer's state (RSS read
    again: `initialized`, and the peak mark reset), and train `memory_steps` steps; `added` =
    the highest VmHWM of the two phases - before: the optimizer's state plus the peak of the
    step's temporaries. Also the state's size (the variables training created), the steps' own
    peak above `initialized`, and `steady` = VmRSS after the steps - before. TF's default CPU
    allocator and glibc's malloc as a user has them: blocks this large (> 32 MB) are always
    mmapped, so freed temporaries leave the RSS.

Targets (issue 19): ours/Keras step time <= 0.3x for Adam, RMSprop and momentum SGD and <= 0.05x
for SGD and Adagrad; Adam lazy=True <= 0.05x Keras's Adam and <= 1.5x TF's LazyAdam; peak memory
added by training <= 0.5x Keras's for every optimizer.

Usage: python bench/embedding.py [--quick] [--optimizers SGD,Adam] [--no-memory]
Results: bench/results/embedding.json and .md (--quick: embedding_quick; --rows N: _rowsN).
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import time
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
warnings.filterwarnings('ignore')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROWS, WIDTH, BATCH, LENGTH, BATCHES = 1000000, 64, 256, 20, 8  # ROWS: --rows
SEED = 0
OPTIMIZERS = ['SGD', 'momentum SGD', 'RMSprop', 'Adagrad', 'Adam']
CANDIDATES = ['gradient only', 'Keras', 'ours', 'ours lazy=True', 'TF LazyAdam']
FULL = dict(rounds=8, warmup=1, calls=3, memory_steps=5)
QUICK = dict(rounds=3, warmup=1, calls=2, memory_steps=2)
# Step-time targets (ours / Keras), and the memory target (added by training, ours / Keras).
TIME_TARGETS = {'SGD': 0.05, 'Adagrad': 0.05, 'RMSprop': 0.3, 'momentum SGD': 0.3, 'Adam': 0.3}
LAZY_TARGETS = {'ours lazy=True / Keras': 0.05, 'ours lazy=True / TF LazyAdam': 1.5}
MEMORY_TARGET = 0.5


# ---- candidates ------------------------------------------------------------------------------

def factories(name, libs):
    """candidate -> optimizer factory for the group `name` (None: gradient only)."""
    tf, keras, kol = libs
    ko = keras.optimizers
    found = {
        'SGD': {'Keras': lambda: ko.SGD(0.01), 'ours': lambda: kol.SGD(0.01)},
        'momentum SGD': {'Keras': lambda: ko.SGD(0.01, momentum=0.9),
                         'ours': lambda: kol.SGD(0.01, momentum=0.9)},
        'RMSprop': {'Keras': lambda: ko.RMSprop(), 'ours': lambda: kol.RMSprop()},
        'Adagrad': {'Keras': lambda: ko.Adagrad(), 'ours': lambda: kol.Adagrad()},
        'Adam': {'Keras': lambda: ko.Adam(), 'ours': lambda: kol.Adam(),
                 'ours lazy=True': lambda: kol.Adam(lazy=True),
                 'TF LazyAdam': lambda: ko.TFOptimizer(tf.contrib.opt.LazyAdamOptimizer(0.001))},
    }[name]
    return dict(found, **{'gradient only': None})


def set_rows(rows):
    global ROWS
    ROWS = rows


def make_batches():
    import numpy as np
    rng = np.random.RandomState(SEED)
    return [[rng.randint(0, ROWS, size=(BATCH, LENGTH)).astype('int32'),
             rng.rand(BATCH, 1).astype('float32'), np.ones(BATCH, 'float32')]
            for _ in range(BATCHES)]


def make_model(keras):
    return keras.Sequential([keras.layers.Embedding(ROWS, WIDTH, input_length=LENGTH),
                             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])


def train_function(model, make_optimizer, keras):
    """`model`'s train function with `make_optimizer()`, or (None) a gradient-only function."""
    import tensorflow as tf
    from keras import backend as K
    if make_optimizer is not None:
        model.compile(make_optimizer(), 'mse')
        model._make_train_function()
        return model.train_function
    model.compile(keras.optimizers.SGD(0.), 'mse')  # never used: for the loss and the feeds
    grads = K.gradients(model.total_loss, model.trainable_weights)
    probe = tf.concat([tf.reshape(getattr(g, 'values', g), [-1])[:1] for g in grads], 0)
    return K.function(model._feed_inputs + model._feed_targets + model._feed_sample_weights,
                      [model.total_loss, probe])


class Candidate(object):
    """One model in its own graph and session; `step()` runs one train (or gradient) step on the
    next prebuilt batch."""

    def __init__(self, make_optimizer, libs, batches):
        tf, keras, _ = libs
        started = time.perf_counter()
        self.graph = tf.Graph()
        self.batches, self.count = batches, 0
        with self.graph.as_default():
            self.session = tf.Session(graph=self.graph)
            with self.session.as_default():
                tf.set_random_seed(SEED)
                self.function = train_function(make_model(keras), make_optimizer, keras)
                self.function(batches[0])  # variables initialized, grappler, executor
        self.setup_seconds = time.perf_counter() - started

    def step(self):
        with self.graph.as_default(), self.session.as_default():
            self.function(self.batches[self.count % len(self.batches)])
        self.count += 1

    def close(self):
        self.session.close()


def time_group(name, libs, batches, settings):
    """Interleaved timing of one optimizer's candidates: probe -> harness.measure-style results,
    and the set-up seconds."""
    built = {}
    for label, factory in factories(name, libs).items():
        built[label] = Candidate(factory, libs, batches)
    measured = harness.measure_probes(
        {label: c.step for label, c in built.items()},
        lambda: {'wall': time.perf_counter(), 'cpu': time.process_time()},
        settings['rounds'], settings['warmup'], settings['calls'], SEED)
    setup = {label: c.setup_seconds for label, c in built.items()}
    for c in built.values():
        c.close()
    built = None
    gc.collect()
    return measured, setup


# ---- memory (one subprocess per candidate) ----------------------------------------------------

def status_kb():
    """VmRSS and VmHWM (peak RSS since the last reset) of this process, kB."""
    values = {}
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(('VmRSS:', 'VmHWM:')):
                key, value = line.split(':')
                values[key] = int(value.split()[0])
    return values


def reset_peak():
    """Set this process's VmHWM to its current RSS (Linux >= 4.0)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def memory_child(group, label, steps):
    """Print JSON: RSS before training; what compiling and creating the state added (RSS, and
    its peak); the peak of the steps above that; state bytes."""
    import numpy as np
    libs = harness.quiet_tensorflow()
    tf, keras, _ = libs
    from keras import backend as K
    batches = make_batches()
    tf.set_random_seed(SEED)
    model = make_model(keras)
    K.get_session()  # initializes the table
    model.predict(batches[0][0], batch_size=BATCH)  # the forward pass's own set-up
    variables = set(tf.global_variables())
    gc.collect()
    before = status_kb()['VmRSS']
    reset_peak()
    started = time.perf_counter()
    function = train_function(model, factories(group, libs)[label], keras)
    K.get_session()  # initializes the optimizer's state (else the first step does)
    initialized = status_kb()
    reset_peak()
    for i in range(steps):
        function(batches[i % len(batches)])
    seconds = time.perf_counter() - started
    after = status_kb()
    state = [v for v in tf.global_variables() if v not in variables]
    state_bytes = sum(int(np.prod(v.shape.as_list())) * v.dtype.base_dtype.size for v in state)
    mb = 1024.
    print(json.dumps({
        'before_mb': before / mb, 'state_mb': state_bytes / 2.**20,
        'peak_mb': max(initialized['VmHWM'], after['VmHWM']) / mb,
        'added_mb': (max(initialized['VmHWM'], after['VmHWM']) - before) / mb,
        'initialized_mb': (initialized['VmRSS'] - before) / mb,
        'initialization_peak_mb': (initialized['VmHWM'] - before) / mb,
        'steps_peak_mb': (after['VmHWM'] - initialized['VmRSS']) / mb,
        'steady_mb': (after['VmRSS'] - before) / mb, 'seconds': seconds, 'steps': steps}))


def measure_memory(group, labels, steps):
    """label -> the child's JSON, each candidate in its own process, in order."""
    found = {}
    for label in labels:
        if label == 'gradient only':
            continue
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), '--memory-child', group, label,
             '--memory-steps', str(steps), '--rows', str(ROWS)], stdout=subprocess.PIPE, check=True,
            universal_newlines=True).stdout
        found[label] = json.loads(out.strip().splitlines()[-1])
    return found


# ---- report -----------------------------------------------------------------------------------

def ratio(measured, clock, a, b):
    return harness.ratios(measured[clock], {a: b})[a]


def cell(q):
    return '%.3fx (%.3f-%.3f)' % (q['median'], q['q1'], q['q3'])


def verdict(value, target):
    return 'met' if value <= target else 'NOT met'


def summary(results, optimizers):
    """The targets, one row each: (what, measured, target, verdict)."""
    rows = []
    for name in optimizers:
        r = results[name]
        q = ratio(r['time'], 'wall', 'ours', 'Keras')
        rows.append(('%s step time, ours / Keras' % name, q, TIME_TARGETS[name]))
        if name == 'Adam':
            for key, target in LAZY_TARGETS.items():
                a, b = key.split(' / ')
                rows.append(('Adam step time, %s' % key, ratio(r['time'], 'wall', a, b), target))
    for name in optimizers:
        memory = results[name].get('memory')
        if not memory:
            continue
        keras_added = memory['Keras']['added_mb']
        for label in memory:
            if label in ('Keras', 'TF LazyAdam'):
                continue
            value = memory[label]['added_mb'] / keras_added
            rows.append(('%s peak memory added, %s / Keras' % (name, label),
                         {'median': value, 'q1': value, 'q3': value}, MEMORY_TARGET))
    return rows


def report(results, settings, optimizers, seconds, command, memory_done):
    sections = ['# Embedding training step: sparse updates vs Keras 2.2.4',
                'Command: `%s`' % command,
                'Embedding(%d x %d) -> GlobalAveragePooling1D -> Dense(1), MSE; batches of %d '
                'sequences of %d ids, uniform over the vocabulary (%d prebuilt batches, cycled); '
                '`model.train_function` per step. Each optimizer\'s candidates are timed '
                'interleaved (%d rounds of %d steps per candidate after %d warm-up round(s)); '
                'ratios are medians of per-round paired ratios (IQR in brackets). Memory: each '
                'candidate in its own process, %d steps; "added" = peak RSS during compile + '
                'state creation + training, minus the RSS before (model built, table '
                'initialized): the optimizer state plus the peak of the step\'s temporaries. '
                'See the docstring of bench/embedding.py.'
                % (ROWS, WIDTH, BATCH, LENGTH, BATCHES, settings['rounds'], settings['calls'],
                   settings['warmup'], settings['memory_steps'])]
    lines = ['| target | measured (wall-clock) | target | verdict |', '|---|---:|---:|---|']
    for what, q, target in summary(results, optimizers):
        lines.append('| %s | %s | <= %.2fx | %s |' % (what, cell(q) if q['q1'] != q['q3'] or
                                                       'memory' not in what else
                                                       '%.3fx' % q['median'], target,
                                                       verdict(q['median'], target)))
    sections.append('## Targets\n\n' + '\n'.join(lines))
    for clock, title in (('wall', 'wall-clock'), ('cpu', 'CPU time of the process, all threads')):
        lines = ['| optimizer | candidate | median ms | min-max ms | vs | ratio (median) | '
                 'ratio IQR |', '|---|---|---:|---:|---|---:|---:|']
        for name in optimizers:
            measured = results[name]['time'][clock]
            for label, r in measured.items():
                base = 'Keras' if label != 'Keras' else None
                if label == 'ours lazy=True':
                    extra = [('TF LazyAdam', ratio(results[name]['time'], clock, label,
                                                   'TF LazyAdam'))]
                else:
                    extra = []
                q = ratio(results[name]['time'], clock, label, base) if base else None
                lines.append('| %s | %s | %.1f | %.1f-%.1f | %s | %s | %s |' % (
                    name, label, r['median'] * 1e3, r['min'] * 1e3, r['max'] * 1e3,
                    base or '', '%.4fx' % q['median'] if q else '',
                    '%.4f-%.4f' % (q['q1'], q['q3']) if q else ''))
                for other, q2 in extra:
                    lines.append('| %s | %s | | | %s | %.3fx | %.3f-%.3f |' % (
                        name, label, other, q2['median'], q2['q1'], q2['q3']))
        sections.append('## Step time, %s\n\n%s' % (title, '\n'.join(lines)))
    if memory_done:
        lines = ['| optimizer | candidate | added MB | vs Keras | state MB | after compile + '
                 'state created MB | peak of the steps above that MB | steady after the steps '
                 'MB |', '|---|---|---:|---:|---:|---:|---:|---:|']
        for name in optimizers:
            memory = results[name]['memory']
            for label, m in memory.items():
                lines.append('| %s | %s | %.0f | %s | %.0f | %.0f | %.0f | %.0f |' % (
                    name, label, m['added_mb'],
                    '%.3fx' % (m['added_mb'] / memory['Keras']['added_mb'])
                    if label != 'Keras' else '', m['state_mb'], m['initialized_mb'],
                    m['steps_peak_mb'], m['steady_mb']))
        before = sorted(m['before_mb'] for r in results.values() for m in r['memory'].values())
        sections.append(
            '## Peak memory added by training (one process per candidate)\n\n' +
            '\n'.join(lines) + '\n\n"added" = peak RSS from compile to the last step minus the '
            'RSS before (%.0f-%.0f MB: TF, the model, the table initialized); "after compile '
            '+ state created" = RSS once the optimizer\'s state exists and is initialized, minus '
            'that; "peak of the steps" = the steps\' peak RSS above it (their temporaries: the '
            'densified gradient, the formula\'s intermediates); "steady" = RSS after the steps '
            'minus before. One table copy is %.0f MB. TF 1.15 keeps one table-sized constant '
            'per distinct slot initial value in memory for the whole session (grappler\'s '
            'constant folding materializes the initializer\'s `tf.fill`/`tf.zeros` as a Const '
            'node held by the cached init executor; measured: with constant folding off, or '
            'with a non-constant fill value, it is gone): that is why "after compile + state '
            'created" exceeds "state" by about one table copy for every candidate, Keras\'s and '
            'TF\'s own included.' % (before[0], before[-1], ROWS * WIDTH * 4 / 2.**20))
    lines = ['| optimizer | ' + ' | '.join(CANDIDATES) + ' |',
             '|---|' + '---:|' * len(CANDIDATES)]
    for name in optimizers:
        setup = results[name]['setup']
        lines.append('| %s | %s |' % (name, ' | '.join(
            '%.1f' % setup[c] if c in setup else '—' for c in CANDIDATES)))
    sections.append('## Set-up seconds per candidate (build + first step; not timed above)\n\n' +
                    '\n'.join(lines))
    sections.append('Total run time: %.0f s' % seconds)
    return '\n\n'.join(sections)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer rounds and memory steps')
    parser.add_argument('--optimizers', help='comma-separated subset of: ' + ', '.join(OPTIMIZERS))
    parser.add_argument('--no-memory', action='store_true', help='step time only')
    parser.add_argument('--memory-child', nargs=2, metavar=('GROUP', 'CANDIDATE'),
                        help=argparse.SUPPRESS)
    parser.add_argument('--memory-steps', type=int, default=FULL['memory_steps'],
                        help=argparse.SUPPRESS)
    parser.add_argument('--rows', type=int, default=ROWS,
                        help='vocabulary size (default %(default)s; smaller: a check of the '
                             'script, not the benchmark)')
    args = parser.parse_args()
    set_rows(args.rows)
    if args.memory_child:
        return memory_child(args.memory_child[0], args.memory_child[1], args.memory_steps)
    settings = dict(QUICK if args.quick else FULL)
    optimizers = OPTIMIZERS if not args.optimizers else [
        o.strip() for o in args.optimizers.split(',')]
    unknown = set(optimizers) - set(OPTIMIZERS)
    if unknown:
        parser.error('unknown optimizer(s): %s' % ', '.join(sorted(unknown)))
    started = time.perf_counter()
    libs = harness.quiet_tensorflow()
    batches = make_batches()
    results = {}
    for name in optimizers:
        t0 = time.perf_counter()
        measured, setup = time_group(name, libs, batches, settings)
        results[name] = dict(time=measured, setup=setup)
        print('%-13s step time %5.0f s: ours/Keras %s' % (
            name, time.perf_counter() - t0, cell(ratio(measured, 'wall', 'ours', 'Keras'))),
            file=sys.stderr)
    if not args.no_memory:
        for name in optimizers:
            t0 = time.perf_counter()
            results[name]['memory'] = measure_memory(name, list(factories(name, libs)),
                                                     settings['memory_steps'])
            memory = results[name]['memory']
            print('%-13s memory %5.0f s: added MB %s' % (
                name, time.perf_counter() - t0, ', '.join(
                    '%s %.0f' % (label, m['added_mb']) for label, m in memory.items())),
                file=sys.stderr)
    seconds = time.perf_counter() - started
    command = ' '.join(['python', os.path.relpath(sys.argv[0])] + sys.argv[1:])
    markdown = report(results, settings, optimizers, seconds, command, not args.no_memory)
    print(markdown)
    targets = [dict(what=what, median=q['median'], q1=q['q1'], q3=q['q3'], target=target,
                    met=q['median'] <= target)
               for what, q, target in summary(results, optimizers)]
    name = 'embedding' + ('_quick' if args.quick else '') + (
        '_rows%d' % ROWS if ROWS != 1000000 else '')
    paths = harness.write_results(name, {
        'quick': args.quick, 'settings': settings, 'seconds': seconds, 'command': command,
        'model': dict(rows=ROWS, width=WIDTH, batch=BATCH, length=LENGTH, batches=BATCHES),
        'targets': targets, 'results': results}, markdown)
    print('total %.0f s; wrote %s' % (seconds, ', '.join(os.path.relpath(p) for p in paths)))


if __name__ == '__main__':
    main()
