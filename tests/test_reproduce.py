"""The reproduction: every verdict comes from measurements -- breaking the implementation an
experiment checks flips it -- and the command writes a table, report.md, results.json and plots."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import keras
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy.reproduce import data as D, experiments, posts, report


@pytest.fixture(scope='module')
def digits():
    return D.load()


@pytest.fixture
def out(tmp_path):
    return report.Output(str(tmp_path))


def verdict(experiment, digits, out, **implementation):
    return experiments.EXPERIMENTS[experiment](digits, out, True, **implementation).verdict


class TwiceTheRate(posts.HandwrittenSGD):
    def __init__(self, lr=0.01, **kwargs):
        super(TwiceTheRate, self).__init__(lr=2 * lr, **kwargs)


class ForgetfulAdagrad(keras.optimizers.Adagrad):
    """Adagrad whose accumulators start from zero at every step (not persisted)."""

    def get_updates(self, loss, params):
        updates = super(ForgetfulAdagrad, self).get_updates(loss, params)
        return [u for u in updates if u.op.inputs[0].op.name not in
                {w.op.name for w in self.weights}]


class CounterLosingAdam(kol.Adam):
    def set_weights(self, weights):
        weights = list(weights)
        weights[0] = K.get_value(self.iterations)
        super(CounterLosingAdam, self).set_weights(weights)


def no_reset(optimizer, keep_iterations=False):
    return True


class OffByOne(object):
    """kol.schedules with ExponentialDecay evaluated one step late."""

    def __getattr__(self, name):
        schedule = getattr(kol.schedules, name)
        if name != 'ExponentialDecay':
            return schedule
        return lambda *a, **k: (lambda step: schedule(*a, **k)(step + 1))


def decays_the_excluded_too(optimizer, rate, exclude=()):
    return kol.WeightDecay(optimizer, rate)  # exclude ignored


def decay_not_scaled_by_lr(optimizer, rate, exclude=()):
    return kol.WeightDecay(optimizer, rate, exclude=exclude, scale_by_lr=False)


def a_step_late(steps, values):
    return kol.schedules.PiecewiseLinear([s + 1 for s in steps], values)


def ema_that_does_not_average(optimizer, decay):
    return kol.ExponentialMovingAverage(optimizer, decay=0.)  # the raw weights


def swa_a_period_late(optimizer, start, period):
    return kol.StochasticWeightAveraging(optimizer, start=start, period=period + 1)


@pytest.mark.parametrize('experiment, broken', [
    ('handwritten_sgd', {'handwritten': TwiceTheRate}),
    ('get_updates_once', {'adagrad': ForgetfulAdagrad}),
    ('soft_batch', {'naive': posts.FixedSoftBatchSGD}),  # the "naive" one does not move often
    ('soft_batch', {'fixed': posts.NaiveSoftBatchSGD}),  # the "fixed" one is the buggy one
    ('soft_batch', {'accumulation': lambda optimizer, steps: optimizer}),  # no accumulation
    ('reset', {'reset_optimizer': no_reset}),
    ('weights_round_trip', {'adam': CounterLosingAdam}),
    ('schedules', {'ours': OffByOne()}),
    ('weight_decay', {'wrapper': decays_the_excluded_too}),
    ('weight_decay', {'wrapper': decay_not_scaled_by_lr}),
    ('weight_decay', {'piecewise_linear': a_step_late}),
    ('weight_averaging', {'ema': ema_that_does_not_average}),
    ('weight_averaging', {'swa': swa_a_period_late}),  # still lower, but not the NumPy mean
], ids=lambda v: v if isinstance(v, str) else ','.join(v))
def test_breaking_the_implementation_flips_the_verdict(digits, out, experiment, broken):
    assert verdict(experiment, digits, out) is True
    K.clear_session()
    assert verdict(experiment, digits, out, **broken) is False


def test_runge_kutta_verdict_flips_with_a_heun_that_does_not_train(digits, out):
    if not hasattr(kol, 'Heun'):
        pytest.skip('the Runge-Kutta optimizers are not in this build')
    assert verdict('runge_kutta', digits, out) is True
    K.clear_session()
    assert verdict('runge_kutta', digits, out, heun=lambda: kol.Heun(0.)) is False


def keras_state():
    return ({name: getattr(K, name, None) for name in experiments._BERT4KERAS_PATCHES},
            dict(keras.utils.get_custom_objects()))


def test_weight_decay_figures_and_keras_left_as_found(digits, out):
    before = keras_state()
    result = experiments.EXPERIMENTS['weight_decay'](digits, out, True)
    assert keras_state() == before  # bert4keras's patches of keras.backend undone
    assert result.verdict is True
    differences = result.measured['max_relative_difference']
    assert differences['ours vs NumPy'] < 1e-5
    assert differences['ours vs NumPy decaying the biases too'] > 1e-4  # it can tell
    assert result.measured['decayed by ours'] == ['dense_1/kernel:0', 'dense_2/kernel:0']
    found = result.measured['norms']['decay found (1: decayed at the rate, 0: not decayed)']
    assert abs(found["exclude=['bias']"]['biases']) < 1e-3
    assert abs(found['decay everything']['biases'] - 1.) < 1e-3
    assert sorted(result.plots) == ['weight_decay_norms.png', 'weight_decay_recipe.png']
    if 'not importable' not in result.measured['bert4keras']:
        assert differences['ours vs bert4keras over our Adam'] < 1e-5
        assert differences["ours vs bert4keras over Keras's Adam, races removed"] < 1e-5


def test_weight_decay_without_bert4keras_compares_with_numpy_only(digits, out, monkeypatch):
    monkeypatch.setitem(sys.modules, 'bert4keras.optimizers', None)  # import fails
    before = keras_state()
    result = experiments.EXPERIMENTS['weight_decay'](digits, out, True)
    assert keras_state() == before
    assert result.verdict is True
    assert result.measured['bert4keras'].startswith('not importable')
    assert 'bert4keras not importable' in result.summary
    assert list(result.measured['max_relative_difference']) == [
        'ours vs NumPy', 'ours vs NumPy decaying the biases too']


def test_new_rules_state_table_plots_and_the_verdict_flips(digits, out):
    """Every rule of issue 18 (and Adam, SGD) at its default rate; Adafactor's state is n + m per
    kernel plus its vectors: (64 + 32) + 32 + (32 + 10) + 10 = 180 numbers on the digits
    classifier, Adam's 2 per parameter. An unfactored Adafactor, or one that does not train,
    flips the verdict."""
    result = experiments.EXPERIMENTS['new_rules'](digits, out, True)
    assert result.verdict is True
    per_rule = result.measured['per rule']
    assert list(per_rule) == ['SGD', 'Adam', 'RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound',
                              'Yogi', 'AdaBelief', 'Lion']
    parameters = 64 * 32 + 32 + 32 * 10 + 10
    states = {name: r['state numbers'] for name, r in per_rule.items()}
    assert states == dict(SGD=0, Adam=2 * parameters, RAdam=2 * parameters, LAMB=2 * parameters,
                          LARS=parameters, Adafactor=180,
                          AdaBound=2 * parameters + 1,  # + its initial rate
                          Yogi=2 * parameters, AdaBelief=2 * parameters, Lion=parameters)
    assert per_rule['Adafactor']['default lr'] is None
    assert per_rule['Adafactor']['halves the loss'] and per_rule['Adam']['halves the loss']
    assert all(np.isfinite(r['final loss']) for r in per_rule.values())
    assert [row[0] for row in result.measured['table']['rows']] == list(per_rule)
    assert sorted(result.plots) == ['new_rules.png', 'new_rules_state.png']
    for plot in result.plots:
        assert os.path.getsize(out.path(plot)) > 10000
    report.write(out, [result], {'new_rules': 1.}, dict(data='digits', tensorflow='1', keras='2',
                                                         python='3', mode='quick'))
    text = open(out.path('report.md')).read()
    assert '| optimizer | default lr |' in text and '| Adafactor | None (relative step) |' in text
    for broken in (lambda: kol.Adafactor(factored=False), lambda: kol.Adafactor(lr=0.)):
        K.clear_session()
        assert experiments.EXPERIMENTS['new_rules'](
            digits, out, True, adafactor=broken, only=('Adam', 'Adafactor')).verdict is False


def test_the_command_writes_table_report_json_and_plots(tmp_path):
    out = str(tmp_path / 'results')
    x = np.random.RandomState(0).rand(300, 8, 8).astype('float32')
    y = (x.reshape(300, -1).sum(axis=1) > 32).astype(int)
    np.savez(str(tmp_path / 'mine.npz'), x_train=x, y_train=y)
    done = subprocess.run(
        [sys.executable, '-m', 'keras_opt_legacy.reproduce', '--quick', '--out', out,
         '--only', 'soft_batch', 'schedules', '--data', str(tmp_path / 'mine.npz')],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert done.returncode == 0, done.stdout
    assert '[1/2] soft_batch ... reproduced' in done.stdout
    assert 'schedules' in done.stdout.split('experiment')[-1]  # the final table
    results = json.load(open(os.path.join(out, 'results.json')))
    assert [e['verdict'] for e in results['experiments']] == ['reproduced', 'reproduced']
    assert results['meta']['data'].endswith('mine.npz')
    report_text = open(os.path.join(out, 'report.md')).read()
    assert '![soft_batch.png](soft_batch.png)' in report_text
    for plot in ('soft_batch.png', 'schedules.png'):
        assert os.path.getsize(os.path.join(out, plot)) > 10000


def test_unknown_experiment_names_the_choices(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'keras_opt_legacy.reproduce', '--only', 'nope'],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, cwd=str(tmp_path))
    assert done.returncode == 2 and 'choose from handwritten_sgd' in done.stdout
