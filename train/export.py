"""Copy a trained weights file into the served package, with its calibration in the metadata.

Usage::

    python -m train.export --weights runs/tcn1/best.npz --unit 0.45 --attack-offset-hops 1.5 \\
        --out server/dsp/weights/onset_tcn_v1.npz [--note "chosen on tune at step 12000"]

``unit`` is the activation that ``threshold`` 1.0 stands for (chosen on the corpus's ``tune`` split);
``attack_offset_hops`` is how far an onset lies before the end of the frame where the activation peaks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from server.dsp import nn


def export(weights: Path, out: Path, unit: float, attack_offset_hops: float, note: str = "") -> nn.Net:
    """Write ``weights`` to ``out`` with ``unit``, ``attack_offset_hops`` and ``note`` in its metadata."""
    with np.load(weights, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    net = nn.net_from_arrays(arrays)
    meta = net.meta | {"unit": unit, "attack_offset_hops": attack_offset_hops}
    if note:
        meta["note"] = note
    meta.pop("format", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    nn.save_net(out, {k: v for k, v in arrays.items() if k != "meta"}, meta)
    return nn.net_from_arrays(dict(np.load(out, allow_pickle=False)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--unit", type=float, required=True)
    parser.add_argument("--attack-offset-hops", type=float, required=True)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    net = export(args.weights, args.out, args.unit, args.attack_offset_hops, args.note)
    print(f"{args.out}: {net.n_parameters} parameters, {args.out.stat().st_size} bytes, meta {net.meta}")


if __name__ == "__main__":
    main()
