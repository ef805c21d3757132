"""Copy a trained weights file into the served package, with its calibration in the metadata.

Usage::

    python -m train.export --weights runs/tcn2/best.npz [--checkpoint runs/tcn2/last.pt] \\
        --unit 0.2 --attack-offset-hops 1.0 [--mask-ratio 0.6 --mask-ms 800] \
        --out server/dsp/weights/onset_tcn_v2.npz [--note "..."]

``unit`` is the activation that ``threshold`` 1.0 stands for (chosen on the corpus's ``tune`` split);
``attack_offset_hops`` is how far an onset lies before the end of the frame where the activation peaks;
``mask_ratio`` and ``mask_ms`` are the peak picker's forward mask (:func:`server.dsp.peaks.decaying_mask`,
0: none). They are constants of :mod:`server.dsp.neural`; the metadata records what they were chosen as.
With ``--checkpoint``, the network is the model of that training checkpoint (e.g. the run's last one, at the
end of its learning-rate decay) instead of ``best.npz``'s; ``best.npz`` of the same run still gives the
run's metadata (command, seed, features), with the checkpoint's step and minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from server.dsp import nn


def checkpoint_arrays(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The served arrays of a training checkpoint's model, and its step and minutes (needs torch)."""
    import torch

    from train.model import DILATIONS, OnsetTCN, export_arrays

    state = torch.load(checkpoint, weights_only=False)
    args = state["args"]
    model = OnsetTCN(state["model"]["mean"].shape[0], args["hidden"], DILATIONS, args["dropout"])
    model.load_state_dict(state["model"])
    model.eval()
    return export_arrays(model), {"step": state["step"], "minutes": round(state["minutes"], 2)}


def export(
    weights: Path,
    out: Path,
    unit: float,
    attack_offset_hops: float,
    note: str = "",
    checkpoint: Path | None = None,
    mask_ratio: float = 0.0,
    mask_ms: float = 0.0,
) -> nn.Net:
    """Write ``weights`` (or ``checkpoint``'s model) to ``out`` with ``unit``, ``attack_offset_hops``,
    ``mask_ratio``, ``mask_ms`` and ``note`` in its metadata."""
    with np.load(weights, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = nn.net_from_arrays(arrays).meta | {
        "unit": unit,
        "attack_offset_hops": attack_offset_hops,
        "mask_ratio": mask_ratio,
        "mask_ms": mask_ms,
    }
    arrays = {k: v for k, v in arrays.items() if k != "meta"}
    if checkpoint is not None:
        dilations = arrays["dilations"]
        arrays, progress = checkpoint_arrays(checkpoint)
        if not np.array_equal(arrays["dilations"], dilations):
            raise ValueError(f"{checkpoint} is not of the same network as {weights}")
        meta = {k: v for k, v in meta.items() if k not in ("tune_f", "tune_threshold")}
        meta |= progress | {"checkpoint": checkpoint.name}
    if note:
        meta["note"] = note
    meta.pop("format", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    nn.save_net(out, arrays, meta)
    return nn.net_from_arrays(dict(np.load(out, allow_pickle=False)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, required=True, help="the run's best.npz")
    parser.add_argument("--checkpoint", type=Path, help="serve this checkpoint's model (e.g. OUT/last.pt)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--unit", type=float, required=True)
    parser.add_argument("--attack-offset-hops", type=float, required=True)
    parser.add_argument("--mask-ratio", type=float, default=0.0, help="the picker's forward mask (0: none)")
    parser.add_argument("--mask-ms", type=float, default=0.0, help="its decay time, ms")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    net = export(
        args.weights,
        args.out,
        args.unit,
        args.attack_offset_hops,
        args.note,
        args.checkpoint,
        args.mask_ratio,
        args.mask_ms,
    )
    print(f"{args.out}: {net.n_parameters} parameters, {args.out.stat().st_size} bytes, meta {net.meta}")


if __name__ == "__main__":
    main()
