"""Checks of tests/reference_rules.py against values worked out by hand (NumPy only), and of
its LARS against TensorFlow 1.15's tf.contrib.opt.LARSOptimizer."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_rules as RR  # noqa: E402


def arr(*xs):
    return np.array(xs, dtype=np.float64)


def rho(b2, t):
    rho_inf = 2. / (1. - b2) - 1.
    return rho_inf, rho_inf - 2. * t * b2 ** t / (1. - b2 ** t)


# --- names ----------------------------------------------------------------------------------
def test_names_per_step_or_at_construction_and_count_checked():
    # skip_list 'bias': the bias takes the plain momentum step lr*g, the kernel does not
    for make, names in ((lambda: RR.LARS(lr=1., momentum=0., skip_list=['bias']),
                         ['d/kernel:0', 'd/bias:0']),
                        (lambda: RR.LARS(lr=1., momentum=0., skip_list=['bias'],
                                         names=['d/kernel:0', 'd/bias:0']), None)):
        opt, k, b = make(), arr(3., 4.), arr(3., 4.)
        opt.step([k, b], [arr(1., 1.), arr(1., 1.)], names=names)
        np.testing.assert_allclose(b, [2., 3.])
        assert not np.allclose(k, [2., 3.])
    with pytest.raises(ValueError):
        RR.LARS().step([arr(1.)], [arr(1.)], names=['a:0', 'b:0'])
    with pytest.raises(ValueError):  # patterns but no names
        RR.LARS(skip_list=['bias']).step([arr(1.)], [arr(1.)])
    with pytest.raises(ValueError):
        RR.LAMB(exclude_from_weight_decay=['bias']).step([arr(1.)], [arr(1.)])


def test_registry():
    assert sorted(RR.REFERENCES) == sorted(['RAdam', 'LAMB', 'LARS', 'Adafactor', 'AdaBound',
                                            'Yogi', 'AdaBelief', 'Lion'])
    for cls in RR.REFERENCES.values():
        assert issubclass(cls, RR.Reference)
        cls().step([arr(1., 2.)], [arr(0.5, -0.5)], names=['x:0'])  # defaults run


# --- RAdam ----------------------------------------------------------------------------------
def test_radam_threshold_is_t6_for_beta2_0999():
    assert rho(0.999, 5)[1] < 5. <= rho(0.999, 6)[1]


def test_radam_sgd_steps_then_rectified_step():
    # constant g, eps=0: m_t=(1-b1^t)g, v_t=(1-b2^t)g^2
    # t<=5: p -= lr/(1-b1^t) m = lr*g;  t=6: p -= lr*r6*sqrt(1-b2^6)/(1-b1^6)*m/sqrt(v) = lr*r6*sign(g)
    lr, g = 0.1, 2.
    opt, p = RR.RAdam(lr=lr, epsilon=0.), arr(1.)
    for t in range(1, 6):
        opt.step([p], [arr(g)])
        assert p[0] == pytest.approx(1. - t * lr * g, rel=1e-12)
    rho_inf, rho6 = rho(0.999, 6)
    r6 = np.sqrt((rho6 - 4.) * (rho6 - 2.) * rho_inf / ((rho_inf - 4.) * (rho_inf - 2.) * rho6))
    assert r6 == pytest.approx(0.02582, abs=1e-5)  # sqrt(1.9942*3.9942*1999/(1995*1997*5.9942))
    opt.step([p], [arr(g)])
    assert p[0] == pytest.approx(1. - 5 * lr * g - lr * r6, rel=1e-12)


def test_radam_without_degeneration_holds_still_until_t6():
    opt, p = RR.RAdam(lr=0.1, degenerated_to_sgd=False), arr(1.)
    for _ in range(5):
        opt.step([p], [arr(2.)])
    assert p[0] == 1.
    opt.step([p], [arr(2.)])
    assert p[0] < 1.


# --- LAMB -----------------------------------------------------------------------------------
def test_lamb_first_step_trust_ratio():
    # t=1: m_hat=g, v_hat=g^2 -> r=sign(g)=[1,-1]; ratio=||p||/||r||=5/sqrt2
    opt, p = RR.LAMB(lr=0.01, epsilon=0.), arr(3., 4.)
    opt.step([p], [arr(1., -2.)])
    np.testing.assert_allclose(p, [3. - 0.01 * 5 / np.sqrt(2.), 4. + 0.01 * 5 / np.sqrt(2.)])


def test_lamb_weight_decay_in_r_and_in_its_norm():
    # r = [1,-1] + 0.1*[3,4] = [1.3,-0.6]; ratio = 5/sqrt(2.05)
    opt, p = RR.LAMB(lr=0.01, epsilon=0., weight_decay_rate=0.1), arr(3., 4.)
    opt.step([p], [arr(1., -2.)])
    ratio = 5. / np.sqrt(2.05)
    np.testing.assert_allclose(p, [3. - 0.01 * ratio * 1.3, 4. + 0.01 * ratio * 0.6])


def test_lamb_zero_norm_parameter_and_zero_update_use_ratio_1():
    opt, p = RR.LAMB(lr=0.01, epsilon=0.), arr(0., 0.)
    opt.step([p], [arr(5., -0.1)])
    np.testing.assert_allclose(p, [-0.01, 0.01])
    opt, p = RR.LAMB(lr=0.01), arr(3., 4.)
    opt.step([p], [arr(0., 0.)])  # r = 0: ratio 1, no move (and no nan)
    np.testing.assert_allclose(p, [3., 4.])


def test_lamb_exclusions():
    names = ['dense_1/kernel:0', 'dense_1/bias:0']
    g = [arr(1., -2.), arr(1., -2.)]
    ratio_wd = 5. / np.sqrt(2.05)
    decayed_adapted = [3. - 0.01 * ratio_wd * 1.3, 4. + 0.01 * ratio_wd * 0.6]
    plain = [3. - 0.01, 4. + 0.01]                      # ratio 1, no decay: p - lr*sign(g)
    decayed_not_adapted = [3. - 0.01 * 1.3, 4. + 0.01 * 0.6]
    # exclude_from_layer_adaptation=None falls back to exclude_from_weight_decay (TF Addons)
    for la in (None, []):
        opt = RR.LAMB(lr=0.01, epsilon=0., weight_decay_rate=0.1,
                      exclude_from_weight_decay=['bias'], exclude_from_layer_adaptation=la)
        k, b = arr(3., 4.), arr(3., 4.)
        opt.step([k, b], g, names=names)
        np.testing.assert_allclose(k, decayed_adapted)
        np.testing.assert_allclose(b, plain)
    # separate lists; ':0' is stripped before re.search, so 'kernel$' matches
    opt = RR.LAMB(lr=0.01, epsilon=0., weight_decay_rate=0.1,
                  exclude_from_weight_decay=['bias'], exclude_from_layer_adaptation=['kernel$'])
    k, b = arr(3., 4.), arr(3., 4.)
    opt.step([k, b], g, names=names)
    np.testing.assert_allclose(k, decayed_not_adapted)
    np.testing.assert_allclose(b, [3. - 0.01 * 5 / np.sqrt(2.), 4. + 0.01 * 5 / np.sqrt(2.)])
    assert RR.LAMB.variable_name('a/b:12') == 'a/b' and RR.LAMB.variable_name('a:b') == 'a:b'


# --- LARS -----------------------------------------------------------------------------------
def test_lars_first_step_by_hand():
    # ||w||=5, ||g||=1: trust = 0.01*5/(1+0.1*5) = 1/30; g' = g + 0.1 w = [0.9, 1.2]
    # mom = 1/30*[0.9,1.2] = [0.03,0.04]; plain w -= mom; nesterov w -= step + 0.9 mom
    for nesterov, factor in ((False, 1.), (True, 1.9)):
        opt = RR.LARS(lr=1., momentum=0.9, weight_decay=0.1, eeta=0.01, nesterov=nesterov)
        w = arr(3., 4.)
        opt.step([w], [arr(0.6, 0.8)], names=['w:0'])
        np.testing.assert_allclose(opt.slots['momentum'][0], [0.03, 0.04])
        np.testing.assert_allclose(w, [3. - factor * 0.03, 4. - factor * 0.04])


def test_lars_zero_norms_give_trust_1_but_keep_decay():
    opt = RR.LARS(lr=0.5, momentum=0., weight_decay=0.1)
    w = arr(0., 0.)
    opt.step([w], [arr(1., -1.)])           # ||w|| = 0: trust 1, decay term 0
    np.testing.assert_allclose(w, [-0.5, 0.5])
    w = arr(3., 4.)
    opt = RR.LARS(lr=0.5, momentum=0., weight_decay=0.1)
    opt.step([w], [arr(0., 0.)])            # ||g|| = 0: trust 1, g' = 0.1 w
    np.testing.assert_allclose(w, [3. * 0.95, 4. * 0.95])


def _tf_lars_run(nesterov, epsilon, steps=30, seed=0):
    import tensorflow as tf
    rng = np.random.RandomState(seed)
    init = {'dense_1/kernel': rng.randn(3, 4), 'dense_1/bias': rng.randn(4),
            'zero/kernel': np.zeros((2, 2))}
    names = sorted(init)
    grads = [[rng.randn(*init[n].shape) for n in names] for _ in range(steps)]
    for step_grads in grads[5:8]:  # a zero gradient for a few steps (||g|| = 0 branch)
        step_grads[names.index('dense_1/kernel')][...] = 0.
    kwargs = dict(momentum=0.9, weight_decay=0.01, eeta=0.002, epsilon=epsilon,
                  skip_list=['bias'])
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.Variable(init[n], dtype=tf.float64, name=n) for n in names]
        placeholders = [tf.placeholder(tf.float64, init[n].shape) for n in names]
        opt = tf.contrib.opt.LARSOptimizer(0.1, use_nesterov=nesterov, **kwargs)
        train = opt.apply_gradients(list(zip(placeholders, variables)))
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            var_names = [v.name for v in variables]
            for step_grads in grads:
                sess.run(train, dict(zip(placeholders, step_grads)))
            tf_values = sess.run(variables)
    ref = RR.LARS(lr=0.1, nesterov=nesterov, **kwargs)
    params = [init[n].copy() for n in names]
    for step_grads in grads:
        ref.step(params, [g.copy() for g in step_grads], names=var_names)
    return var_names, tf_values, params


@pytest.mark.parametrize('nesterov', [False, True])
@pytest.mark.parametrize('epsilon', [0., 1e-3])
def test_lars_matches_tf_contrib_lars_for_30_steps(nesterov, epsilon):
    var_names, tf_values, ref_values = _tf_lars_run(nesterov, epsilon)
    assert var_names == ['dense_1/bias:0', 'dense_1/kernel:0', 'zero/kernel:0']
    for name, a, b in zip(var_names, tf_values, ref_values):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, err_msg=name)


# --- Adafactor ------------------------------------------------------------------------------
def test_adafactor_state_sizes():
    shapes = [(3, 5), (5,), (2, 3, 4, 5), (), (1, 7)]
    opt = RR.Adafactor()
    opt.step([np.ones(s) for s in shapes], [np.ones(s) for s in shapes])
    assert [opt.slot_count(i) for i in range(len(shapes))] == [3 + 5, 5, 2 * 3 * 4 + 2 * 3 * 5,
                                                               1, 1 + 7]
    assert opt.slots['vr'][0].shape == (3,) and opt.slots['vc'][0].shape == (5,)
    assert opt.slots['vr'][2].shape == (2, 3, 4) and opt.slots['vc'][2].shape == (2, 3, 5)
    assert opt.slots['v'][0] is None and opt.slots['vr'][1] is None
    assert 'm' not in opt.slots
    # not factored: factored=False, or a last-two dim below min_dim_size_to_factor
    for opt in (RR.Adafactor(factored=False), RR.Adafactor(min_dim_size_to_factor=4)):
        opt.step([np.ones((3, 5))], [np.ones((3, 5))])
        assert opt.slot_count() == 15 and opt.slots['vr'][0] is None
    opt = RR.Adafactor(min_dim_size_to_factor=3, beta_1=0.9)
    opt.step([np.ones((3, 5))], [np.ones((3, 5))])
    assert opt.slot_count() == 8 + 15  # + m


def test_adafactor_first_step_unfactored_is_sign_times_relative_scale():
    # t=1: decay 0 -> v = g^2 + 1e-30, x = sign(g), RMS(x)=1 (no clip);
    # step = min(0.01, 1/sqrt(1)) * max(1e-3, RMS(p)) = 0.01*sqrt(12.5)
    p = arr(3., -4.)
    RR.Adafactor().step([p], [arr(0.2, 7.)])
    np.testing.assert_allclose(p, [3. - 0.01 * np.sqrt(12.5), -4. - 0.01 * np.sqrt(12.5)])


def test_adafactor_first_step_factored():
    # rank-1 g = a b^T: the factored estimate is exact, x = sign(g)
    a, b = arr(1., -2., 0.5), arr(3., 1., -1., 2.)
    p = np.full((3, 4), 2.)
    RR.Adafactor().step([p], [np.outer(a, b)])
    np.testing.assert_allclose(p, 2. - 0.01 * 2. * np.sign(np.outer(a, b)), rtol=1e-12)
    # g = I: vr = vc = [.5,.5], r_factor = 1, c_factor = sqrt2 -> x = sqrt2*I, RMS(x) = 1;
    # p = 0: scale = 0.01 * 1e-3
    p = np.zeros((2, 2))
    opt = RR.Adafactor()
    opt.step([p], [np.eye(2)])
    np.testing.assert_allclose(opt.slots['vr'][0], [0.5, 0.5])
    np.testing.assert_allclose(p, -1e-5 * np.sqrt(2.) * np.eye(2), rtol=1e-12)


def test_adafactor_update_clipping():
    p = arr(3., -4.)
    RR.Adafactor(clipping_threshold=0.5).step([p], [arr(0.2, 7.)])  # RMS(x)=1 -> x/2
    np.testing.assert_allclose(p, [3. - 0.005 * np.sqrt(12.5), -4. - 0.005 * np.sqrt(12.5)])
    p = arr(3., -4.)
    RR.Adafactor(clipping_threshold=None).step([p], [arr(0.2, 7.)])
    np.testing.assert_allclose(p, [3. - 0.01 * np.sqrt(12.5), -4. - 0.01 * np.sqrt(12.5)])


def test_adafactor_second_step_decay_rate():
    # absolute lr 1, no clipping. t=1: d = 0, v = 1, x = 1.
    # t=2: d = 1 - 2^-0.8, v = d*1 + (1-d)*4, x = 2/sqrt(v)
    d = 1. - 2. ** -0.8
    opt = RR.Adafactor(multiply_by_parameter_scale=False, lr=1., clipping_threshold=None)
    p = arr(0.)
    opt.step([p], [arr(1.)])
    assert p[0] == pytest.approx(-1.)
    opt.step([p], [arr(2.)])
    v = d * 1. + (1. - d) * 4.
    assert opt.slots['v'][0][0] == pytest.approx(v, rel=1e-12)
    assert p[0] == pytest.approx(-1. - 2. / np.sqrt(v), rel=1e-12)


def test_adafactor_learning_rates():
    # explicit lr, not multiplied by the parameter scale: absolute
    p = arr(3., -4.)
    RR.Adafactor(lr=0.1, multiply_by_parameter_scale=False).step([p], [arr(1., 1.)])
    np.testing.assert_allclose(p, [2.9, -4.1])
    # explicit lr multiplied by max(1e-3, RMS(p))
    p = arr(3., -4.)
    RR.Adafactor(lr=0.1).step([p], [arr(1., 1.)])
    np.testing.assert_allclose(p, [3. - 0.1 * np.sqrt(12.5), -4. - 0.1 * np.sqrt(12.5)])
    # lr=None, no parameter scale: t2t's 0.05 * min(0.01, 1/sqrt(t))
    p = arr(3., -4.)
    RR.Adafactor(multiply_by_parameter_scale=False).step([p], [arr(1., 1.)])
    np.testing.assert_allclose(p, [3. - 5e-4, -4. - 5e-4])
    # t = 40000: relative step 1/sqrt(t) = 0.005 (x clipped back to sign(g))
    opt, p = RR.Adafactor(), arr(3., -4.)
    opt.iterations = 39999
    opt.step([p], [arr(1., 1.)])
    np.testing.assert_allclose(p, [3. - 0.005 * np.sqrt(12.5), -4. - 0.005 * np.sqrt(12.5)])


def test_adafactor_legacy_decay_only_for_explicit_lr():
    a, b = arr(3., -4.), arr(3., -4.)
    for p, decay in ((a, 0.), (b, 1.)):
        opt = RR.Adafactor(decay=decay)
        for g in (1., 2.):
            opt.step([p], [arr(g, g)])
    np.testing.assert_array_equal(a, b)
    # explicit lr: second step at lr/2 (v from g=1 then g=1: x = 1)
    opt, p = RR.Adafactor(lr=0.1, decay=1., multiply_by_parameter_scale=False), arr(0.)
    opt.step([p], [arr(1.)])
    opt.step([p], [arr(1.)])
    assert p[0] == pytest.approx(-0.15)


def test_adafactor_momentum_averages_the_scaled_update():
    # t2t: m = b1 m + (1-b1) * (scale * x); step 1: p -= 0.1 * scale * sign(g)
    opt, p = RR.Adafactor(beta_1=0.9), arr(3., -4.)
    opt.step([p], [arr(1., -1.)])
    s = 0.01 * np.sqrt(12.5)
    np.testing.assert_allclose(p, [3. - 0.1 * s, -4. + 0.1 * s])
    np.testing.assert_allclose(opt.slots['m'][0], [0.1 * s, -0.1 * s])


# --- AdaBound -------------------------------------------------------------------------------
def test_adabound_bounds_converge_to_final_lr():
    opt = RR.AdaBound(lr=0.001, final_lr=0.1, gamma=1e-3)
    lows, ups = zip(*[opt.bounds(0.001, t) for t in (1, 10, 1000, 10 ** 5, 10 ** 8)])
    assert all(a < b for a, b in zip(lows, lows[1:])) and all(a > b for a, b in zip(ups, ups[1:]))
    assert lows[0] == pytest.approx(0.1 * (1. - 1. / 1.001))
    assert ups[0] == pytest.approx(0.1 * 1001.)
    assert lows[-1] == pytest.approx(0.1, rel=1e-4) and ups[-1] == pytest.approx(0.1, rel=1e-4)


def test_adabound_first_step_inside_and_at_the_bounds():
    # t=1, eps=0: lr*sqrt(1-b2)/(1-b1) / (sqrt(1-b2)|g|) = lr/(0.1|g|); m = 0.1 g
    opt, p = RR.AdaBound(lr=0.001, epsilon=0.), arr(1., 1.)
    opt.step([p], [arr(2., -0.5)])
    np.testing.assert_allclose(p, [0.999, 1.001])  # Adam-like: lr*sign(g)
    # g = 1000: lr/(0.1*1000) = 1e-5 < lower(1) = 0.1*(1-1/1.001) -> clipped up
    opt, p = RR.AdaBound(lr=0.001, epsilon=0.), arr(1.)
    opt.step([p], [arr(1000.)])
    assert p[0] == pytest.approx(1. - 0.1 * (1. - 1. / 1.001) * 100.)


def test_adabound_final_lr_follows_decay_and_schedule():
    opt = RR.AdaBound(lr=0.01, final_lr=0.1, decay=1.)
    p = arr(1.)
    opt.step([p], [arr(1.)])
    assert opt._current_lr() == pytest.approx(0.005)
    assert opt.bounds(opt._current_lr(), 2)[0] == pytest.approx(0.05 * (1. - 1. / 1.002))
    sched = RR.AdaBound(lr=lambda k: 0.01 * 0.5 ** k, final_lr=0.1)
    assert sched.initial_lr == 0.01
    assert sched.bounds(0.0025, 1)[1] == pytest.approx(0.025 * 1001.)


def test_amsbound_keeps_max_v():
    opt, p = RR.AdaBound(amsbound=True), arr(0.)
    opt.step([p], [arr(1.)])
    opt.step([p], [arr(0.)])
    assert opt.slots['v'][0][0] == pytest.approx(0.000999)
    assert opt.slots['vhat'][0][0] == pytest.approx(0.001)
    assert RR.AdaBound().slot_names == ('m', 'v')


# --- Yogi -----------------------------------------------------------------------------------
def test_yogi_sign_behaviour_of_v():
    opt, p = RR.Yogi(), arr(0., 0.)
    opt.step([p], [arr(1., 0.)])           # g^2 > v0 = 1e-6: v += 0.001*g^2; g=0: v unchanged
    np.testing.assert_allclose(opt.slots['v'][0], [1e-6 + 1e-3, 1e-6])
    opt.step([p], [arr(0.01, 0.)])         # g^2 = 1e-4 < v: v -= 0.001*1e-4 (additive, not *b2)
    np.testing.assert_allclose(opt.slots['v'][0], [1e-6 + 1e-3 - 1e-7, 1e-6])
    v = opt.slots['v'][0][0]
    opt.step([p], [arr(np.sqrt(v), 0.)])   # g^2 == v: sign 0, unchanged
    assert opt.slots['v'][0][0] == pytest.approx(v, rel=1e-12)


def test_yogi_first_step_bias_corrected():
    # m = 0.1g, v = 1e-6 + 0.001 g^2, step = lr*sqrt(0.001)/0.1 * m/(sqrt(v)+eps)
    opt, p = RR.Yogi(lr=0.01), arr(0.)
    opt.step([p], [arr(2.)])
    v = 1e-6 + 0.004
    assert p[0] == pytest.approx(-0.01 * np.sqrt(0.001) / 0.1 * 0.2 / (np.sqrt(v) + 1e-3))
    opt = RR.Yogi(beta_1=0.)
    opt.step([arr(0.)], [arr(2.)])
    assert sorted(opt.slots) == ['v']


# --- AdaBelief ------------------------------------------------------------------------------
def test_adabelief_first_step():
    # m = 0.1g, s = 0.001*(0.9g)^2 + eps, denom = sqrt(s)/sqrt(0.001) + eps ~ 0.9|g|
    # p -= lr/0.1 * 0.1 g / (0.9|g|) = lr sign(g)/0.9
    opt, p = RR.AdaBelief(lr=0.001), arr(1., 1.)
    opt.step([p], [arr(3., -0.2)])
    np.testing.assert_allclose(p, [1. - 0.001 / 0.9, 1. + 0.001 / 0.9], rtol=1e-12)


def test_adabelief_eps_is_kept_in_s():
    opt, p = RR.AdaBelief(epsilon=1e-3), arr(0.)
    opt.step([p], [arr(0.)])
    assert opt.slots['s'][0][0] == pytest.approx(1e-3)
    opt.step([p], [arr(0.)])
    assert opt.slots['s'][0][0] == pytest.approx(0.999e-3 + 1e-3)


def test_adabelief_rectified():
    lr, g = 0.1, 2.
    opt, p = RR.AdaBelief(lr=lr, rectify=True), arr(1.)
    for t in range(1, 6):  # SGD with momentum: lr/(1-b1^t) m = lr g for a constant g
        opt.step([p], [arr(g)])
        assert p[0] == pytest.approx(1. - t * lr * g, rel=1e-12)
    before = p[0]
    opt.step([p], [arr(g)])
    rho_inf, rho6 = rho(0.999, 6)
    r6 = np.sqrt((rho6 - 4.) * (rho6 - 2.) * rho_inf / ((rho_inf - 4.) * (rho_inf - 2.) * rho6))
    m, s = opt.slots['m'][0][0], opt.slots['s'][0][0]
    assert m == pytest.approx((1. - 0.9 ** 6) * g)
    step = lr * r6 * np.sqrt(1. - 0.999 ** 6) / (1. - 0.9 ** 6) * m / (np.sqrt(s) + 1e-16)
    assert p[0] == pytest.approx(before - step, rel=1e-12)
    opt, p = RR.AdaBelief(lr=lr, rectify=True, degenerated_to_sgd=False), arr(1.)
    for _ in range(5):
        opt.step([p], [arr(g)])
    assert p[0] == 1.


# --- Lion -----------------------------------------------------------------------------------
def test_lion_sign_step():
    opt, p = RR.Lion(lr=0.1), arr(1., 1., 1.)
    opt.step([p], [arr(1e-8, -100., 0.)])
    np.testing.assert_allclose(p, [0.9, 1.1, 1.])
    np.testing.assert_allclose(opt.slots['m'][0], [1e-10, -1., 0.])


def test_lion_interpolates_with_beta1_and_tracks_with_beta2():
    # m1 = 0.01*10 = 0.1; c2 = 0.9*0.1 + 0.1*(-0.5) = 0.04 > 0 -> p decreases; m2 = 0.094
    opt, p = RR.Lion(lr=0.1), arr(0.)
    opt.step([p], [arr(10.)])
    opt.step([p], [arr(-0.5)])
    assert p[0] == pytest.approx(-0.2)
    assert opt.slots['m'][0][0] == pytest.approx(0.094)


def test_lion_weight_decay():
    opt, p = RR.Lion(lr=0.1, weight_decay=0.5), arr(2.)
    opt.step([p], [arr(1.)])
    assert p[0] == pytest.approx(2. - 0.1 * (1. + 1.))
