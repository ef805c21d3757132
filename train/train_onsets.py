"""Train the learned onset detector (torch, CPU), seeded and resumable.

Usage::

    python -m train.train_onsets --corpus /work/corpus --out runs/tcn1 [--minutes 45] [--seed 1]
    python -m train.train_onsets --synthetic --out /tmp/tiny --steps 20   # no corpus: testkit/signals.py

Trains on the corpus's ``train`` split only; picks the checkpoint (and reports a threshold) by mean F on
``tune``. ``valid`` is never read. Writes into ``--out``:

- ``last.pt``: model, optimiser, step, random states and history, every ``--checkpoint-minutes``
  (a rerun with the same ``--out`` resumes from it);
- ``best.npz``: the served weights (:func:`server.dsp.nn.save_net`) of the best ``tune`` score so far;
- ``history.jsonl``: one line per evaluation.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from server.dsp import neural_features as nf
from server.dsp import nn as served_nn
from train import augment as band_augment
from train import features as feats
from train.model import DILATIONS, HIDDEN, OnsetTCN, export_arrays

EVAL_THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
PRE_MAX_FRAMES = 3  # a peak is the maximum of the last 30 ms ...
LOOKAHEAD_FRAMES = 1  # ... and of the next 10 ms
MIN_INTERVAL_S = 0.03


def pick(activation: np.ndarray, threshold: float, hop_s: float, lead_frames: int) -> np.ndarray:
    """Onset times (seconds from the clip start) of an activation: thresholded local maxima."""
    padded = np.concatenate([np.zeros(PRE_MAX_FRAMES), activation, np.zeros(LOOKAHEAD_FRAMES)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, PRE_MAX_FRAMES + LOOKAHEAD_FRAMES + 1)
    peaks = np.flatnonzero((activation >= windows.max(axis=1)) & (activation >= threshold))
    times = (peaks - lead_frames - feats.TARGET_DELAY_FRAMES + 0.5) * hop_s
    kept: list[float] = []
    for t in times:
        if not kept or t - kept[-1] >= MIN_INTERVAL_S:
            kept.append(float(t))
    return np.asarray(kept)


def evaluate(model: OnsetTCN, examples: list[feats.Example]) -> dict[str, Any]:
    """Mean F (±50 ms) over clips at each of ``EVAL_THRESHOLDS``, the best, and the loss."""
    import mir_eval

    model.eval()
    scores = np.zeros((len(examples), len(EVAL_THRESHOLDS)))
    losses = []
    with torch.no_grad():
        for row, example in enumerate(examples):
            logits = model(torch.from_numpy(example.features)[None])[0]
            losses.append(
                float(functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(example.targets)))
            )
            activation = torch.sigmoid(logits).numpy()
            for col, threshold in enumerate(EVAL_THRESHOLDS):
                found = pick(activation, threshold, example.hop_s, example.lead_frames)
                if len(example.onsets_s) == 0 and len(found) == 0:
                    scores[row, col] = 1.0
                elif len(example.onsets_s) and len(found):
                    scores[row, col] = mir_eval.onset.f_measure(example.onsets_s, found, window=0.05)[0]
    model.train()
    means = scores.mean(axis=0)
    best = int(np.argmax(means))
    return {
        "f": float(means[best]),
        "threshold": EVAL_THRESHOLDS[best],
        "loss": float(np.mean(losses)),
        "f_by_threshold": [round(float(m), 4) for m in means],
    }


def synthetic_examples(seed: int, count: int) -> list[feats.Example]:
    """Small examples from ``testkit/signals.py`` (development and the tiny-run test; no corpus needed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from testkit import signals

    makers = (signals.clicks, signals.drums, signals.plucks, signals.chords, signals.soft_attacks)
    examples = []
    for k in range(count):
        made = makers[k % len(makers)](sr=(22050, 44100, 16000)[k % 3], duration_s=3.0, seed=seed + k)
        examples.append(
            feats.make_example(f"synthetic-{k}", made.samples, made.sample_rate, made.onsets_s, made.group)
        )
    return examples


TUNE_CAP = 60  # the tune set stops growing at this many clips, so scores stay comparable


def grow(
    corpus: Path,
    cache: Path,
    seed: int,
    limit: int | None,
    train: list[feats.Example],
    tune: list[feats.Example],
) -> int:
    """Add the clips of ``corpus`` not yet in ``train`` or ``tune`` (the corpus grows while we train).

    Training clips come as rendered and at one lower gain; tune clips as rendered, up to ``TUNE_CAP``.
    A clip whose files cannot be read yet is skipped until the next call. Returns how many were added.
    """
    added = 0
    known = {e.clip_id for e in train} | {e.clip_id for e in tune}
    for split, target, cap in (("train", train, limit), ("tune", tune, min(limit or TUNE_CAP, TUNE_CAP))):
        rows = [row for row in feats.iter_rows(corpus, split) if row["clip_id"] not in known]
        for row in rows:
            if cap is not None and len({e.clip_id for e in target}) >= cap:
                break
            gains = feats.clip_gains(row["clip_id"], seed) if split == "train" else [0.0]
            try:
                target += [feats.load_example(corpus, row, cache, gain) for gain in gains]
            except (OSError, RuntimeError, ValueError) as exc:  # still being written
                print(f"skipping {row['clip_id']} for now: {exc}", flush=True)
                continue
            added += 1
    return added


def feature_stats(examples: list[feats.Example]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (at least 1e-2) over every frame of ``examples``."""
    total = sum(e.features.shape[1] for e in examples)
    mean = sum(e.features.sum(axis=1, dtype=np.float64) for e in examples) / total
    square = sum(np.square(e.features, dtype=np.float64).sum(axis=1) for e in examples) / total
    std = np.sqrt(np.maximum(square - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-2).astype(np.float32)


def augment(log_rows: np.ndarray, rng: np.random.Generator, recording: bool = True) -> np.ndarray:
    """A crop's log band rows (frames, bands) at a random gain and with a random run of bands silenced.

    With ``recording``, first through :func:`train.augment.recording` (room tail, compressor, EQ tilt, noise,
    DC and rumble, each at random). ``log10(1 + LOG_GAIN * g * band)`` follows exactly from
    ``log10(1 + LOG_GAIN * band)``; a silenced band run (frequency masking) reads 0, as silence does.
    """
    if recording:
        log_rows = band_augment.recording(log_rows, rng)
    gain = 10.0 ** (rng.uniform(-24.0, 6.0) / 20.0)
    rows = np.log10(1.0 + gain * (10.0 ** log_rows.astype(np.float64) - 1.0)).astype(np.float32)
    if rng.random() < 0.5:
        width = int(rng.integers(1, 13))
        first = int(rng.integers(0, rows.shape[1] - width))
        rows[:, first : first + width] = 0.0
    return rows


def batch(
    examples: list[feats.Example],
    rng: np.random.Generator,
    size: int,
    frames: int,
    augmented: bool = True,
    recording: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` random crops of ``frames`` frames (shorter clips are padded with silent features).

    With ``augmented``, each crop's log bands go through :func:`augment` (with ``recording``: also the
    recording chain of :mod:`train.augment`) and its rise features are made
    again from them by the server's own :func:`~server.dsp.neural_features.feature_columns`.
    """
    n_features = examples[0].features.shape[0]
    bands = n_features // (1 + len(nf.RISE_LAGS))
    past = max(nf.RISE_LAGS)
    x = np.zeros((size, n_features, frames), dtype=np.float32)
    y = np.zeros((size, frames), dtype=np.float32)
    for row, index in enumerate(rng.integers(0, len(examples), size)):
        example = examples[index]
        length = example.features.shape[1]
        start = int(rng.integers(past, max(past + 1, length - frames + 1)))
        stop = min(length, start + frames)
        if augmented:
            rows = augment(example.features[:bands, start - past : stop].T, rng, recording)
            lagged = [rows[past - lag : len(rows) - lag] for lag in nf.RISE_LAGS]
            x[row, :, : stop - start] = nf.feature_columns(rows[past:], lagged)
        else:
            x[row, :, : stop - start] = example.features[:, start:stop]
        y[row, : stop - start] = example.targets[start:stop]
    return torch.from_numpy(x), torch.from_numpy(y)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, help="corpus folder with MANIFEST.tsv and train/ tune/")
    parser.add_argument("--synthetic", action="store_true", help="train on testkit/signals.py instead")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, help="feature cache (default: OUT/cache)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=45.0, help="stop after this much wall time")
    parser.add_argument("--steps", type=int, default=10**9, help="stop after this many steps in all")
    parser.add_argument("--limit", type=int, help="use at most this many clips per split (quick runs)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=400, help="crop length, frames")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    parser.add_argument(
        "--no-recording",
        action="store_true",
        help="no recording chain (room tail, compressor, EQ tilt, noise, DC/rumble): gain and masking only",
    )
    parser.add_argument("--eval-every", type=int, default=500, help="steps between evaluations on tune")
    parser.add_argument("--checkpoint-minutes", type=float, default=3.0)
    parser.add_argument(
        "--refresh-minutes", type=float, default=5.0, help="look for new corpus clips this often"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)"
    )
    args = parser.parse_args(argv)
    if not args.synthetic and args.corpus is None:
        parser.error("give --corpus or --synthetic")

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.synthetic:
        train, tune = synthetic_examples(args.seed, 10), synthetic_examples(args.seed + 1000, 5)
    else:
        train, tune = [], []
        grow(args.corpus, args.cache or args.out / "cache", args.seed, args.limit, train, tune)
    print(
        f"{len(train)} training and {len(tune)} tune examples ready after {time.monotonic() - started:.0f} s",
        flush=True,
    )

    model = OnsetTCN(train[0].features.shape[0], args.hidden, DILATIONS, args.dropout)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    step, best, history, minutes_before = 0, {"f": -1.0}, [], 0.0
    last = args.out / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, best, history = state["step"], state["best"], state["history"]
        minutes_before = state.get("minutes", 0.0)
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}, best tune F {best['f']:.4f}", flush=True)
    else:
        mean, std = feature_stats(train)
        model.mean.copy_(torch.from_numpy(mean))
        model.std.copy_(torch.from_numpy(std))

    warm = model.receptive_field - 1  # frames whose past in the crop is incomplete get no loss
    meta = {
        "command": " ".join(sys.argv),
        "seed": args.seed,
        "target_delay_frames": feats.TARGET_DELAY_FRAMES,
        "hidden": args.hidden,
        "dilations": list(DILATIONS),
        "dropout": args.dropout,
        "weight_decay": args.weight_decay,
        "augment": not args.no_augment,
        "recording_augment": not args.no_augment and not args.no_recording,
        "corpus": str(args.corpus) if args.corpus else "synthetic",
        "train_clips": len(train),
        "tune_clips": len(tune),
    }

    def save_checkpoint() -> None:
        tmp = last.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "step": step,
                "best": best,
                "history": history,
                "minutes": minutes_done(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "args": vars(args)
                | {"out": str(args.out), "corpus": str(args.corpus), "cache": str(args.cache)},
            },
            tmp,
        )
        tmp.replace(last)

    last_checkpoint = last_refresh = time.monotonic()
    deadline = started + 60.0 * max(0.0, args.minutes - minutes_before)  # the budget spans resumes

    def minutes_done() -> float:
        return minutes_before + (time.monotonic() - started) / 60.0

    running = 0.0
    while step < args.steps and time.monotonic() < deadline:
        for group in optimiser.param_groups:  # linear decay over the time budget, to 5 %
            group["lr"] = args.lr * max(0.05, 1.0 - minutes_done() / args.minutes)
        x, y = batch(train, rng, args.batch, args.frames, not args.no_augment, not args.no_recording)
        logits = model(x)
        loss = functional.binary_cross_entropy_with_logits(logits[:, warm:], y[:, warm:])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step > 1 else value
        if step % args.eval_every == 0 or step == args.steps:
            result = evaluate(model, tune) | {
                "step": step,
                "train_loss": round(running, 5),
                "minutes": round(minutes_done(), 2),
            }
            history.append(result)
            with open(args.out / "history.jsonl", "a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)
            if result["f"] > best["f"]:
                best = result
                served_nn.save_net(
                    args.out / "best.npz",
                    export_arrays(model),
                    meta | {"step": step, "tune_f": result["f"], "tune_threshold": result["threshold"]},
                )
        if not args.synthetic and time.monotonic() - last_refresh > 60.0 * args.refresh_minutes:
            tune_before = len(tune)
            added = grow(args.corpus, args.cache or args.out / "cache", args.seed, args.limit, train, tune)
            last_refresh = time.monotonic()
            if added:
                print(f"added {added} clips: {len(train)} training and {len(tune)} tune examples", flush=True)
            if len(tune) != tune_before:
                best = {"f": -1.0}  # scores on a larger tune set are not comparable with the old best
        if time.monotonic() - last_checkpoint > 60.0 * args.checkpoint_minutes:
            save_checkpoint()
            last_checkpoint = time.monotonic()
    save_checkpoint()
    print(f"stopped at step {step}; best tune F {best['f']:.4f} at step {best.get('step')}", flush=True)
    return best


if __name__ == "__main__":
    main()
