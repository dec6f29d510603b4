"""Checks of tests/reference.py against values worked out by hand."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402


def arr(*xs):
    return np.array(xs, dtype=np.float64)


def test_sgd_plain_is_p_minus_lr_g():
    p, g = arr(1., -2., 3.), arr(0.5, 4., -1.)
    R.SGD(lr=0.1).step([p], [g])
    np.testing.assert_allclose(p, [0.95, -2.4, 3.1])


def test_sgd_momentum_and_nesterov_two_steps():
    # lr=0.1, momentum=0.9, p0=1, g=1 then 2
    # plain:    v1=-0.1, p1=0.9;  v2=0.9*-0.1-0.2=-0.29, p2=0.61
    # nesterov: p1=1-0.09-0.1=0.81;  p2=0.81+0.9*-0.29-0.2=0.349
    for nesterov, expected in ((False, [0.9, 0.61]), (True, [0.81, 0.349])):
        opt, p = R.SGD(lr=0.1, momentum=0.9, nesterov=nesterov), arr(1.)
        for g, e in zip((1., 2.), expected):
            opt.step([p], [arr(g)])
            assert p[0] == pytest.approx(e)
        assert opt.slots['moment'][0][0] == pytest.approx(-0.29)
        assert opt.iterations == 2


def test_adagrad_two_steps():
    # a=9 -> p=1-0.1*3/3=0.9;  a=25 -> p=0.9-0.1*4/5=0.82
    opt, p = R.Adagrad(lr=0.1, epsilon=0.), arr(1.)
    opt.step([p], [arr(3.)])
    opt.step([p], [arr(4.)])
    assert p[0] == pytest.approx(0.82)
    assert opt.slots['accumulator'][0][0] == 25.


def test_adagrad_default_epsilon_is_1e_7():
    assert R.Adagrad().epsilon == 1e-7 and R.Adam(epsilon=None).epsilon == 1e-7


def test_rmsprop_one_step():
    # a = 0.1*g^2, step = lr*g/(sqrt(0.1)*|g|) = lr*sign(g)/sqrt(0.1)
    p = arr(0., 0.)
    R.RMSprop(lr=0.01, epsilon=0.).step([p], [arr(2., -0.5)])
    np.testing.assert_allclose(p, [-0.01 / np.sqrt(0.1), 0.01 / np.sqrt(0.1)])


def test_adadelta_one_step():
    # rho=0.5, eps=1, g=1: a=0.5, u=sqrt(1)/sqrt(1.5), d=0.5*u^2=1/3
    opt, p = R.Adadelta(lr=1.0, rho=0.5, epsilon=1.), arr(0.)
    opt.step([p], [arr(1.)])
    assert p[0] == pytest.approx(-1. / np.sqrt(1.5))
    assert opt.slots['delta_accumulator'][0][0] == pytest.approx(1. / 3.)


def test_adam_first_step_moves_by_lr_sign_g():
    p, g = arr(1., 1., 1.), arr(0.5, -2., 0.1)
    opt = R.Adam(lr=0.001)
    opt.step([p], [g])
    np.testing.assert_allclose(p, 1. - 0.001 * np.sign(g), rtol=0, atol=1e-6)
    assert sorted(opt.slots) == ['m', 'v']


def test_adam_amsgrad_keeps_max_v():
    # v1 = 0.001*1 = 0.001; then g=0 -> v2 = 0.000999 but vhat stays 0.001
    opt, p = R.Adam(amsgrad=True), arr(0.)
    opt.step([p], [arr(1.)])
    opt.step([p], [arr(0.)])
    assert opt.slots['v'][0][0] == pytest.approx(0.000999)
    assert opt.slots['vhat'][0][0] == pytest.approx(0.001)


def test_adamax_first_step():
    # m=0.1g, u=|g|, lr_t=lr/0.1 -> step = lr*sign(g)
    opt, p = R.Adamax(lr=0.002, epsilon=0.), arr(0., 0.)
    opt.step([p], [arr(3., -0.2)])
    np.testing.assert_allclose(p, [-0.002, 0.002])
    np.testing.assert_allclose(opt.slots['u'][0], [3., 0.2])


def test_nadam_first_step_without_schedule_decay():
    # schedule_decay=0 -> mu_t = mu_{t+1} = 0.9*0.5 = 0.45
    # m_bar = 0.55*g/0.55 + 0.45*(0.1*g)/(1-0.45^2) ; v' = g^2
    opt, p = R.Nadam(lr=0.002, schedule_decay=0., epsilon=0.), arr(0.)
    opt.step([p], [arr(2.)])
    assert p[0] == pytest.approx(-0.002 * (1. + 0.045 / 0.7975))
    assert opt.m_schedule == pytest.approx(0.45)
    opt.step([p, ], [arr(2.)])
    assert opt.m_schedule == pytest.approx(0.45 ** 2)


def test_nadam_first_step_with_schedule_decay():
    # g=1, eps=0: g'=1/(1-mu1), m'=0.1/(1-mu1*mu2), v'=1
    # m_bar = (1-mu1)*g' + mu2*m' = 1 + 0.1*mu2/(1-mu1*mu2)
    mu1 = 0.9 * (1. - 0.5 * 0.96 ** 0.004)
    mu2 = 0.9 * (1. - 0.5 * 0.96 ** 0.008)
    opt, p = R.Nadam(lr=0.002, epsilon=0.), arr(0.)
    opt.step([p], [arr(1.)])
    assert p[0] == pytest.approx(-0.002 * (1. + 0.1 * mu2 / (1. - mu1 * mu2)), rel=1e-12)


def test_nadam_m_schedule_advances_once_per_step_for_many_params():
    opt = R.Nadam()
    opt.step([arr(1.), arr(2.), arr(3.)], [arr(1.), arr(1.), arr(1.)])
    assert opt.m_schedule == pytest.approx(0.9 * (1. - 0.5 * 0.96 ** 0.004))


def test_clipnorm_uses_global_norm_across_arrays():
    # norm over both arrays = sqrt(9+0+16) = 5 -> scale by 1/5
    p1, p2 = arr(0., 0.), np.zeros((1, 1))
    R.SGD(lr=1., clipnorm=1.).step([p1, p2], [arr(3., 0.), np.array([[4.]])])
    np.testing.assert_allclose(p1, [-0.6, 0.])
    np.testing.assert_allclose(p2, [[-0.8]])
    # norm below clipnorm: untouched
    p = arr(0., 0.)
    R.SGD(lr=1., clipnorm=10.).step([p], [arr(3., 4.)])
    np.testing.assert_allclose(p, [-3., -4.])


def test_clipvalue_and_order_norm_then_value():
    p = arr(0., 0., 0.)
    R.SGD(lr=1., clipvalue=0.5).step([p], [arr(-3., 0.2, 5.)])
    np.testing.assert_allclose(p, [0.5, -0.2, -0.5])
    # norm first: [3,4] -> [0.6,0.8] -> clip 0.7 -> [0.6,0.7]
    # (value first would give [0.7,0.7], whose norm < 1 stays unscaled)
    p = arr(0., 0.)
    R.SGD(lr=1., clipnorm=1., clipvalue=0.7).step([p], [arr(3., 4.)])
    np.testing.assert_allclose(p, [-0.6, -0.7])


def test_legacy_decay():
    # lr = 1/(1+iterations): 1, 1/2, 1/3
    opt, p = R.SGD(lr=1., decay=1.), arr(0.)
    for expected in (-1., -1.5, -1.5 - 1. / 3.):
        opt.step([p], [arr(1.)])
        assert p[0] == pytest.approx(expected)


def test_callable_lr_sees_step_0_1_2():
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.1 * (step + 1)

    opt, p = R.SGD(lr=schedule), arr(0.)
    for _ in range(3):
        opt.step([p], [arr(1.)])
    assert calls == [0, 1, 2]
    assert p[0] == pytest.approx(-0.6)


def test_schedule_and_decay_together_rejected():
    with pytest.raises(ValueError):
        R.Adam(lr=lambda s: 0.1, decay=0.1)


def test_constraint_applied_to_new_value():
    p = arr(0.5, 2.)
    # new values -0.5 and 1.0, then clipped to [0, inf)
    R.SGD(lr=1., constraint=lambda w: np.maximum(w, 0.)).step([p], [arr(1., 1.)])
    np.testing.assert_allclose(p, [0., 1.])


def test_ftrl_hand_values():
    # acc0=0, g=1, p=1, lr=0.1: acc=1, linear=1-(1-0)/0.1*1=-9, quad=10 -> p=0.9
    def one_step(**kw):
        opt, p = R.Ftrl(lr=0.1, initial_accumulator_value=0., **kw), arr(1.)
        opt.step([p], [arr(1.)])
        return p[0], opt
    p, opt = one_step()
    assert p == pytest.approx(0.9)
    assert opt.slots['linear'][0][0] == pytest.approx(-9.)
    assert opt.slots['accumulator'][0][0] == 1.
    assert one_step(l1_regularization_strength=2.)[0] == pytest.approx(0.7)  # (-2+9)/10
    assert one_step(l2_regularization_strength=1.)[0] == pytest.approx(0.75)  # 9/12
    # shrinkage: g'=1+2*0.5*1=2 -> linear=-8 -> 0.8; accumulator still uses raw g
    p, opt = one_step(l2_shrinkage_regularization_strength=0.5)
    assert p == pytest.approx(0.8) and opt.slots['accumulator'][0][0] == 1.


def test_ftrl_large_l1_gives_exact_zero():
    opt, p = R.Ftrl(lr=0.1, l1_regularization_strength=100.), arr(1., -3.)
    opt.step([p], [arr(1., 2.)])
    assert np.all(p == 0.)
    assert opt.slots['accumulator'][0][0] == pytest.approx(1.1)  # init 0.1 + 1


def test_in_place_and_dtype_kept():
    p = np.ones(3, dtype=np.float32)
    out = R.Adam().step([p], [np.ones(3, dtype=np.float32)])
    assert out[0] is p and p.dtype == np.float32
    assert np.all(p < 1.)


def test_registry_lists_all_eight():
    """One reference per update rule of the catalog (all eight, and a new one once its entry
    is added; tests/test_catalog.py checks the catalog lists every class of the package)."""
    import catalog
    rules = catalog.rules()
    assert sorted(catalog.REFERENCES) == sorted(entry.name for entry in rules)
    assert {'SGD', 'RMSprop', 'Adagrad', 'Adadelta', 'Adam', 'Adamax', 'Nadam', 'Ftrl'} <= set(
        R.REFERENCES)
    for entry in rules:
        assert entry.reference is catalog.REFERENCES[entry.name]
