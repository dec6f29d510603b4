"""The kernel library (keras_opt_legacy.kernels, issue 20): each op's update alone on the bench
MLP's variables (2048-2048-2048-1, 8.39M float32 parameters in 6 ref variables, gradients held
in variables, as bench/optimizer_step.py's "update alone"), against

- 'TF Adam': TensorFlow's fused Adam (tf.train.AdamOptimizer: ApplyAdam, the issue's yardstick);
- 'formula': the same rule's formula graph (keras_opt_legacy's optimizer with fused=False, or
  for the averaging/decay ops the package's formula of that step);
- 'today': the package's default path without the library (KERAS_OPT_LEGACY_KERNELS=0 while
  the graph is built: what it ran before issue 20), where that differs from the formula (SGD
  momentum, RMSprop and Nadam's fused pieces, the other rules' moving averages in place, LARS
  on ApplyMomentum, AdamW as a decay pass + ApplyAdam, EMA's two in-place passes, the decay on
  ApplyGradientDescent);
- 'TF own': TensorFlow's own kernel of a related rule with the same traffic, for momentum SGD
  (ApplyMomentum) and RMSprop (ApplyRMSProp, which also moves a momentum slot).

The kernel candidate is the package's optimizer on its default path with the library (the
rules run its ops), so it is the whole update: the rule's step values computed in the graph,
the step counted, the package's ordering; for EMA and Decay the package's in-place step
(`ops.average_in_place(exact=False)`, the decay of decay.py), with and without the library. The
kernel candidate must hold ops of the library and the others none (checked).
Each rule's candidates are timed interleaved (bench/harness.py: rounds of shuffled blocks of
calls, medians, per-round paired ratios). Effective GB/s = the bytes a one-pass update must move
(every array read or written once, float32) / median time, next to the machine's NumPy copy
bandwidth (bench/optimizer_step.py's measurement). `--model small`: the same on 50 x Dense(16)
(100 variables), where the per-op overhead matters.

Usage: python bench/kernels.py [--quick] [--rules RAdam,Lion] [--model mlp|small]
Writes bench/results/kernels.md and .json (kernels_small for --model small; with --quick,
kernels_quick / kernels_small_quick).
"""
import argparse
import gc
import os
import sys
import time
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
warnings.filterwarnings('ignore')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import optimizer_step  # noqa: E402

SEED = 0
FULL = dict(rounds=10, warmup=2, calls=4, bandwidth_repeats=5)
QUICK = dict(rounds=4, warmup=1, calls=3, bandwidth_repeats=2)
# bytes per float32 parameter a one-pass update moves (reads + writes), and what they are: the
# rules' from optimizer_step.BYTES, then the ops of the wrappers' in-place steps
BYTES = dict(
    [(name, optimizer_step.BYTES[name]) for name in (
        'SGD momentum', 'SGD nesterov', 'RMSprop', 'Nadam', 'Adam amsgrad', 'RAdam', 'AdaBound',
        'AMSBound', 'Yogi', 'AdaBelief', 'AdaBelief rectify', 'Lion', 'LAMB', 'LARS',
        'Adafactor')] +
    [('EMA', (12, 'read avg, p; write avg')),
     ('Decay', (8, 'read p; write p')),
     ('AdamW', (28, 'read p, g, m, v; write m, v, p (decay in the same pass)'))])
RULES = list(BYTES)


# ---- the candidates --------------------------------------------------------------------------

def rule_specs(tf, K, kol):
    """rule -> dict(make=factory of the package's optimizer (fused=...), today=whether its path
    without the library differs from the formula, tf_own=factory of TensorFlow's related
    optimizer)."""
    return {
        'SGD momentum': dict(
            make=lambda fused=True: kol.SGD(0.01, momentum=0.9, fused=fused), today=True,
            tf_own=lambda: tf.train.MomentumOptimizer(0.01, 0.9)),
        'SGD nesterov': dict(
            make=lambda fused=True: kol.SGD(0.01, momentum=0.9, nesterov=True, fused=fused),
            today=True, tf_own=lambda: tf.train.MomentumOptimizer(0.01, 0.9, use_nesterov=True)),
        'RMSprop': dict(
            make=lambda fused=True: kol.RMSprop(fused=fused), today=True,
            tf_own=lambda: tf.train.RMSPropOptimizer(0.001, decay=0.9, momentum=0.,
                                                     epsilon=1e-7)),
        'Nadam': dict(make=lambda fused=True: kol.Nadam(fused=fused), today=True),
        # without the library: the formula graph
        'Adam amsgrad': dict(make=lambda fused=True: kol.Adam(amsgrad=True, fused=fused)),
        'RAdam': dict(make=lambda fused=True: kol.RAdam(fused=fused), today=True),
        'AdaBound': dict(make=lambda fused=True: kol.AdaBound(fused=fused), today=True),
        'AMSBound': dict(make=lambda fused=True: kol.AdaBound(amsbound=True, fused=fused),
                         today=True),
        'Yogi': dict(make=lambda fused=True: kol.Yogi(fused=fused), today=True),
        'AdaBelief': dict(make=lambda fused=True: kol.AdaBelief(fused=fused), today=True),
        'AdaBelief rectify': dict(
            make=lambda fused=True: kol.AdaBelief(rectify=True, fused=fused), today=True),
        'Lion': dict(make=lambda fused=True: kol.Lion(fused=fused)),  # without: the formula
        'LAMB': dict(make=lambda fused=True: kol.LAMB(weight_decay_rate=0.01, fused=fused),
                     today=True),
        'LARS': dict(make=lambda fused=True: kol.LARS(fused=fused), today=True),
        'Adafactor': dict(make=lambda fused=True: kol.Adafactor(fused=fused)),  # without: formula
    }


class Update(object):
    """One candidate's update alone, in its own graph and session (as optimizer_step.UpdateOnly):
    variables of the model's shapes, gradients held in variables. `build(params, grads)` returns
    the update op(s), built with the kernel library unless `library` is False
    (KERAS_OPT_LEGACY_KERNELS=0: the package's path before issue 20)."""

    def __init__(self, kind, build, libs, library=True):
        import numpy as np
        tf, keras, _ = libs
        from keras import backend as K
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.session = tf.Session(graph=self.graph)
            with self.session.as_default():
                rng = np.random.RandomState(SEED)
                shapes = optimizer_step.layer_shapes(kind)
                params = [K.variable(rng.randn(*shape) * .05, name=name) for name, shape in
                          zip(optimizer_step.variable_names(kind), shapes)]
                grads = [K.variable(rng.randn(*shape) * .01, name='g%d' % i).value()
                         for i, shape in enumerate(shapes)]
                before = len(self.graph.get_operations())
                started = time.perf_counter()
                with harness.kernels_off(not library):
                    update = build(params, grads)
                self.build_seconds = time.perf_counter() - started
                self.ops = len(self.graph.get_operations()) - before
                self.library_ops = harness.library_ops(self.graph)
                self.session.run(tf.global_variables_initializer())
                self.step = self.session.make_callable(tf.group(*update) if isinstance(
                    update, (list, tuple)) else update)
                self.step()

    def close(self):
        self.session.close()


# label -> whether the candidate is built with the kernel library (the others: without it)
WITH_LIBRARY = {'kernel': True, 'today': False, 'formula': False, 'TF Adam': False,
                'TF own': False}


def candidates(name, libs):
    """label -> build function for rule `name`: 'kernel', the package's default path (the
    kernel library's op, as the rules run it); 'today', the same without the library; 'formula',
    fused=False; 'TF Adam' and 'TF own'."""
    tf, keras, kol = libs
    from keras import backend as K
    from keras_opt_legacy import decay as kdecay, ops
    out = {}

    def apply(make):
        def build(params, grads):
            return make().apply_gradients(list(zip(grads, params)))
        return build

    out['TF Adam'] = lambda params, grads: tf.train.AdamOptimizer(
        0.001, 0.9, 0.999, 1e-7).apply_gradients(list(zip(grads, params)))
    if name == 'EMA':  # the averaging wrappers' step: ops.average_in_place(exact=False)
        def average(params, grads):
            averages = [tf.Variable(tf.zeros(K.int_shape(p)), name='average') for p in params]
            decay = tf.constant(0.999)
            return [ops.average_in_place(a, decay, p, exact=False)
                    for a, p in zip(averages, params)]

        def formula(params, grads):
            averages = [tf.Variable(tf.zeros(K.int_shape(p)), name='average') for p in params]
            decay = tf.constant(0.999)
            return ops.assign_all([(a, decay * a + (1. - decay) * p)
                                   for a, p in zip(averages, params)])
        out.update(kernel=average, formula=formula, today=average)
        return out
    if name == 'Decay':  # the decoupled decay in place (WeightDecay, SGDW, NadamW)
        coefficient = lambda: tf.constant(1e-5)  # noqa: E731
        out['kernel'] = out['today'] = lambda params, grads: [
            kdecay._decay_in_place(p, coefficient()) for p in params]
        out['formula'] = lambda params, grads: [tf.assign_sub(p, coefficient() * p)
                                                for p in params]
        return out
    if name == 'AdamW':  # the decay and Adam's step in one pass (without: two passes)
        out['kernel'] = out['today'] = apply(lambda: kol.AdamW(weight_decay=0.01))
        out['formula'] = apply(lambda: kol.AdamW(weight_decay=0.01, fused=False))
        return out
    spec = rule_specs(tf, K, kol)[name]
    out['kernel'] = apply(lambda: spec['make']())
    out['formula'] = apply(lambda: spec['make'](fused=False))
    if spec.get('today'):
        out['today'] = apply(lambda: spec['make']())
    if spec.get('tf_own'):
        out['TF own'] = lambda params, grads: spec['tf_own']().apply_gradients(
            list(zip(grads, params)))
    return out


# ---- running ---------------------------------------------------------------------------------

def measure_rule(name, kind, libs, settings):
    builds = candidates(name, libs)
    built = {label: Update(kind, build, libs, WITH_LIBRARY[label])
             for label, build in builds.items()}
    assert built['kernel'].library_ops > 0, '%s: no op of the kernel library' % name
    assert all(c.library_ops == 0 for label, c in built.items() if label != 'kernel'), name
    measured = harness.measure({label: c.step for label, c in built.items()},
                               settings['rounds'], settings['warmup'], settings['calls'], SEED)
    ops = {label: c.ops for label, c in built.items()}
    build = {label: c.build_seconds for label, c in built.items()}
    for c in built.values():
        c.close()
    gc.collect()
    versus = {'kernel / %s' % label: harness.ratios(measured, {'kernel': label})['kernel']
              for label in measured if label != 'kernel'}
    return dict(times=measured, versus=versus, ops=ops, build_seconds=build)


def cell(q):
    return '%.2fx (%.2f-%.2f)' % (q['median'], q['q1'], q['q3']) if q else '—'


def report(results, kind, params, bandwidth, settings, seconds, command):
    copy = bandwidth['copy, 256 MB, 2 threads']
    copy16 = bandwidth['copy, 16 MB, 2 threads']
    lines = [
        '# Kernel library: the update alone%s' % (' (--quick)' if settings.get('quick') else ''),
        'Command: `%s`' % command,
        '%s (%d float32 parameters, ref variables as in Keras 2.2), gradients held in variables. '
        'Each rule: its candidates interleaved (%d rounds of %d calls after %d warm-up rounds); '
        'median ms per update, and per-round paired ratios kernel / other (median, IQR). '
        '"kernel": the package\'s default path, on the ops of keras_opt_legacy.kernels (the '
        'rule\'s step values computed in the graph); "formula": the package\'s optimizer with '
        'fused=False; "today": its default path built with KERAS_OPT_LEGACY_KERNELS=0 (before '
        'issue 20); "TF Adam": tf.train.AdamOptimizer (ApplyAdam); "TF own": '
        'TensorFlow\'s kernel of the related rule (momentum: ApplyMomentum, RMSprop: '
        'ApplyRMSProp). Graph build: the optimizer\'s part of building each update graph (one '
        'measurement each). GB/s: the bytes a one-pass update moves per parameter (below) x '
        'parameters / the kernel\'s median time; NumPy copy, 2 threads: %.1f GB/s (256 MB '
        'arrays), %.1f GB/s (16 MB arrays).'
        % (optimizer_step.model_title(kind), params, settings['rounds'], settings['calls'],
           settings['warmup'], copy, copy16)]
    rows = [  # one line each: a blank line would end the table
        '| rule | kernel ms | TF Adam ms | formula ms | today ms | TF own ms | kernel / TF Adam '
        '| kernel / formula | kernel / today | kernel / TF own | bytes/param | GB/s | % of copy '
        '(256 MB) | ops added: kernel / formula | graph build ms: kernel / formula / today |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for name, r in results.items():
        t = r['times']

        def ms(label):
            return '%.2f' % (t[label]['median'] * 1e3) if label in t else '—'
        per_param = BYTES[name][0]
        gbs = per_param * params / t['kernel']['median'] / 1e9
        built = r['build_seconds']
        rows.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %.1f | %.0f%% | '
                    '%d / %d | %s |' % (
                         name, ms('kernel'), ms('TF Adam'), ms('formula'), ms('today'),
                         ms('TF own'), cell(r['versus'].get('kernel / TF Adam')),
                         cell(r['versus'].get('kernel / formula')),
                         cell(r['versus'].get('kernel / today')),
                         cell(r['versus'].get('kernel / TF own')), per_param, gbs,
                         100 * gbs / copy, r['ops']['kernel'], r['ops']['formula'],
                         ' / '.join('%.0f' % (built[c] * 1e3) if c in built else '—'
                                    for c in ('kernel', 'formula', 'today'))))
    lines.append('\n'.join(rows))
    lines.append('Bytes per parameter (float32, each array read or written once):\n\n' +
                 '\n'.join('- %s: %d (%s)' % (n, BYTES[n][0], BYTES[n][1]) for n in results))
    lines.append('Machine bandwidth (NumPy, best of runs before and after):\n\n' +
                 '\n'.join('- %s: %.1f GB/s' % kv for kv in bandwidth.items()))
    lines.append('Total run time: %.0f s' % seconds)
    return '\n\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer rounds')
    parser.add_argument('--rules', help='comma-separated subset of: ' + ', '.join(RULES))
    parser.add_argument('--model', default='mlp', choices=['mlp', 'small'])
    args = parser.parse_args()
    settings = dict(QUICK if args.quick else FULL, quick=args.quick)
    rules = [r.strip() for r in args.rules.split(',')] if args.rules else RULES
    unknown = set(rules) - set(RULES)
    if unknown:
        parser.error('unknown rule(s): %s' % ', '.join(sorted(unknown)))
    started = time.perf_counter()
    libs = harness.quiet_tensorflow()
    from keras_opt_legacy import kernels
    if kernels.library() is None:  # nothing to measure (make bench goes on)
        print('SKIPPED bench/kernels.py: the kernel library is not usable: %s'
              % kernels.why_not())
        return 0
    print('measuring memory bandwidth ...', file=sys.stderr)
    bandwidth_runs = [optimizer_step.memory_bandwidth(settings['bandwidth_repeats'])]
    import numpy as np
    params = sum(int(np.prod(s)) for s in optimizer_step.layer_shapes(args.model))
    results = {}
    for name in rules:
        t0 = time.perf_counter()
        results[name] = measure_rule(name, args.model, libs, settings)
        v = results[name]['versus']
        print('%-18s %5.1f s  kernel %.2f ms  / TF Adam %s  / formula %s%s' % (
            name, time.perf_counter() - t0, results[name]['times']['kernel']['median'] * 1e3,
            cell(v.get('kernel / TF Adam')), cell(v.get('kernel / formula')),
            '  / TF own %s' % cell(v['kernel / TF own']) if 'kernel / TF own' in v else ''),
            file=sys.stderr)
    bandwidth_runs.append(optimizer_step.memory_bandwidth(settings['bandwidth_repeats']))
    bandwidth = {key: max(run[key] for run in bandwidth_runs) for key in bandwidth_runs[0]}
    seconds = time.perf_counter() - started
    command = ' '.join(['python', os.path.relpath(sys.argv[0])] + sys.argv[1:])
    markdown = report(results, args.model, params, bandwidth, settings, seconds, command)
    print(markdown)
    name = 'kernels' + ('_small' if args.model == 'small' else '') + \
        ('_quick' if args.quick else '')
    paths = harness.write_results(name, {'settings': settings, 'model': args.model,
                                         'params': params, 'bytes_per_param': BYTES,
                                         'memory_bandwidth_gbs': bandwidth,
                                         'seconds': seconds, 'command': command,
                                         'results': results}, markdown)
    print('wrote %s' % ', '.join(os.path.relpath(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
