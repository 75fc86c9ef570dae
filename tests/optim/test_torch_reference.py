"""100-step trajectories against torch.optim on the same gradient sequence.

Conventions are converted explicitly, never absorbed into a tolerance:

- epsilon placement: PyTorch adds eps to ``sqrt(.)`` (Adagrad, RMSprop) and
  uses the paper's Adam; normlab's ``epsilon_form="torch"`` does the same.
  Keras's forms are checked against the hand formulas in test_optimizers.
- initial accumulator: PyTorch's Adagrad starts at 0, Keras's at 0.1: pass it.
- momentum form: PyTorch's buffer ``buf`` relates to the Keras velocity
  ``v`` by ``v = -lr * buf`` (SGD) and to RMSprop's ``m`` by ``m = -lr * buf``;
  the slots are compared after this conversion.
- Nadam: Keras 3's momentum schedule is PyTorch's with ``momentum_decay=1``.

float64 runs agree to ~1e-12 (rounding order only); float32 runs to float32
precision.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from normlab import optimizers as O  # noqa: E402

SHAPES = ((6, 5), (5,), (3, 2, 2))
N_STEPS = 100


def gradients(dtype, seed=7):
    r = np.random.default_rng(seed)
    # a drifting mean keeps momentum and the moment estimates busy
    drift = [r.standard_normal(s) for s in SHAPES]
    return [[(0.5 * d + r.standard_normal(s)).astype(dtype) for d, s in zip(drift, SHAPES)] for _ in range(N_STEPS)]


def trajectories(ours, make_torch, dtype):
    r = np.random.default_rng(3)
    w0 = [r.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = gradients(dtype)
    w = [p.copy() for p in w0]
    tp = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in w0]
    topt = make_torch(tp)
    out_ours, out_torch = [], []
    for gs in grads:
        ours.apply(gs, w)
        for p, g in zip(tp, gs):
            p.grad = torch.from_numpy(g.copy())
        topt.step()
        out_ours.append([p.copy() for p in w])
        out_torch.append([p.detach().numpy().copy() for p in tp])
    return out_ours, out_torch, topt, tp


TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-5, atol=2e-6)}

CASES = {
    "sgd": (lambda: O.SGD(0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    "momentum": (lambda: O.SGD(0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "nesterov": (
        lambda: O.SGD(0.05, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "adagrad": (
        lambda: O.Adagrad(0.1, initial_accumulator_value=0.1, epsilon=1e-7, epsilon_form="torch"),
        lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, eps=1e-7),
    ),
    "rmsprop": (
        lambda: O.RMSprop(0.01, rho=0.9, epsilon=1e-7, epsilon_form="torch"),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-7),
    ),
    "rmsprop-centered": (
        lambda: O.RMSprop(0.01, rho=0.9, epsilon=1e-7, centered=True, epsilon_form="torch"),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-7, centered=True),
    ),
    "rmsprop-momentum": (
        lambda: O.RMSprop(0.01, rho=0.9, momentum=0.8, epsilon=1e-7, epsilon_form="torch"),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-7, momentum=0.8),
    ),
    "rmsprop-centered-momentum": (
        lambda: O.RMSprop(0.01, rho=0.95, momentum=0.8, epsilon=1e-7, centered=True, epsilon_form="torch"),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-7, momentum=0.8, centered=True),
    ),
    "adam": (
        lambda: O.Adam(0.01, epsilon=1e-8, epsilon_form="torch"),
        lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8),
    ),
    "adam-amsgrad": (
        lambda: O.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-8, amsgrad=True, epsilon_form="torch"),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-8, amsgrad=True),
    ),
    "adamw": (
        lambda: O.AdamW(0.01, weight_decay=0.1, epsilon=1e-8, epsilon_form="torch"),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, eps=1e-8),
    ),
    "nadam": (
        lambda: O.Nadam(0.01, epsilon=1e-8),
        lambda p: torch.optim.NAdam(p, lr=0.01, eps=1e-8, momentum_decay=1.0),
    ),
    "nadam-torch-default": (
        lambda: O.Nadam(0.01, epsilon=1e-8, momentum_decay=0.004),
        lambda p: torch.optim.NAdam(p, lr=0.01, eps=1e-8),
    ),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_matches_torch(case, dtype):
    torch.set_num_threads(1)
    make_ours, make_torch = CASES[case]
    # torch keeps NAdam's running product of the momentum schedule in its default dtype
    # (float32) whatever the parameters' dtype; a float64 run needs it in float64 too
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        ours, ref, _, _ = trajectories(make_ours(), make_torch, dtype)
    finally:
        torch.set_default_dtype(previous)
    for k, (a, b) in enumerate(zip(ours, ref)):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, err_msg=f"{case}, step {k + 1}", **TOL[dtype])


def test_trajectories_move():
    """Guard against a vacuous comparison: the parameters travel far from the start."""
    ours, _, _, _ = trajectories(CASES["adam"][0](), CASES["adam"][1], np.float64)
    assert np.abs(ours[-1][0] - ours[0][0]).max() > 0.3


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_velocity_is_minus_lr_times_torch_buffer(nesterov):
    lr = 0.05
    opt = O.SGD(lr, momentum=0.9, nesterov=nesterov)
    _, _, topt, tp = trajectories(opt, lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=nesterov), np.float64)
    st = opt.get_state()
    for i, p in enumerate(tp):
        buf = topt.state[p]["momentum_buffer"].numpy()
        np.testing.assert_allclose(st[f"momentum/{i}"], -lr * buf, rtol=1e-11, atol=1e-13)


def test_rmsprop_slots_convert():
    lr = 0.01
    opt = O.RMSprop(lr, momentum=0.8, centered=True, epsilon=1e-7, epsilon_form="torch")
    _, _, topt, tp = trajectories(
        opt, lambda p: torch.optim.RMSprop(p, lr=lr, alpha=0.9, eps=1e-7, momentum=0.8, centered=True), np.float64
    )
    st = opt.get_state()
    for i, p in enumerate(tp):
        s = topt.state[p]
        np.testing.assert_allclose(st[f"velocity/{i}"], s["square_avg"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(st[f"average_gradient/{i}"], s["grad_avg"].numpy(), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(st[f"momentum/{i}"], -lr * s["momentum_buffer"].numpy(), rtol=1e-11, atol=1e-13)


def test_adam_slots_and_step_count_match():
    opt = O.Adam(0.01, epsilon=1e-8, amsgrad=True, epsilon_form="torch")
    _, _, topt, tp = trajectories(opt, lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8, amsgrad=True), np.float64)
    st = opt.get_state()
    for i, p in enumerate(tp):
        s = topt.state[p]
        assert int(s["step"]) == int(st["iterations"]) == N_STEPS
        np.testing.assert_allclose(st[f"momentum/{i}"], s["exp_avg"].numpy(), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(st[f"velocity/{i}"], s["exp_avg_sq"].numpy(), rtol=1e-11)
        np.testing.assert_allclose(st[f"velocity_hat/{i}"], s["max_exp_avg_sq"].numpy(), rtol=1e-11)


def test_global_clipnorm_matches_clip_grad_norm():
    r = np.random.default_rng(0)
    gs = [r.standard_normal(s) * 3 for s in SHAPES]
    w = [np.zeros(s) for s in SHAPES]
    opt = O.SGD(1.0, global_clipnorm=1.5)
    opt.apply(gs, w)
    tg = [torch.from_numpy(g.copy()) for g in gs]
    tp = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, g in zip(tp, tg):
        p.grad = g
    total = torch.nn.utils.clip_grad_norm_(tp, 1.5)
    assert opt.last_global_norm == pytest.approx(float(total), rel=1e-14)
    for x, p in zip(w, tp):
        # clip_grad_norm_ scales by max_norm / (total + 1e-6); normlab uses max_norm / total
        np.testing.assert_allclose(-x, p.grad.numpy() * (float(total) + 1e-6) / float(total), rtol=1e-13)
