"""DCRNN adapter: graph semantics (supports, locality, equivariance), learning, windows, loss, ONNX."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from veml.adapters.dcrnn import DCRNN, DiffusionGRUCell, diffusion_supports, make_windows, masked_mae_loss  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny (8 sensors), so intra-op threads only add overhead: on a busy 2-core box
    one thread is ~5x faster. Restored afterwards so other test files keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def path_graph(n: int, forward: float = 1.0, backward: float = 0.5) -> np.ndarray:
    a = np.zeros((n, n))
    for i in range(n - 1):
        a[i, i + 1], a[i + 1, i] = forward, backward
    return a


def two_components() -> np.ndarray:
    """Sensors 0-4 form a directed-ish path; 5-7 a separate path; nothing links the two."""
    a = np.zeros((8, 8))
    a[:5, :5] = path_graph(5)
    a[5:, 5:] = path_graph(3)
    return a


def make_model(adjacency: np.ndarray, seed: int = 0, **kw) -> DCRNN:
    torch.manual_seed(seed)
    kw = {"hidden": 8, "layers": 2, "diffusion_steps": 2, "horizon": 4} | kw
    return DCRNN(diffusion_supports(adjacency), **kw).eval()


def synthetic_speeds(n: int = 8, t: int = 480, seed: int = 0, missing: float = 0.03) -> np.ndarray:
    """Speeds around 60 mph: a 'daily' cycle of 48 steps plus a faster cycle, noise and 0-mph dropouts."""
    rng = np.random.default_rng(seed)
    steps = np.arange(t)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)
    s = 60 + 8 * np.sin(2 * np.pi * steps / 48 + 0.3 * phase) + 3 * np.sin(2 * np.pi * steps / 12 + phase)
    s = s + rng.normal(0, 0.5, (t, n))
    s[rng.random((t, n)) < missing] = 0.0
    return s.astype(np.float32)


# --- supports ---------------------------------------------------------------------------------------

def test_supports_are_row_stochastic_where_degree_positive():
    a = path_graph(5)
    a[2, 4] = 3.0  # weighted, asymmetric
    a[4, :] = 0.0  # node 4 has no out-edges
    fwd, bwd = diffusion_supports(a)
    assert fwd.dtype == np.float32 and fwd.shape == bwd.shape == (5, 5)
    out_deg, in_deg = a.sum(1), a.sum(0)
    np.testing.assert_allclose(fwd.sum(1)[out_deg > 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(bwd.sum(1)[in_deg > 0], 1.0, rtol=1e-6)
    assert np.all(fwd[4] == 0) and np.isfinite(fwd).all()
    np.testing.assert_allclose(fwd[2], a[2] / a[2].sum(), rtol=1e-6)
    has_in = in_deg > 0
    np.testing.assert_allclose(bwd[has_in], (a.T / np.where(has_in, in_deg, 1)[:, None])[has_in], rtol=1e-6)  # D_in^-1 A^T
    (rw,) = diffusion_supports(a, "random_walk")
    np.testing.assert_array_equal(rw, fwd)
    (eye,) = diffusion_supports(np.zeros((3, 3)), "identity")
    np.testing.assert_array_equal(eye, np.eye(3, dtype=np.float32))


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), -np.ones((3, 3)), np.full((2, 2), np.nan)])
def test_supports_reject_bad_adjacency(bad):
    with pytest.raises(ValueError):
        diffusion_supports(bad)
    with pytest.raises(ValueError):
        diffusion_supports(np.ones((2, 2)), "laplacian")


# --- model shapes, buffers, determinism -------------------------------------------------------------

def test_shapes_buffers_and_determinism():
    m = make_model(two_components(), hidden=8, horizon=5)
    x = torch.randn(3, 7, 8, 1)
    y = m(x)
    assert y.shape == (3, 5, 8, 1)
    assert m.encode(x).shape == (3, 8 * 8)
    sd = m.state_dict()
    assert sd["supports"].shape == (2, 8, 8)  # saved with the weights
    assert "supports" not in dict(m.named_parameters())
    again = make_model(two_components(), hidden=8, horizon=5)
    torch.testing.assert_close(again(x), y, rtol=0, atol=0)
    multi = DCRNN(torch.eye(8), in_dim=2, out_dim=3, hidden=4, layers=1, horizon=2)
    assert multi(torch.randn(2, 3, 8, 2)).shape == (2, 2, 8, 3)
    with pytest.raises(ValueError):
        m(torch.randn(2, 7, 9, 1))  # wrong number of sensors
    with pytest.raises(ValueError):
        DCRNN([])


def test_permuting_sensors_and_graph_permutes_forecast():
    rng = np.random.default_rng(1)
    a = (rng.random((8, 8)) < 0.35) * rng.uniform(0.2, 1.0, (8, 8))
    np.fill_diagonal(a, 0)
    perm = rng.permutation(8)
    m = make_model(a)
    mp = make_model(a[perm][:, perm], seed=123)  # different init, then same weights loaded
    weights = {k: v for k, v in m.state_dict().items() if k != "supports"}
    mp.load_state_dict(weights | {"supports": mp.supports})
    x = torch.randn(4, 6, 8, 1)
    with torch.no_grad():
        torch.testing.assert_close(mp(x[:, :, perm]), m(x)[:, :, perm], rtol=1e-5, atol=1e-5)
        emb, emb_p = m.encode(x).view(4, 8, -1), mp.encode(x[:, :, perm]).view(4, 8, -1)
        torch.testing.assert_close(emb_p, emb[:, perm], rtol=1e-5, atol=1e-5)


# --- locality of information flow -------------------------------------------------------------------

def _response(model: DCRNN, sensor: int) -> torch.Tensor:
    """Per-sensor max change of the forecast when one sensor's input history is perturbed."""
    x = torch.randn(2, 6, model.num_sensors, 1, generator=torch.Generator().manual_seed(5))
    x2 = x.clone()
    x2[:, :, sensor] += 3.0
    with torch.no_grad():
        return (model(x2) - model(x)).abs().amax(dim=(0, 1, 3))


@pytest.mark.parametrize("kind", ["identity", "dual_random_walk"])
def test_graph_without_edges_keeps_sensors_independent(kind):
    torch.manual_seed(0)
    m = DCRNN(diffusion_supports(np.zeros((6, 6)), kind), hidden=8, layers=2, horizon=4).eval()
    delta = _response(m, 3)
    assert delta[3] > 1e-3
    assert torch.all(delta[[0, 1, 2, 4, 5]] == 0)


def test_connected_graph_propagates_to_neighbours_only_within_component():
    delta = _response(make_model(two_components()), 0)
    assert torch.all(delta[:5] > 1e-6)  # whole path reached after enough steps (2 hops/step/layer)
    assert torch.all(delta[5:] == 0)  # other component untouched


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_one_cell_step_reaches_exactly_k_hops(k):
    sup = torch.as_tensor(np.stack(diffusion_supports(path_graph(7))))
    torch.manual_seed(0)
    cell = DiffusionGRUCell(1, 4, num_supports=2, diffusion_steps=k)
    x, h = torch.randn(1, 7, 1), torch.zeros(1, 7, 4)
    x2 = x.clone()
    x2[0, 3] += 2.0
    with torch.no_grad():
        delta = (cell(x2, h, sup) - cell(x, h, sup)).abs().amax(dim=(0, 2))
    reached = delta > 0
    assert reached.tolist() == [abs(i - 3) <= k for i in range(7)]


# --- training ---------------------------------------------------------------------------------------

def test_training_halves_masked_mae_on_synthetic_speeds():
    series = synthetic_speeds()
    observed = series[series != 0]
    mu, sd = float(observed.mean()), float(observed.std())  # z-score inputs, score in mph (as DCRNN)
    x, y = make_windows(series, history=12, horizon=6, stride=2)
    xn, yt = torch.from_numpy((x - mu) / sd), torch.from_numpy(y)
    assert (yt == 0).any()  # there are dropouts to ignore
    torch.manual_seed(0)
    model = DCRNN(diffusion_supports(path_graph(8)), hidden=16, layers=2, diffusion_steps=2, horizon=6)

    def full_mae() -> float:
        with torch.no_grad():
            return masked_mae_loss(model(xn) * sd + mu, yt).item()

    before = full_mae()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    order = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randperm(len(xn), generator=order)[:32]
        loss = masked_mae_loss(model(xn[idx]) * sd + mu, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = full_mae()
    assert after * 2 <= before, (before, after)


# --- loss and windows -------------------------------------------------------------------------------

def test_masked_mae_ignores_missing_entries():
    target = torch.tensor([[1.0, 0.0, 3.0, float("nan")]])
    pred = torch.tensor([[2.0, 100.0, 1.0, 7.0]], requires_grad=True)
    loss = masked_mae_loss(pred, target)
    assert loss.item() == pytest.approx(1.5)  # (|2-1| + |1-3|) / 2
    loss.backward()
    assert pred.grad.tolist() == [[0.5, 0.0, -0.5, 0.0]]
    assert masked_mae_loss(pred, target, missing_value=None).item() == pytest.approx(103 / 3)
    assert masked_mae_loss(pred, torch.tensor([[5.0, 0.0, 5.0, 5.0]]), missing_value=5.0).item() == pytest.approx(100)
    empty = masked_mae_loss(pred, torch.zeros(1, 4))
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    with pytest.raises(ValueError):
        masked_mae_loss(pred, torch.zeros(4))


def test_make_windows_counts_and_alignment():
    t, n = 30, 3
    series = np.arange(t * n, dtype=np.float64).reshape(t, n)  # value encodes (time, sensor)
    x, y = make_windows(series, history=5, horizon=4)
    assert x.shape == (22, 5, 3, 1) and y.shape == (22, 4, 3, 1)
    assert x.dtype == y.dtype == np.float32
    for i in (0, 7, 21):
        np.testing.assert_array_equal(x[i, :, :, 0], series[i:i + 5])
        np.testing.assert_array_equal(y[i, :, :, 0], series[i + 5:i + 9])
        assert y[i, 0, 0, 0] == x[i, -1, 0, 0] + n  # Y starts right after X ends
    xs, ys = make_windows(series, 5, 4, stride=3)
    assert len(xs) == len(ys) == 8  # starts 0, 3, ..., 21
    np.testing.assert_array_equal(xs[2, :, :, 0], series[6:11])
    xe, ye = make_windows(series[:8], 5, 4)
    assert xe.shape == (0, 5, 3, 1) and ye.shape == (0, 4, 3, 1)
    with pytest.raises(ValueError):
        make_windows(series[:, 0], 5, 4)


# --- ONNX -------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo=False is the legacy exporter, on purpose
def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m = make_model(two_components(), hidden=8, horizon=3)
    path = tmp_path / "dcrnn.onnx"
    torch.onnx.export(m, (torch.randn(2, 6, 8, 1),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 6, 8, 1)  # a different batch size than at export time
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = m(x).numpy()
    assert got.shape == want.shape == (5, 3, 8, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
