"""DCRNN-style graph-recurrent forecaster for traffic-sensor speeds (Li et al., ICLR 2018).

Every sensor runs the same GRU, but the GRU's matrix products are replaced by *diffusion
convolutions*: features are mixed over the sensor graph by repeated multiplication with random-walk
transition matrices, so congestion upstream can inform the forecast downstream. An encoder reads
``history`` steps, a decoder rolls out ``horizon`` steps feeding back its own predictions.

The module is deliberately export-friendly: the graph is a dense buffer (becomes an ONNX constant),
loops run a fixed number of times (history, horizon, layers, diffusion steps), and the decoder never
looks at targets, so ``torch.onnx.export(..., dynamo=False, opset_version=17)`` traces the very
computation used in training and onnxruntime reproduces it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from veml.adapters.onnx_run import make_windows

__all__ = ["diffusion_supports", "DiffusionGRUCell", "DCRNN", "make_windows", "masked_mae_loss"]


def _random_walk(adjacency: np.ndarray) -> np.ndarray:
    """``D^-1 A`` with D the row sums; rows of isolated nodes stay zero instead of dividing by 0."""
    degree = adjacency.sum(axis=1)
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return inv[:, None] * adjacency


def diffusion_supports(adjacency: np.ndarray, kind: str = "dual_random_walk") -> list[np.ndarray]:
    """Transition matrices that the diffusion convolution multiplies features with.

    ``dual_random_walk`` (DCRNN's default) gives forward ``D_out^-1 A`` and backward ``D_in^-1 A^T``
    walks, because traffic spreads both downstream and (as queues back up) upstream on a directed
    road graph. ``random_walk`` keeps only the forward walk; ``identity`` suits a graph with no edges,
    where every sensor can only see itself.
    """
    a = np.asarray(adjacency, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square (N, N), got shape {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("adjacency weights must be finite and non-negative")
    if kind == "dual_random_walk":
        mats = [_random_walk(a), _random_walk(a.T)]
    elif kind == "random_walk":
        mats = [_random_walk(a)]
    elif kind == "identity":
        mats = [np.eye(a.shape[0])]
    else:
        raise ValueError(f"unknown support kind {kind!r}; use dual_random_walk, random_walk or identity")
    return [m.astype(np.float32) for m in mats]


class DiffusionGRUCell(nn.Module):
    """GRU cell whose input/hidden transforms are K-step diffusion convolutions over the graph.

    For each support ``S`` the features ``[X, S X, S^2 X, ..., S^K X]`` are concatenated (plain powers,
    not DCRNN's Chebyshev-like recursion, which only re-parameterises the same span) and a single
    node-shared linear map produces the gates or candidate. Weights therefore do not depend on the
    number of sensors, which is what makes the model permutation-equivariant and graph-transferable.
    """

    def __init__(self, in_dim: int, hidden: int, num_supports: int, diffusion_steps: int) -> None:
        super().__init__()
        if min(in_dim, hidden, num_supports) < 1 or diffusion_steps < 0:
            raise ValueError("need in_dim, hidden, num_supports >= 1 and diffusion_steps >= 0")
        self.hidden, self.num_supports, self.diffusion_steps = hidden, num_supports, diffusion_steps
        n_mats = 1 + num_supports * diffusion_steps
        self.gates = nn.Linear((in_dim + hidden) * n_mats, 2 * hidden)
        self.candidate = nn.Linear((in_dim + hidden) * n_mats, hidden)
        for lin in (self.gates, self.candidate):
            nn.init.xavier_uniform_(lin.weight)
        # Bias 1 on the gates (as in DCRNN): starts with "keep the old state", which stabilises early training.
        nn.init.constant_(self.gates.bias, 1.0)
        nn.init.zeros_(self.candidate.bias)

    def diffuse(self, x: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C * (1 + num_supports * K)); dense matmuls only, for ONNX."""
        feats = [x]
        for s in range(self.num_supports):
            xk = x
            for _ in range(self.diffusion_steps):
                xk = torch.matmul(supports[s], xk)
                feats.append(xk)
        return torch.cat(feats, dim=-1)

    def forward(self, x: torch.Tensor, h: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
        """One step: x (B, N, in_dim), h (B, N, hidden), supports (S, N, N) -> new h (B, N, hidden)."""
        r, u = torch.sigmoid(self.gates(self.diffuse(torch.cat([x, h], dim=-1), supports))).chunk(2, dim=-1)
        c = torch.tanh(self.candidate(self.diffuse(torch.cat([x, r * h], dim=-1), supports)))
        return u * h + (1.0 - u) * c


class DCRNN(nn.Module):
    """Sequence-to-sequence diffusion-convolutional recurrent network.

    ``x`` is (batch, history, sensors, in_dim); the output is (batch, horizon, sensors, out_dim).
    The decoder starts from a zero GO symbol and feeds back its own projected prediction — no teacher
    forcing or scheduled sampling, so training, inference and the exported graph are identical.
    """

    def __init__(self, supports: list[np.ndarray] | torch.Tensor, in_dim: int = 1, hidden: int = 32,
                 layers: int = 2, diffusion_steps: int = 2, horizon: int = 12, out_dim: int = 1) -> None:
        super().__init__()
        sup = self._stack_supports(supports)
        if min(in_dim, hidden, layers, horizon, out_dim) < 1:
            raise ValueError("in_dim, hidden, layers, horizon and out_dim must be >= 1")
        # A buffer, not a parameter: saved in state_dict, moved by .to(), baked into ONNX as a constant.
        self.register_buffer("supports", sup)
        self.num_sensors, self.hidden, self.horizon, self.out_dim = sup.shape[1], hidden, horizon, out_dim
        s = sup.shape[0]
        self.encoder = nn.ModuleList(
            DiffusionGRUCell(in_dim if i == 0 else hidden, hidden, s, diffusion_steps) for i in range(layers))
        self.decoder = nn.ModuleList(
            DiffusionGRUCell(out_dim if i == 0 else hidden, hidden, s, diffusion_steps) for i in range(layers))
        self.projection = nn.Linear(hidden, out_dim)

    @staticmethod
    def _stack_supports(supports: list[np.ndarray] | torch.Tensor) -> torch.Tensor:
        if isinstance(supports, torch.Tensor):
            sup = supports.detach().to(torch.float32)
            sup = sup.unsqueeze(0) if sup.dim() == 2 else sup
        else:
            if len(supports) == 0:
                raise ValueError("need at least one support matrix")
            sup = torch.as_tensor(np.stack([np.asarray(m, dtype=np.float32) for m in supports]))
        if sup.dim() != 3 or sup.shape[1] != sup.shape[2] or sup.shape[0] < 1:
            raise ValueError(f"supports must be (S, N, N) or a list of (N, N), got shape {tuple(sup.shape)}")
        return sup.clone().contiguous()

    def _check(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are symbolic during export; checked at the eager call
            return
        if x.dim() != 4 or x.shape[2] != self.num_sensors:
            raise ValueError(f"x must be (batch, history, {self.num_sensors}, in_dim), got {tuple(x.shape)}")

    def _encode_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder over all history steps; returns the final hidden state of every layer."""
        self._check(x)
        h0 = x.new_zeros((x.shape[0], x.shape[2], self.hidden))
        states = [h0 for _ in self.encoder]
        for t in range(x.shape[1]):  # history length is fixed for a given input shape
            inp = x[:, t]
            for i, cell in enumerate(self.encoder):
                states[i] = cell(inp, states[i], self.supports)
                inp = states[i]
        return states

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Top-layer final encoder state flattened to (batch, sensors * hidden): a window embedding."""
        return self._encode_states(x)[-1].flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = self._encode_states(x)
        inp = x.new_zeros((x.shape[0], x.shape[2], self.out_dim))  # GO symbol
        outputs = []
        for _ in range(self.horizon):
            for i, cell in enumerate(self.decoder):
                states[i] = cell(inp, states[i], self.supports)
                inp = states[i]
            inp = self.projection(inp)
            outputs.append(inp)
        return torch.stack(outputs, dim=1)


def masked_mae_loss(pred: torch.Tensor, target: torch.Tensor, missing_value: float | None = 0.0) -> torch.Tensor:
    """Mean absolute error over observed entries only.

    METR-LA stores dropped-out sensor readings as 0 mph; scoring those would teach the model to
    predict outages, so entries equal to ``missing_value`` (or NaN, always treated as missing) are
    excluded. ``missing_value=None`` masks only NaNs. With nothing observed the result is a zero that
    is still connected to ``pred``, so ``backward()`` works and contributes no gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    mask = ~torch.isnan(target)
    if missing_value is not None and not np.isnan(missing_value):
        mask = mask & (target != missing_value)
    # where() before abs(): masked entries (even NaN targets) get exactly zero value and zero gradient.
    diff = torch.where(mask, pred - target, torch.zeros_like(pred))
    return diff.abs().sum() / mask.sum().clamp_min(1).to(pred.dtype)
