"""The learned onset detector's network in torch, and its export to the served numpy weights.

The same network as :mod:`server.dsp.nn`: a 1x1 input layer, residual dilated causal convolutions
(kernel 3) and a 1x1 output. Inputs are standardised with fixed per-feature statistics of the training set;
the export folds them into the input layer. Each layer's past before the first frame is the network's
response to silent (all-zero) features, as a new stream's state in the server.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

DILATIONS = (1, 2, 4, 8, 16)
HIDDEN = 32


class OnsetTCN(nn.Module):
    """Causal TCN: features (batch, n_features, frames) to onset logits (batch, frames)."""

    def __init__(
        self,
        n_features: int,
        hidden: int = HIDDEN,
        dilations: tuple[int, ...] = DILATIONS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dropout = dropout  # on each residual branch while training; the served network has none
        self.dilations = tuple(dilations)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.inp = nn.Conv1d(n_features, hidden, 1)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, dilation=d) for d in self.dilations)
        self.out = nn.Conv1d(hidden, 1, 1)

    @property
    def receptive_field(self) -> int:
        """Frames of the past (including the current one) each output depends on."""
        return 1 + 2 * sum(self.dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean[None, :, None], self.std[None, :, None]
        h = functional.relu(self.inp((x - mean) / std))
        silent = functional.relu(self.inp((torch.zeros_like(x[:1, :, :1]) - mean) / std))  # (1, hidden, 1)
        for dilation, conv in zip(self.dilations, self.convs, strict=True):
            past = 2 * dilation
            padded = torch.cat([silent.expand(h.shape[0], -1, past), h], dim=2)
            h = h + functional.dropout(functional.relu(conv(padded)), self.dropout, self.training)
            silent = silent + functional.relu(conv(silent.expand(-1, -1, past + 1)))
        return self.out(h)[:, 0, :]  # type: ignore[no-any-return]


def export_arrays(model: OnsetTCN) -> dict[str, Any]:
    """The model's weights as the float32 arrays of :func:`server.dsp.nn.save_net`."""
    with torch.no_grad():
        std = model.std.double().numpy()
        mean = model.mean.double().numpy()
        w_in = model.inp.weight[:, :, 0].double().numpy() / std[None, :]
        b_in = model.inp.bias.double().numpy() - w_in @ mean
        arrays: dict[str, Any] = {
            "w_in": w_in.astype(np.float32),
            "b_in": b_in.astype(np.float32),
            "w_out": model.out.weight[:, :, 0].numpy().astype(np.float32),
            "b_out": model.out.bias.numpy().astype(np.float32),
            "dilations": np.asarray(model.dilations, dtype=np.int64),
        }
        for index, conv in enumerate(model.convs):
            weight = conv.weight.numpy()  # (out, in, 3): tap 2 is frame t, tap 1 is t - d, tap 0 is t - 2d
            arrays[f"w_{index}"] = np.concatenate([weight[:, :, 2], weight[:, :, 1], weight[:, :, 0]], axis=1)
            arrays[f"b_{index}"] = conv.bias.numpy().astype(np.float32)
    return arrays
