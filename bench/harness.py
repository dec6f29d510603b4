"""Shared benchmark harness: interleaved timing, a ratio table, JSON + markdown results.

Run directly (`python bench/harness.py`) for a one-second self-demo.
"""
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def _quantile(ordered, q):
    """Linear-interpolated quantile of sorted values (numpy's default; Python 3.7 has none)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _spread(values):
    """Median, min, max and quartiles of `values`."""
    values = sorted(values)
    return {'median': statistics.median(values), 'min': values[0], 'max': values[-1],
            'q1': _quantile(values, .25), 'q3': _quantile(values, .75)}


def measure(candidates, rounds=10, warmup=2, calls=8, seed=0, clock=time.perf_counter):
    """Time the zero-argument callables in `candidates` (name -> callable) interleaved.

    Each round runs every candidate `calls` times in a fresh shuffled order and records its
    seconds per call, so slow drifts of the machine hit all candidates alike. The first `warmup`
    rounds are discarded. Returns name -> spread of seconds per call (median, min, max, q1, q3)
    plus `rounds` (the per-round values, in round order, for paired ratios). `clock` may be
    e.g. `time.process_time` (CPU time of all threads) on a machine shared with other load.
    """
    return measure_probes(candidates, lambda: {'time': clock()}, rounds, warmup, calls,
                          seed)['time']


def measure_probes(candidates, read, rounds=10, warmup=2, calls=8, seed=0):
    """`measure` for several readings at once: `read()` returns probe -> number (clocks, page
    faults...), read before and after each block. Returns probe -> `measure`-style results."""
    names, order = list(candidates), random.Random(seed)
    per_round = {}
    for index in range(warmup + rounds):
        order.shuffle(names)
        for name in names:
            work = candidates[name]
            start = read()
            for _ in range(calls):
                work()
            end = read()
            if index >= warmup:
                for probe in end:
                    per_round.setdefault(probe, {n: [] for n in names})[name].append(
                        (end[probe] - start[probe]) / calls)
    return {probe: {name: dict(_spread(values), rounds=values) for name, values in results.items()}
            for probe, results in per_round.items()}


def ratios(results, baseline):
    """name -> spread of the per-round ratio name/baseline (paired: same round, so drift cancels).

    `baseline` is one name, or a dict name -> its own baseline name (names not in it are skipped).
    """
    pairs = baseline if isinstance(baseline, dict) else {name: baseline for name in results}
    return {name: _spread([a / b for a, b in zip(results[name]['rounds'], results[base]['rounds'])])
            for name, base in pairs.items()}


def table(results, baseline, unit=1e-3, unit_name='ms'):
    """Markdown table (also readable as plain text): times and paired ratios vs `baseline`."""
    ratio = ratios(results, baseline)
    bases = baseline if isinstance(baseline, dict) else {name: baseline for name in results}
    header = ('| candidate | median {0} | min-max {0} | vs | ratio (median) | ratio IQR '
              '| ratio min-max |').format(unit_name)
    lines = [header, '|---|---:|---:|---|---:|---:|---:|']
    for name, r in results.items():
        row = '| %s | %.2f | %.2f-%.2f |' % (name, r['median'] / unit, r['min'] / unit,
                                              r['max'] / unit)
        if name in ratio and bases[name] != name:
            q = ratio[name]
            row += ' %s | %.3fx | %.3f-%.3f | %.3f-%.3f |' % (
                bases[name], q['median'], q['q1'], q['q3'], q['min'], q['max'])
        else:
            row += ' | | | |'
        lines.append(row)
    return '\n'.join(lines)


def environment():
    """A few facts about where the numbers came from (git commit, '+dirty' for local edits)."""
    git = ['git', '-C', os.path.dirname(os.path.abspath(__file__))]
    try:
        commit = subprocess.run(git + ['describe', '--always', '--dirty=+dirty'],
                                stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    except OSError:
        commit = None
    return {'python': platform.python_version(), 'machine': platform.machine(),
            'cpus': os.cpu_count(), 'load_average': os.getloadavg(), 'commit': commit,
            'time': time.strftime('%Y-%m-%d %H:%M:%S')}


def write_results(name, data, markdown):
    """Write `data` (JSON-serialisable) and `markdown` to bench/results/NAME.json and .md."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    base = os.path.join(RESULTS_DIR, name)
    with open(base + '.json', 'w') as f:
        json.dump(dict(data, environment=environment()), f, indent=2, sort_keys=True)
    with open(base + '.md', 'w') as f:
        f.write(markdown.rstrip() + '\n')
    return base + '.json', base + '.md'


@contextlib.contextmanager
def kernels_off(off=True):
    """With `off`, KERAS_OPT_LEGACY_KERNELS=0 while the block builds a graph: the package's
    update paths without its kernel library (checked at every op built), as before issue 20."""
    if not off:
        yield
        return
    saved = os.environ.get('KERAS_OPT_LEGACY_KERNELS')
    os.environ['KERAS_OPT_LEGACY_KERNELS'] = '0'
    try:
        yield
    finally:
        if saved is None:
            del os.environ['KERAS_OPT_LEGACY_KERNELS']
        else:
            os.environ['KERAS_OPT_LEGACY_KERNELS'] = saved


def library_ops(graph):
    """The ops of keras_opt_legacy's kernel library in `graph` (their count)."""
    return sum(1 for op in graph.get_operations() if op.type.startswith('Kol'))


def quiet_tensorflow():
    """Import TF/Keras with logging and deprecation warnings silenced; return (tf, keras, kol)."""
    import tensorflow as tf
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    stderr, sys.stderr = sys.stderr, open(os.devnull, 'w')  # "Using TensorFlow backend."
    try:
        import keras
    finally:
        sys.stderr.close()
        sys.stderr = stderr
    import keras_opt_legacy as kol
    return tf, keras, kol


def accepts_fused(cls, tf):
    """Does keras_opt_legacy's `cls` take `fused=`? (signature first; else try it, since the option
    may arrive through **kwargs). The try builds variables in a throwaway graph."""
    import inspect
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is not None and 'fused' in inspect.signature(init).parameters:
            return True
    with tf.Graph().as_default():
        try:
            cls(fused=False)
        except TypeError:
            return False
    return True


if __name__ == '__main__':  # self-demo (`make bench` runs every bench/*.py)
    demo = measure({'sleep 1 ms': lambda: time.sleep(1e-3), 'sleep 2 ms': lambda: time.sleep(2e-3)},
                   rounds=20, warmup=1, calls=10)
    print(table(demo, 'sleep 1 ms'))
