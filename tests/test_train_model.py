"""The learned detector's training side: numpy serving agrees with torch, and a tiny training run works.

Needs the ``train`` extra (torch); skipped without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from server.dsp import neural, nn  # noqa: E402
from server.dsp import neural_features as nf  # noqa: E402
from testkit import signals  # noqa: E402
from train import features as train_features  # noqa: E402
from train.model import OnsetTCN, export_arrays  # noqa: E402
from train.train_onsets import main as train_main  # noqa: E402


def random_model(n_features: int, seed: int) -> OnsetTCN:
    """A model with seeded, non-trivial weights and input statistics."""
    torch.manual_seed(seed)
    model = OnsetTCN(n_features, hidden=16, dilations=(1, 2, 4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
        model.mean.uniform_(0.0, 1.0)
        model.std.uniform_(0.5, 2.0)
    return model


def exported(model: OnsetTCN, folder: Path) -> nn.Net:
    path = folder / "weights.npz"
    nn.save_net(path, export_arrays(model), {"test": True})
    return nn.net_from_arrays(dict(np.load(path, allow_pickle=False)))


def test_numpy_network_matches_torch_on_fixed_inputs(tmp_path: Path) -> None:
    n_features = 40
    model = random_model(n_features, seed=3)
    net = exported(model, tmp_path)
    x = np.random.default_rng(5).uniform(0.0, 3.0, (n_features, 700)).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(x)[None]))[0].numpy()
    got = nn.run(net, x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5
    assert float(np.std(got)) > 0.05, "the activations must vary for the comparison to mean anything"
    # The silent past at the start is the network's response to all-zero features, in both.
    silent = np.zeros((n_features, 30), dtype=np.float32)
    with torch.no_grad():
        expected_silent = torch.sigmoid(model(torch.from_numpy(silent)[None]))[0].numpy()
    got_silent = nn.run(net, silent)
    assert np.abs(got_silent - expected_silent).max() < 1e-6
    assert np.ptp(got_silent) < 1e-6, "silence after silence gives a constant activation"


def test_the_method_step_equals_torch_on_the_training_features_in_any_chunks(tmp_path: Path) -> None:
    rate = 22050
    model = random_model(nf.n_features(), seed=4)
    net = exported(model, tmp_path)
    consts = neural.constants(nf.network_grid(rate), net)
    signal = signals.drums(rate, 3.0, seed=11)
    features, _ = nf.file_features(rate, signal.samples)  # what training sees
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(features)[None]))[0].numpy()
    rows, _ = nf.file_rows(rate, signal.samples)  # what the server's spectra give
    [whole], _ = neural.step_with(consts, [rows], [neural.initial_state_of(consts)])
    assert np.abs(whole * neural.UNIT - expected).max() < 1e-5
    # Three streams in one pass, in different random chunks: bitwise the one-call values.
    rng = np.random.default_rng(2)
    states = [neural.initial_state_of(consts) for _ in range(3)]
    parts: list[list[np.ndarray]] = [[], [], []]
    positions = [0, 0, 0]
    while min(positions) < len(rows):
        chunks = []
        for k in range(3):
            size = int(rng.integers(0, 40))
            chunks.append(rows[positions[k] : positions[k] + size])
            positions[k] += size
        odfs, states = neural.step_with(consts, chunks, states)
        for k in range(3):
            parts[k].append(odfs[k])
    for k in range(3):
        assert np.array_equal(np.concatenate(parts[k]), whole)


def test_targets_mark_the_frame_after_each_onset() -> None:
    hop, rate, lead = 441, 44100, 5
    targets = train_features.frame_targets(np.array([0.1, 0.5]), 80, hop, rate, lead)
    first = lead + round(0.1 * rate) // hop + train_features.TARGET_DELAY_FRAMES
    assert targets[first] == 1.0 and targets[first - 1] == 0.5 and targets[first + 1] == 0.5
    assert targets.sum() == pytest.approx(4.0)


def test_a_tiny_training_run_learns_saves_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--synthetic", "--out", str(out), "--batch", "4", "--frames", "200", "--eval-every", "15"]
    best = train_main([*common, "--steps", "30", "--seed", "3"])
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [15, 30]
    assert history[-1]["loss"] < history[0]["loss"], "the tune loss must fall"
    assert best["f"] > 0.0
    net = nn.load_net(str(out / "best.npz"))
    assert net.meta["step"] == best["step"] and net.meta["seed"] == 3
    # A rerun with the same folder resumes from the checkpoint instead of starting again.
    train_main([*common, "--steps", "45", "--seed", "3"])
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [15, 30, 45]
    # The run's last checkpoint exported for serving (train.export --checkpoint): the checkpoint's model,
    # the run's metadata with the checkpoint's step, and the calibration.
    from train.export import export

    served = export(out / "best.npz", tmp_path / "served.npz", 0.2, 1.0, checkpoint=out / "last.pt")
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["step"] == 45 and served.meta["step"] == 45 and served.meta["checkpoint"] == "last.pt"
    assert served.meta["seed"] == 3 and served.meta["unit"] == 0.2 and "tune_f" not in served.meta
    model = OnsetTCN(served.n_features, served.hidden, served.dilations)
    model.load_state_dict(state["model"])
    model.eval()
    x = np.random.default_rng(7).uniform(0.0, 3.0, (served.n_features, 300)).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(x)[None]))[0].numpy()
    assert np.abs(nn.run(served, x) - expected).max() < 1e-5
