"""The rules of issue 18: ours vs the same formula written in Keras 2.2.4's style.

For each rule (RAdam, LAMB, LARS, Adafactor, AdaBound, Yogi, AdaBelief, Lion), default arguments:
- 'ours': keras_opt_legacy's class (its default path: the op of the kernel library,
  keras_opt_legacy.kernels, for every rule but Adafactor, which runs its formula, parameters
  updated in place; every read ordered before every write; with KERAS_OPT_LEGACY_KERNELS=0
  LARS runs TF's ApplyMomentum kernel, the others their formula in place);
- 'naive': the same formula ported the way users port a paper to Keras 2.2.4 (keras-radam,
  keras-adabound, keras-lamb...): a `keras.optimizers.Optimizer` subclass whose `get_updates`
  makes the slots with `K.zeros`, computes each new value with `keras.backend` ops and assigns
  it with `K.update` (`iterations` incremented first, as Keras's own Adam does). The same
  Python-level choices as ours (a weight decay of 0 builds no op), no fused kernel, no ordering;
- 'gradient only' (train step only): forward + backward, for the update's share of the step.

Timed as bench/optimizer_step.py does (its `Candidate`, `UpdateOnly` and `measure_all`): each
rule on its own, its candidates interleaved round after round in their own graphs and sessions,
on the bench MLP 2048-2048-2048-1 (8.4M parameters, batch 8): (1) the train step
(`model.train_function` on a prebuilt batch), (2) the update alone (variables of the MLP's
shapes, gradients held in variables). Ratios are medians of per-round paired ratios (IQR in
brackets); the nodes one update executes (a traced run, after grappler) are counted by op type.

Before timing, each naive port is checked against ours: 20 steps on a small model, trajectories
equal within 1e-5 relative (else the comparison would not be of the same formula).

Usage: python bench/new_rules.py [--quick] [--rules RAdam,LAMB] [--results NAME]
Results: bench/results/NAME.json and .md (default new_rules).
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
import optimizer_step as bench  # noqa: E402

RULES = ['RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound', 'Yogi', 'AdaBelief', 'Lion']
FULL = dict(rounds=15, warmup=2, calls=4, burn_in=30)
QUICK = dict(rounds=4, warmup=1, calls=3, burn_in=10)
STEP_CANDIDATES = ['gradient only', 'ours', 'naive']


# ---- the naive ports ---------------------------------------------------------------------------

def naive_classes(keras, tf):
    """name -> a Keras-2.2.4-style optimizer class computing that rule with default arguments."""
    from keras import backend as K

    class KerasStyle(keras.optimizers.Optimizer):
        """What every port shares: hyperparameters as K.variables, `iterations` first, legacy
        decay, constraints applied to the new value, the update assigned with K.update."""

        def __init__(self, lr, **kwargs):
            hyper = {k: kwargs.pop(k) for k in list(kwargs) if k in self.hyper}
            super(KerasStyle, self).__init__(**kwargs)
            with K.name_scope(self.__class__.__name__):
                self.iterations = K.variable(0, dtype='int64', name='iterations')
                self.lr = None if lr is None else K.variable(lr, name='lr')
                self.decay = K.variable(0., name='decay')
                for name, default in self.hyper.items():
                    setattr(self, name, K.variable(hyper.get(name, default), name=name))
            self.initial_decay = 0.

        def get_updates(self, loss, params):
            grads = self.get_gradients(loss, params)
            self.updates = [K.update_add(self.iterations, 1)]
            lr = self.lr
            if self.initial_decay > 0:
                lr = lr * (1. / (1. + self.decay * K.cast(self.iterations, K.dtype(self.decay))))
            t = K.cast(self.iterations, K.floatx()) + 1
            slots = self.make_slots(params)
            self.weights = [self.iterations] + [s for per in slots for s in per.values()]
            for p, g, s in zip(params, grads, slots):
                new_p, new_slots = self.rule(p, g, s, lr, t)
                for name, value in new_slots.items():
                    self.updates.append(K.update(s[name], value))
                if getattr(p, 'constraint', None) is not None:
                    new_p = p.constraint(new_p)
                self.updates.append(K.update(p, new_p))
            return self.updates

        def make_slots(self, params):
            return [{name: K.zeros(K.int_shape(p), dtype=K.dtype(p)) for name in self.slot_names}
                    for p in params]

    def norm(x):
        return K.sqrt(K.sum(K.square(x)))

    def rms(x):
        return K.sqrt(K.mean(K.square(x)))

    class RAdam(KerasStyle):
        hyper = dict(beta_1=0.9, beta_2=0.999)
        slot_names = ('m', 'v')

        def __init__(self, lr=0.001, **kwargs):
            super(RAdam, self).__init__(lr, **kwargs)

        def rule(self, p, g, s, lr, t):
            beta_1_t, beta_2_t = K.pow(self.beta_1, t), K.pow(self.beta_2, t)
            rho_inf = 2. / (1. - self.beta_2) - 1.
            rho_t = rho_inf - 2. * t * beta_2_t / (1. - beta_2_t)
            r_t = K.sqrt(K.relu((rho_t - 4.) * (rho_t - 2.) * rho_inf /
                                ((rho_inf - 4.) * (rho_inf - 2.) * rho_t)))
            m_t = self.beta_1 * s['m'] + (1. - self.beta_1) * g
            v_t = self.beta_2 * s['v'] + (1. - self.beta_2) * K.square(g)
            rectified = lr * r_t * K.sqrt(1. - beta_2_t) / (1. - beta_1_t) * m_t / \
                (K.sqrt(v_t) + K.epsilon())
            momentum = lr / (1. - beta_1_t) * m_t
            p_t = p - K.switch(rho_t >= 5., rectified, momentum)
            return p_t, {'m': m_t, 'v': v_t}

    class LAMB(KerasStyle):
        hyper = dict(beta_1=0.9, beta_2=0.999)
        slot_names = ('m', 'v')

        def __init__(self, lr=0.001, epsilon=1e-6, **kwargs):
            super(LAMB, self).__init__(lr, **kwargs)
            self.epsilon = epsilon

        def rule(self, p, g, s, lr, t):
            m_t = self.beta_1 * s['m'] + (1. - self.beta_1) * g
            v_t = self.beta_2 * s['v'] + (1. - self.beta_2) * K.square(g)
            m_hat = m_t / (1. - K.pow(self.beta_1, t))
            v_hat = v_t / (1. - K.pow(self.beta_2, t))
            r = m_hat / (K.sqrt(v_hat) + self.epsilon)  # weight_decay_rate 0: no decay term
            w_norm, r_norm = norm(p), norm(r)
            ratio = tf.where(tf.logical_and(w_norm > 0., r_norm > 0.), w_norm / r_norm,
                             tf.ones_like(w_norm))
            return p - lr * ratio * r, {'m': m_t, 'v': v_t}

    class LARS(KerasStyle):
        hyper = dict(momentum=0.9)
        slot_names = ('momentum',)

        def __init__(self, lr=0.01, weight_decay=1e-4, eeta=1e-3, epsilon=0., **kwargs):
            super(LARS, self).__init__(lr, **kwargs)
            self.weight_decay, self.eeta, self.epsilon = weight_decay, eeta, epsilon

        def rule(self, p, g, s, lr, t):
            w_norm, g_norm = norm(p), norm(g)
            trust = tf.where(w_norm > 0., tf.where(
                g_norm > 0., self.eeta * w_norm / (g_norm + self.weight_decay * w_norm +
                                                   self.epsilon), 1.), 1.)
            mom_t = self.momentum * s['momentum'] + lr * trust * (g + self.weight_decay * p)
            return p - mom_t, {'momentum': mom_t}

    class Adafactor(KerasStyle):
        hyper = {}
        slot_names = ()

        def __init__(self, decay_exponent=0.8, clipping_threshold=1., **kwargs):
            super(Adafactor, self).__init__(None, **kwargs)
            self.decay_exponent, self.clipping_threshold = decay_exponent, clipping_threshold

        def make_slots(self, params):
            slots = []
            for p in params:
                shape = K.int_shape(p)
                if len(shape) >= 2:
                    slots.append({'vr': K.zeros(shape[:-1]),
                                  'vc': K.zeros(shape[:-2] + shape[-1:])})
                else:
                    slots.append({'v': K.zeros(shape)})
            return slots

        def rule(self, p, g, s, lr, t):
            scale = K.minimum(tf.rsqrt(t), 0.01) * K.maximum(rms(p), 1e-3)  # relative step
            d = 1. - K.pow(t, -self.decay_exponent)
            g2 = K.square(g) + 1e-30
            if 'vr' in s:
                vr_t = d * s['vr'] + (1. - d) * K.mean(g2, axis=-1)
                vc_t = d * s['vc'] + (1. - d) * K.mean(g2, axis=-2)
                x = g * K.expand_dims(tf.rsqrt(vr_t / K.mean(vr_t, axis=-1, keepdims=True)),
                                      -1) * K.expand_dims(tf.rsqrt(vc_t), -2)
                new = {'vr': vr_t, 'vc': vc_t}
            else:
                v_t = d * s['v'] + (1. - d) * g2
                x = g * tf.rsqrt(v_t)
                new = {'v': v_t}
            x = x / K.maximum(1., rms(x) / self.clipping_threshold)
            return p - scale * x, new

    class AdaBound(KerasStyle):
        hyper = dict(beta_1=0.9, beta_2=0.999)
        slot_names = ('m', 'v')

        def __init__(self, lr=0.001, final_lr=0.1, gamma=1e-3, **kwargs):
            super(AdaBound, self).__init__(lr, **kwargs)
            self.base_lr, self.final_lr, self.gamma = lr, final_lr, gamma

        def rule(self, p, g, s, lr, t):
            m_t = self.beta_1 * s['m'] + (1. - self.beta_1) * g
            v_t = self.beta_2 * s['v'] + (1. - self.beta_2) * K.square(g)
            step_size = lr * K.sqrt(1. - K.pow(self.beta_2, t)) / (1. - K.pow(self.beta_1, t))
            final_lr = self.final_lr * lr / self.base_lr
            lower = final_lr * (1. - 1. / (self.gamma * t + 1.))
            upper = final_lr * (1. + 1. / (self.gamma * t))
            # K.clip takes numbers only in Keras 2.2.4 (keras-adabound writes it so too)
            size = K.minimum(K.maximum(step_size / (K.sqrt(v_t) + K.epsilon()), lower), upper)
            return p - size * m_t, {'m': m_t, 'v': v_t}

    class Yogi(KerasStyle):
        hyper = dict(beta_1=0.9, beta_2=0.999)
        slot_names = ('m', 'v')

        def __init__(self, lr=0.01, epsilon=1e-3, initial_accumulator_value=1e-6, **kwargs):
            super(Yogi, self).__init__(lr, **kwargs)
            self.epsilon, self.initial = epsilon, initial_accumulator_value

        def make_slots(self, params):
            return [{'m': K.zeros(K.int_shape(p)),
                     'v': K.variable(tf.fill(K.int_shape(p), self.initial))} for p in params]

        def rule(self, p, g, s, lr, t):
            g2 = K.square(g)
            v_t = s['v'] - (1. - self.beta_2) * K.sign(s['v'] - g2) * g2
            m_t = self.beta_1 * s['m'] + (1. - self.beta_1) * g
            lr_t = lr * K.sqrt(1. - K.pow(self.beta_2, t)) / (1. - K.pow(self.beta_1, t))
            return p - lr_t * m_t / (K.sqrt(v_t) + self.epsilon), {'m': m_t, 'v': v_t}

    class AdaBelief(KerasStyle):
        hyper = dict(beta_1=0.9, beta_2=0.999)
        slot_names = ('m', 's')

        def __init__(self, lr=0.001, epsilon=1e-16, **kwargs):
            super(AdaBelief, self).__init__(lr, **kwargs)
            self.epsilon = epsilon

        def rule(self, p, g, s, lr, t):
            m_t = self.beta_1 * s['m'] + (1. - self.beta_1) * g
            s_t = self.beta_2 * s['s'] + (1. - self.beta_2) * K.square(g - m_t) + self.epsilon
            denominator = K.sqrt(s_t) / K.sqrt(1. - K.pow(self.beta_2, t)) + self.epsilon
            return (p - lr / (1. - K.pow(self.beta_1, t)) * m_t / denominator,
                    {'m': m_t, 's': s_t})

    class Lion(KerasStyle):
        hyper = dict(beta_1=0.9, beta_2=0.99)
        slot_names = ('m',)

        def __init__(self, lr=1e-4, **kwargs):
            super(Lion, self).__init__(lr, **kwargs)

        def rule(self, p, g, s, lr, t):  # weight_decay 0: no decay term
            direction = K.sign(self.beta_1 * s['m'] + (1. - self.beta_1) * g)
            return p - lr * direction, {'m': self.beta_2 * s['m'] + (1. - self.beta_2) * g}

    class LionOrdered(Lion):
        """The port above races with itself: the direction reads m, and nothing orders that read
        before m's K.update (the new m does not depend on the direction), so a run differs from
        the next. For the formula check only: the direction computed before the new m."""

        def rule(self, p, g, s, lr, t):
            direction = K.sign(self.beta_1 * s['m'] + (1. - self.beta_1) * g)
            with tf.control_dependencies([direction]):
                m_t = self.beta_2 * s['m'] + (1. - self.beta_2) * g
            return p - lr * direction, {'m': m_t}

    return dict(RAdam=RAdam, LAMB=LAMB, LARS=LARS, Adafactor=Adafactor, AdaBound=AdaBound,
                Yogi=Yogi, AdaBelief=AdaBelief, Lion=Lion, LionOrdered=LionOrdered)


# ---- same formula? ---------------------------------------------------------------------------

def check_same_formula(name, ours, naive, libs, steps=20):
    """Max relative difference (per step: max |w_ours - w_naive| / max |w_naive|) over `steps`
    train steps of a small model (16-32-32-1, batch 32), ours vs the naive port with its races
    removed (posts.race_free); and the largest weight change."""
    import numpy as np
    tf, keras, _ = libs
    rng = np.random.RandomState(bench.SEED)
    x = rng.randn(32 * steps, 16).astype('float32')
    y = np.sin(x.sum(axis=1, keepdims=True)).astype('float32')

    def trajectory(make):
        graph = tf.Graph()
        with graph.as_default(), tf.Session(graph=graph).as_default():
            tf.set_random_seed(bench.SEED)
            model = keras.Sequential([
                keras.layers.Dense(32, activation='tanh', input_shape=(16,)),
                keras.layers.Dense(32, activation='tanh'), keras.layers.Dense(1)])
            model.set_weights([np.random.RandomState(k).randn(*w.shape).astype('float32') * .3
                               for k, w in enumerate(model.get_weights())])
            model.compile(make(), 'mse')
            points = []
            for i in range(steps):
                model.train_on_batch(x[32 * i:32 * (i + 1)], y[32 * i:32 * (i + 1)])
                points.append(np.concatenate([w.ravel() for w in model.get_weights()]))
            return np.array(points), points[-1] - points[0]
    from keras_opt_legacy.reproduce.posts import race_free
    a, moved = trajectory(ours)
    # Without the races of Keras's style (a weight assigned before the backward pass has read
    # it; `t` read unordered against the increment of `iterations`): the arithmetic alone.
    b, _ = trajectory(race_free(naive, counter_last=True))
    return float((np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)).max()), \
        float(np.abs(moved).max())


# ---- timing ------------------------------------------------------------------------------------

def run_rule(name, factories, libs, gradient, settings):
    """One rule: train steps (with `gradient` interleaved), then the update alone."""
    built = {'gradient only': gradient}
    for label, factory in factories.items():
        built[label] = bench.Candidate('mlp', factory, libs)
    step = bench.measure_all({label: c.step for label, c in built.items()}, settings['rounds'],
                             settings['warmup'], settings['calls'])
    setup = {label: dict(build_seconds=c.build_seconds, first_run_seconds=c.first_run_seconds,
                         graph_ops=c.ops) for label, c in built.items()}
    for c in built.values():
        if c is not gradient:
            c.close()
    built = None
    gc.collect()
    alone = {label: bench.UpdateOnly('mlp', factory, libs) for label, factory in factories.items()}
    update = bench.measure_all({label: c.step for label, c in alone.items()}, settings['rounds'],
                               settings['warmup'], settings['calls'])
    ops = {label: dict(ops=c.ops, executed=sum(c.executed.values()),
                       executed_types=dict(c.executed), variables=c.variables)
           for label, c in alone.items()}
    for c in alone.values():
        c.close()
    gc.collect()
    ratios = {part: {clock: harness.ratios(measured[clock], {'ours': 'naive'})['ours']
                     for clock in ('wall', 'cpu')}
              for part, measured in (('step', step), ('update', update))}
    return dict(step=step, update=update, ratios=ratios, setup=setup, ops=ops,
                step_minus_gradient=bench.step_minus_gradient(step))


# ---- report ------------------------------------------------------------------------------------

def cell(spread):
    return '%.2fx (%.2f-%.2f)' % (spread['median'], spread['q1'], spread['q3'])


def report(results, checks, settings, seconds, quick, command):
    rules = list(results)
    lines = ['# The rules of issue 18: ours vs the same formula in Keras 2.2.4\'s style%s'
             % (' (--quick)' if quick else ''), '', 'Command: `%s`' % command, '',
             'Each rule with its default arguments; "naive": a `keras.optimizers.Optimizer` '
             'subclass whose `get_updates` computes the same formula with `keras.backend` ops and '
             'assigns every new value with `K.update` (bench/new_rules.py, `naive_classes`). '
             'MLP 2048-2048-2048-1 (8.39M parameters, 6 variables), batch 8. Per rule its '
             'candidates are timed interleaved (%d rounds of %d calls after %d warm-up rounds); '
             'times are median ms, ratios medians of per-round paired ratios (IQR in brackets).'
             % (settings['rounds'], settings['calls'], settings['warmup']), '',
             '## Train step and update alone, wall-clock', '',
             '| rule | gradient only ms | ours ms | naive ms | step: ours / naive | step - '
             'gradient: ours / naive ms | update alone: ours ms | naive ms | update: ours / naive '
             '| nodes per update: ours / naive | page faults per update: ours / naive |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for name in rules:
        r = results[name]
        wall, update = r['step']['wall'], r['update']['wall']
        diff = r['step_minus_gradient']
        faults = r['update']['faults']
        lines.append('| %s | %.1f | %.1f | %.1f | %s | %.1f / %.1f | %.1f | %.1f | %s | %d / %d | '
                     '%.0f / %.0f |'
                     % (name, wall['gradient only']['median'] * 1e3, wall['ours']['median'] * 1e3,
                        wall['naive']['median'] * 1e3, cell(r['ratios']['step']['wall']),
                        diff['ours']['median'] * 1e3, diff['naive']['median'] * 1e3,
                        update['ours']['median'] * 1e3, update['naive']['median'] * 1e3,
                        cell(r['ratios']['update']['wall']), r['ops']['ours']['executed'],
                        r['ops']['naive']['executed'], faults['ours']['median'],
                        faults['naive']['median']))
    lines += ['', '## CPU time (all threads): ours / naive', '',
              '| rule | train step | update alone |', '|---|---:|---:|']
    lines += ['| %s | %s | %s |' % (name, cell(results[name]['ratios']['step']['cpu']),
                                    cell(results[name]['ratios']['update']['cpu']))
              for name in rules]
    lines += ['', '## Same formula: ours vs naive on a small model', '',
              '20 train steps of a 16-32-32-1 tanh MLP, batch 32: max over the steps of '
              'max |w_ours - w_naive| / max |w_naive|, next to how far the weights moved. The '
              'naive ports run without the races of Keras\'s style here (posts.race_free: the '
              'updates wait for the gradients and the loss, `iterations` is incremented last); '
              'the naive Lion also races with itself (its direction reads m unordered against '
              'm\'s K.update: it differs from itself by ~2e-4 from run to run), so it is checked '
              'with the direction computed first.', '',
              '| rule | max relative difference | max |weight change| |', '|---|---:|---:|']
    lines += ['| %s | %.1e | %.2e |' % (name, checks[name][0], checks[name][1]) for name in rules]
    lines += ['', '## Op types one update executes, per variable (update alone)', '']
    for name in rules:
        for label in ('ours', 'naive'):
            info = results[name]['ops'][label]
            types = sorted(info['executed_types'].items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append('- %s, %s (%d nodes): %s' % (name, label, info['executed'], ', '.join(
                '%s %.2f' % (t, n / float(info['variables'])) for t, n in types[:12])))
    lines += ['', 'Machine load (1, 5, 15 min) at the end: %.1f, %.1f, %.1f on %d CPUs.'
              % (os.getloadavg() + (os.cpu_count(),)), '', 'Total run time: %.0f s' % seconds]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer rounds')
    parser.add_argument('--rules', help='comma-separated subset, e.g. "RAdam,Lion"')
    parser.add_argument('--results', default='new_rules', metavar='NAME',
                        help='write bench/results/NAME.json and NAME.md (default new_rules)')
    args = parser.parse_args()
    settings = dict(QUICK if args.quick else FULL)
    rules = [r.strip() for r in args.rules.split(',')] if args.rules else RULES
    unknown = set(rules) - set(RULES)
    if unknown:
        parser.error('unknown rule(s): %s' % ', '.join(sorted(unknown)))
    if not args.results or os.sep in args.results or args.results.startswith('.'):
        parser.error('--results takes a file name (no directory): %r' % args.results)
    started = time.perf_counter()
    libs = harness.quiet_tensorflow()
    tf, keras, kol = libs
    naive = naive_classes(keras, tf)

    checks = {}
    for name in rules:
        checks[name] = check_same_formula(name, getattr(kol, name),
                                          naive.get(name + 'Ordered', naive[name]), libs)
        print('%-10s same formula: max relative difference %.1e (weights moved %.2e)'
              % (name, checks[name][0], checks[name][1]), file=sys.stderr)

    gradient = bench.Candidate('mlp', None, libs)
    for _ in range(settings['burn_in']):
        gradient.step()
    results = {}
    for name in rules:
        t0 = time.perf_counter()
        factories = {'ours': getattr(kol, name), 'naive': naive[name]}
        results[name] = run_rule(name, factories, libs, gradient, settings)
        r = results[name]['ratios']
        print('%-10s %5.1f s  ours / naive: step %s, update alone %s' % (
            name, time.perf_counter() - t0, cell(r['step']['wall']), cell(r['update']['wall'])),
            file=sys.stderr)
    gradient.close()
    seconds = time.perf_counter() - started
    command = ' '.join(['python', os.path.relpath(sys.argv[0])] + sys.argv[1:])
    markdown = report(results, checks, settings, seconds, args.quick, command)
    print(markdown)
    paths = harness.write_results(args.results, {
        'quick': args.quick, 'settings': settings, 'seconds': seconds, 'batch': bench.BATCH,
        'command': command, 'same_formula': checks, 'results': results}, markdown)
    print('total %.0f s; wrote %s' % (seconds, ', '.join(os.path.relpath(p) for p in paths)))


if __name__ == '__main__':
    main()
