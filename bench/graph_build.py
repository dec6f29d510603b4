"""Graph build time vs number of variables: keras_opt_legacy (Adam, SGD) vs Keras 2.2.4's built-ins.

Build time = `model.compile(optimizer, 'mse')` + `model._make_train_function()` (loss, gradients,
the optimizer's state and update ops, the train K.function), the part of a user's first
`fit`/`train_on_batch` that grows with the optimizer. Models: N/2 Dense(8) layers in sequence on
8 inputs (functional API; a kernel and a bias each: N trainable variables), N in 10, 30, 100,
300, 1000.
Every build runs in a fresh tf.Graph; model construction is done first and not timed. Also timed,
as the floor every optimizer pays: 'gradients only' (compile + K.gradients of the loss). When the
installed package has the `fused=` option, ours is built with its default and with fused=False.

Each repetition builds every (size, candidate) once, in a fresh shuffled order (so slow drifts of
the shared 2-core machine hit all candidates alike); reported: median over repetitions, of
wall-clock and CPU time (`time.process_time`; building is single-threaded Python, so CPU time is
the steadier of the two). Linearity: least-squares fit t = a + b*N over the medians, its R^2,
the ratio of time per variable at the largest N vs at N = 100 (the brief's figure: 1 for a
time proportional to N, below 1 when a fixed cost a is amortized), the ratio of marginal cost per
variable (slope over the two largest sizes / slope over the two smallest) and the log-log
exponent between N = 100 and the largest N.

`--rules` (issue 20): instead, every rule on the package's kernel library built with it and
without it (KERAS_OPT_LEGACY_KERNELS=0 while building: its path before issue 20), N in 100 and
300, 5 repetitions: the library must not make the graph slower to build. Results:
bench/results/graph_build_rules.*.

Usage: python bench/graph_build.py [--quick] [--rules]
"""
import argparse
import gc
import math
import os
import random
import statistics
import sys
import time
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
warnings.filterwarnings('ignore')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kernels as kernel_bench  # noqa: E402  (bench/kernels.py: the rules on the library)

SEED = 0
FULL = dict(sizes=[10, 30, 100, 300, 1000], repeats=3)
QUICK = dict(sizes=[10, 100, 300], repeats=3)
RULES = dict(sizes=[100, 300], repeats=5)
OFF = ' kernels off'  # suffix of a candidate built without the kernel library
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def candidates(tf, keras, kol):
    """name -> optimizer factory (None: gradients only); ratio pairs (ours, Keras)."""
    ko = keras.optimizers
    out = {'gradients only': None,
           'ours Adam': lambda: kol.Adam(), 'Keras Adam': lambda: ko.Adam(),
           'ours SGD': lambda: kol.SGD(0.01), 'Keras SGD': lambda: ko.SGD(0.01)}
    pairs = [('ours Adam', 'Keras Adam'), ('ours SGD', 'Keras SGD')]
    if harness.accepts_fused(kol.Adam, tf) and harness.accepts_fused(kol.SGD, tf):
        out['ours Adam fused=False'] = lambda: kol.Adam(fused=False)
        out['ours SGD fused=False'] = lambda: kol.SGD(0.01, fused=False)
        pairs += [('ours Adam fused=False', 'Keras Adam'), ('ours SGD fused=False', 'Keras SGD')]
    return out, pairs


def rule_candidates(tf, keras, kol):
    """Every rule on the kernel library (bench/kernels.py's, and the wrappers AdamW and the EMA),
    with it and without it (OFF); ratio pairs."""
    rules = {name: spec['make'] for name, spec in
             kernel_bench.rule_specs(tf, keras.backend, kol).items()}
    rules.update({'AdamW': lambda: kol.AdamW(),
                  'Adam EMA': lambda: kol.ExponentialMovingAverage(kol.Adam())})
    out = {'gradients only': None}
    for name, make in rules.items():
        out[name], out[name + OFF] = make, make
    return out, [(name, name + OFF) for name in rules]


def build_once(variables, make_optimizer, libs):
    """Build the model untimed, then time compile + train function: clock -> seconds (+ ops)."""
    tf, keras, _ = libs
    from keras import backend as K
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(SEED)
        inputs = x = keras.layers.Input((8,))
        for _ in range(variables // 2):
            x = keras.layers.Dense(8)(x)
        model = keras.models.Model(inputs, x)  # (a Sequential of 500 layers takes 8 s to build)
        assert len(model.trainable_weights) == variables
        gc.collect()
        start = {name: clock() for name, clock in CLOCKS.items()}
        if make_optimizer is None:
            model.compile(keras.optimizers.SGD(0.), 'mse')
            K.gradients(model.total_loss, model.trainable_weights)
        else:
            model.compile(make_optimizer(), 'mse')
            model._make_train_function()
        end = {name: clock() for name, clock in CLOCKS.items()}
        ops = len(graph.get_operations())
    del model, graph
    K.clear_session()  # Keras keeps every graph alive in per-graph dicts: let this one go
    return dict({name: end[name] - start[name] for name in CLOCKS}, ops=ops)


def fit_line(xs, ys):
    """Least squares y = a + b*x; returns a, b, R^2."""
    n, mx, my = len(xs), statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return a, b, 1 - residual / total if total else 1.


def linearity(sizes, medians):
    a, b, r2 = fit_line(sizes, medians)
    top = sizes[-1]
    per_var = lambda n: medians[sizes.index(n)] / n  # noqa: E731
    marginal = lambda i, j: (medians[j] - medians[i]) / (sizes[j] - sizes[i])  # noqa: E731
    out = dict(a=a, b=b, r2=r2, largest=top)
    if 100 in sizes and top != 100:
        out['per_var_ratio'] = per_var(top) / per_var(100)
        out['loglog_exponent'] = (math.log(medians[-1] / medians[sizes.index(100)]) /
                                  math.log(top / 100))
    if len(sizes) >= 3:
        out['marginal_ratio'] = marginal(-2, -1) / marginal(0, 1)
    return out


CLOCK_NAMES = (('cpu', 'CPU time'), ('wall', 'wall-clock'))
OPS_TITLE = '## Graph size after the build (ops, model included)\n\n'


def ratio_cell(values):
    """The median of sorted paired ratios, min-max in brackets."""
    return '%.2fx (%.2f-%.2f)' % (statistics.median(values), values[0], values[-1])


def scaling_sections(sizes, factories, pairs, medians, ratios, fits, ops):
    """The report of the default run: per clock, ms per build and ratios by N, the linear fits;
    then the graph sizes."""
    sections = []
    names = list(factories)
    for clock, clock_name in CLOCK_NAMES:
        lines = ['| N variables | ' + ' | '.join(names) + ' | ' +
                 ' | '.join('%s / %s' % pair for pair in pairs) + ' |',
                 '|---:|' + '---:|' * (len(names) + len(pairs))]
        for i, n in enumerate(sizes):
            cells = ['%.0f' % (medians[clock][name][i] * 1e3) for name in names]
            cells += [ratio_cell(ratios[clock]['%s / %s' % pair][i]) for pair in pairs]
            lines.append('| %d | %s |' % (n, ' | '.join(cells)))
        fit_lines = ['| candidate | a (ms) | b (ms/variable) | R^2 | t/N at %d / t/N at 100 | '
                     'marginal cost per variable, largest / smallest sizes | exponent k '
                     '(t ~ N^k, 100 to %d) |' % (sizes[-1], sizes[-1]),
                     '|---|---:|---:|---:|---:|---:|---:|']
        for name in names:
            f = fits[clock][name]
            fit_lines.append('| %s | %.1f | %.3f | %.4f | %s | %s | %s |' % (
                name, f['a'] * 1e3, f['b'] * 1e3, f['r2'],
                '%.2f' % f['per_var_ratio'] if 'per_var_ratio' in f else '—',
                '%.2f' % f['marginal_ratio'] if 'marginal_ratio' in f else '—',
                '%.2f' % f['loglog_exponent'] if 'loglog_exponent' in f else '—'))
        sections.append('## %s, ms per build\n\n%s\n\nLinearity (fit t = a + b*N on the '
                        'medians):\n\n%s' % (clock_name, '\n'.join(lines), '\n'.join(fit_lines)))
    op_lines = ['| N variables | ' + ' | '.join(names) + ' |', '|---:|' + '---:|' * len(names)]
    for n in sizes:
        op_lines.append('| %d | %s |' % (n, ' | '.join(str(ops[name][n]) for name in names)))
    return sections + [OPS_TITLE + '\n'.join(op_lines)]


def rule_sections(sizes, factories, pairs, medians, ratios, fits, ops):
    """The report of --rules: per clock, a row per rule with and without the library at each N;
    then the graph sizes, with / without."""
    sections = []
    for clock, clock_name in CLOCK_NAMES:
        lines = ['| rule | ' + ' | '.join(
            'N = %d: with the library, ms | without, ms | with / without' % n for n in sizes) +
            ' |', '|---|' + '---:|' * (3 * len(sizes))]
        for name, off in pairs:
            cells = []
            for i, n in enumerate(sizes):
                cells += ['%.0f' % (medians[clock][name][i] * 1e3),
                          '%.0f' % (medians[clock][off][i] * 1e3),
                          ratio_cell(ratios[clock]['%s / %s' % (name, off)][i])]
            lines.append('| %s | %s |' % (name, ' | '.join(cells)))
        sections.append('## %s, ms per build (gradients only: %s)\n\n%s' % (
            clock_name, ', '.join('%.0f at N = %d' % (medians[clock]['gradients only'][i] * 1e3, n)
                                  for i, n in enumerate(sizes)), '\n'.join(lines)))
    op_lines = ['| rule | ' + ' | '.join('N = %d: with / without' % n for n in sizes) + ' |',
                '|---|' + '---:|' * len(sizes)]
    for name, off in pairs:
        op_lines.append('| %s | %s |' % (name, ' | '.join(
            '%d / %d' % (ops[name][n], ops[off][n]) for n in sizes)))
    return sections + [OPS_TITLE + '\n'.join(op_lines)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='sizes 10, 100, 300 only')
    parser.add_argument('--rules', action='store_true',
                        help='the rules on the kernel library, with and without it')
    args = parser.parse_args()
    settings = RULES if args.rules else QUICK if args.quick else FULL
    started = time.perf_counter()
    libs = harness.quiet_tensorflow()
    factories, pairs = rule_candidates(*libs) if args.rules else candidates(*libs)
    sizes = settings['sizes']
    if args.rules:
        from keras_opt_legacy import kernels
        if kernels.library() is None:
            print('SKIPPED bench/graph_build.py --rules: the kernel library is not usable: %s'
                  % kernels.why_not())
            return
    for name in pairs[0]:  # warm-up: imports, first-use caches
        with harness.kernels_off(name.endswith(OFF)):
            build_once(10, factories[name], libs)

    runs = {name: {n: [] for n in sizes} for name in factories}
    ops = {name: {} for name in factories}
    order = random.Random(SEED)
    for repeat in range(settings['repeats']):
        jobs = [(n, name) for n in sizes for name in factories]
        order.shuffle(jobs)
        for n, name in jobs:
            with harness.kernels_off(name.endswith(OFF)):
                result = build_once(n, factories[name], libs)
            runs[name][n].append(result)
            ops[name][n] = result['ops']
        print('repetition %d done (%.0f s)' % (repeat + 1, time.perf_counter() - started),
              file=sys.stderr)

    medians = {clock: {name: [statistics.median(r[clock] for r in runs[name][n]) for n in sizes]
                       for name in factories} for clock in CLOCKS}
    fits = {clock: {name: linearity(sizes, medians[clock][name]) for name in factories}
            for clock in CLOCKS}
    # Paired ratio per repetition (the k-th build of each: same repetition, similar moment).
    ratios = {clock: {'%s / %s' % pair: [
        sorted(a[clock] / b[clock] for a, b in zip(runs[pair[0]][n], runs[pair[1]][n]))
        for n in sizes] for pair in pairs} for clock in CLOCKS}

    sections = ['# Graph build time vs number of variables%s' % (
        ' (--rules: with and without the kernel library)' if args.rules else
        ' (--quick)' if args.quick else ''),
                'compile + `_make_train_function`, each in a fresh graph (model construction '
                'not timed); N/2 Dense(8) layers = N variables; median of %d repetitions, '
                'builds shuffled within each repetition. Ms per build; ratios: median over '
                'repetitions of the paired ratio (min-max in brackets).' % settings['repeats']]
    report = rule_sections if args.rules else scaling_sections
    sections += report(sizes, factories, pairs, medians, ratios, fits, ops)
    seconds = time.perf_counter() - started
    sections.append('Total run time: %.0f s' % seconds)
    markdown = '\n\n'.join(sections)
    print(markdown)
    paths = harness.write_results('graph_build_rules' if args.rules else 'graph_build', {
        'quick': args.quick, 'settings': settings, 'seconds': seconds, 'sizes': sizes,
        'runs': runs, 'medians': medians, 'fits': fits, 'ratios': ratios, 'ops': ops}, markdown)
    print('total %.0f s; wrote %s' % (seconds, ', '.join(os.path.relpath(p) for p in paths)))


if __name__ == '__main__':
    main()
