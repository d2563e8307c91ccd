"""training.device and training.amp: the device resolved at each hospital, the CPU path left as it
was, the device each hospital used recorded with its results and shown (runs show, report), and
each simulated hospital's GPU share. Tests that need a GPU skip with their reason without one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from medfed import cli
from medfed.config import TrainingConfig, load_config
from medfed.data import loader as loader_module
from medfed.data.cache import load_images
from medfed.data.loader import ArrayLoader
from medfed.data.readers import scan_dataset
from medfed.data.transforms import BatchTransform
from medfed.errors import ConfigError, MedfedError
from medfed.federation.client_app import _info
from medfed.federation.hospital import (
    build_run_model,
    evaluate_locally,
    open_hospital,
    train_locally,
)
from medfed.federation.recorder import RunRecorder, reply_device
from medfed.federation.replies import ReplyLimits, check_evaluate_reply
from medfed.federation.runner import absolute_paths
from medfed.federation.simulation import (
    gpu_share,
    ray_init_args,
    server_threads,
    simulated_gpus,
)
from medfed.learning import device as device_module
from medfed.learning.device import measuring_pass, resolve_device, training_device, uses_amp
from medfed.learning.trainer import evaluate, make_optimizer, set_seed, train
from medfed.models import build_model
from medfed.reports.tables import last_round_table
from medfed.store import RunStore
from medfed.store.artifacts import ArtifactStore
from medfed.store.records import ClientResultRecord
from simulated import tiny_overrides

torch.set_num_threads(1)

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
)
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def blobs(n: int = 64, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """uint8 grey images, two classes told apart by a bright centre square."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.integers(0, 90, size=(n, 1, size, size), dtype=np.uint8)
    images[labels == 1, :, 5:11, 5:11] += 150
    return images, labels


def trained_weights(device: torch.device, amp: bool, epochs: int = 2) -> dict[str, torch.Tensor]:
    images, labels = blobs()
    set_seed(3)
    model = build_model("cancer_cnn", 1, 2).to(device)
    loader = ArrayLoader(
        images, labels, batch_size=16, shuffle=True, seed=3, transform=transform(), device=device
    )
    train(model, loader, epochs, make_optimizer(model, TrainingConfig(learning_rate=1e-2)), amp=amp)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def transform(seed: int = 5) -> BatchTransform:
    return BatchTransform(0.5, 0.25, rotation=15.0, hflip=True, vflip=True, seed=seed)


# ------------------------------------------------------------------ configuration


def test_device_defaults_to_auto_and_a_bad_value_names_the_key_and_the_choices() -> None:
    cfg = load_config(None)
    assert cfg.training.device == "auto" and cfg.training.amp is False
    with pytest.raises(ConfigError) as err:
        load_config(None, {"training.device": "gpu"})
    message = str(err.value)
    assert "training.device" in message and "'gpu'" in message
    assert all(name in message for name in ("'auto'", "'cpu'", "'cuda'", "'mps'"))


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_amp_on_a_device_that_is_never_cuda_is_one_clear_error(device: str) -> None:
    with pytest.raises(ConfigError, match=r"training\.amp=true needs CUDA.*training\.device"):
        load_config(None, {"training.amp": True, "training.device": device})


def test_amp_is_accepted_with_auto_and_cuda_but_not_with_dp_sgd() -> None:
    for device in ("auto", "cuda"):
        assert load_config(None, {"training.amp": True, "training.device": device}).training.amp
    dp = {"privacy.mode": "sample", "privacy.noise_multiplier": 1.0, "model.norm": "group"}
    with pytest.raises(ConfigError, match=r"privacy\.mode='sample' with training\.amp=true"):
        load_config(None, {**dp, "training.amp": True})


# ------------------------------------------------------------------ resolving the device


def test_auto_picks_cuda_exactly_when_the_machine_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_asking_for_a_device_the_machine_lacks_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"training\.device='cuda'.*no CUDA device.*auto or cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"training\.device='mps'.*auto or cpu"):
        resolve_device("mps")


def test_amp_applies_on_cuda_only() -> None:
    cfg = TrainingConfig(amp=True)
    assert uses_amp(cfg, torch.device("cuda"))
    assert not uses_amp(cfg, torch.device("cpu"))
    assert not uses_amp(cfg, torch.device("mps"))
    assert not uses_amp(TrainingConfig(amp=False), torch.device("cuda"))


# ------------------------------------------------------------------ the CPU path


def test_on_the_cpu_amp_changes_nothing_and_training_is_reproducible() -> None:
    """amp is off wherever there is no CUDA: the very same weights as without it."""
    cpu = torch.device("cpu")
    plain, with_amp = trained_weights(cpu, amp=False), trained_weights(cpu, amp=True)
    for key in plain:
        assert torch.equal(plain[key], with_amp[key]), key


def test_a_cpu_loader_yields_the_same_batches_with_or_without_a_device() -> None:
    images, labels = blobs(40)
    batches = []
    for device in (None, "cpu"):
        loader = ArrayLoader(
            images,
            labels,
            batch_size=16,
            shuffle=True,
            seed=1,
            transform=transform(),
            device=device,
        )
        batches.append(list(loader))
    for (x0, y0), (x1, y1) in zip(*batches, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert x1.device.type == "cpu" and not x1.is_pinned()


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_the_cuda_loader_stages_the_same_rows_in_host_memory(
    kaggle_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shuffle: bool,
    streamed: bool,
) -> None:
    """The staging of a CUDA loader (rows copied into page-locked memory, each batch gathered
    or read from the cache file into it) gives the very rows of the plain loader. Checked on
    the CPU with ordinary memory standing in for pinned memory and no copy to a device."""
    manifest = scan_dataset(kaggle_dataset)
    images = load_images(manifest, 16, 1, tmp_path / "cache")
    subset = np.array([0, 1, 2, 5, 9, 10, 11, 20, 31, 30])
    plain = list(ArrayLoader(images, manifest.labels, subset, 4, shuffle=shuffle, seed=3))
    staged_rows: list[tuple[int, ...]] = []

    def host_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        staged_rows.append(shape)
        return torch.empty(shape, dtype=dtype)

    monkeypatch.setattr(loader_module, "_pinned", host_buffer)
    monkeypatch.setattr(loader_module, "_to_device", lambda x, device: x)
    if streamed:
        monkeypatch.setattr(loader_module, "COPY_LIMIT_BYTES", 0)
    staged = ArrayLoader(images, manifest.labels, subset, 4, shuffle=shuffle, seed=3, device="cuda")
    assert staged.pinned and (staged.file is not None) == streamed
    batches = list(staged)
    assert len(batches) == len(plain) == 3
    for (x, y), (x_plain, y_plain) in zip(batches, plain, strict=True):
        assert torch.equal(y, y_plain) and torch.equal(x, x_plain)
    assert staged_rows  # the host buffers were used


def test_a_hospital_on_the_cpu_replies_with_cpu_weights_and_says_so(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    cfg = absolute_paths(
        load_config(None, tiny_overrides(kaggle_dataset, tmp_path, **{"training.device": "cpu"}))
    )
    hospital = open_hospital(cfg, {"partition-id": 0, "num-partitions": 1}, "run", ["0", "1"])
    update = train_locally(hospital, cfg, build_run_model(cfg, 2).state_dict(), 2, 1, "run")
    assert all(t.device.type == "cpu" for t in update.state.values())
    info = _info(hospital, cfg)
    assert dict(info) == {"hospital": hospital.name, "device": "cpu"}


def test_a_hospital_told_to_use_cuda_without_one_fails_with_the_key_named(
    kaggle_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    overrides = tiny_overrides(kaggle_dataset, tmp_path, **{"training.device": "cuda"})
    cfg = absolute_paths(load_config(None, overrides))
    hospital = open_hospital(cfg, {"partition-id": 0, "num-partitions": 1}, "run", ["0", "1"])
    with pytest.raises(MedfedError, match=r"training\.device='cuda'"):  # an error reply
        _info(hospital, cfg)
    with pytest.raises(ConfigError, match=r"training\.device='cuda'"):
        train_locally(hospital, cfg, build_run_model(cfg, 2).state_dict(), 2, 1, "run")


# ------------------------------------------------------------------ recorded and shown


def evaluation_reply(info: dict) -> RecordDict:
    metrics = {
        "num-examples": 50,
        "dp-weight": 1,
        "loss": 0.3,
        "accuracy": 0.9,
        "precision": 0.8,
        "recall": 0.85,
        "f1": 0.82,
        "auc": 0.95,
        "confusion-matrix": [20, 5, 0, 25],
        "bytes-down": 999,
        "seconds": 1.0,
    }
    return RecordDict({"metrics": MetricRecord(metrics), "info": ConfigRecord(info)})


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_a_known_device_passes_the_reply_checks(device: str) -> None:
    limits = ReplyLimits(num_classes=2, bn_stats=False)
    reply = evaluation_reply({"hospital": "north", "device": device})
    checked = check_evaluate_reply(reply, ArrayRecord(), limits)
    assert dict(checked["info"]) == {"hospital": "north", "device": device}
    assert reply_device(checked) == device


@pytest.mark.parametrize(
    "device", ["tpu", "cuda:0", "CUDA", "cuda\x1b[31m", "[red]cuda[/]", "x" * 5000, 1, ""]
)
def test_any_other_device_value_is_dropped_and_the_reply_still_counts(device: object) -> None:
    limits = ReplyLimits(num_classes=2, bn_stats=False)
    checked = check_evaluate_reply(
        evaluation_reply({"hospital": "north", "device": device}), ArrayRecord(), limits
    )
    assert dict(checked["info"]) == {"hospital": "north"}
    assert reply_device(checked) is None


def test_a_reply_without_a_device_is_accepted_without_one() -> None:
    limits = ReplyLimits(num_classes=2, bn_stats=False)
    checked = check_evaluate_reply(evaluation_reply({"hospital": "old"}), ArrayRecord(), limits)
    assert reply_device(checked) is None


def reply(metrics: dict, device: str | None = None) -> RecordDict:
    """A checked reply's content: its metrics, and the device named in its info."""
    info = {"hospital": "h"} if device is None else {"hospital": "h", "device": device}
    return RecordDict({"metrics": MetricRecord(metrics), "info": ConfigRecord(info)})


def test_the_device_is_stored_with_the_hospitals_result_and_shown_by_runs_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "220")
    url = f"sqlite:///{tmp_path}/medfed.db"
    with RunStore(url) as store:
        run_id = store.create_run("gpus", {}, mode="simulation", strategy="FedAvg", num_rounds=1)
        recorder = RunRecorder(store, run_id, ArtifactStore(tmp_path / "artifacts"))
        recorder.replied(
            1, "train", "north", reply({"num-examples": 10, "train_loss": 0.4}, "cuda")
        )
        recorder.replied(1, "train", "south", reply({"num-examples": 12, "train_loss": 0.5}, "cpu"))
        recorder.replied(1, "evaluate", "west", reply({"num-examples": 7, "loss": 0.6}))
        store.record_round(run_id, 1, metrics={"accuracy": 0.9}, duration_s=1.0)
        results = {r.hospital: r.metrics for r in store.client_results(run_id, 1)}
    assert results["north"]["device"] == "cuda" and results["south"]["device"] == "cpu"
    assert "device" not in results["west"]
    assert cli.main(["runs", "show", run_id, "--db", url]) == 0
    out = capsys.readouterr().out
    table = out[out.index("hospitals in round 1") : out.index("each hospital on its own")]
    assert "device" in table
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if "│" in line}
    assert rows["north"].rstrip(" │").endswith("cuda")
    assert rows["south"].rstrip(" │").endswith("cpu")
    assert rows["west"].rstrip(" │").endswith("-")


def report_client(hospital: str, metrics: dict) -> ClientResultRecord:
    return ClientResultRecord(
        1, "r1", 2, hospital, "train", "ok", 9, metrics, 1.0, 5, 5, None, None, NOW
    )


def test_the_reports_hospital_table_has_the_device_column_when_one_was_recorded() -> None:
    clients = [
        report_client("hospital-1", {"train_loss": 0.4, "device": "cuda"}),
        report_client("hospital-2", {"train_loss": 0.5}),
    ]
    table = last_round_table(clients, 2)
    column = table.columns.index("Device")
    assert [row[column] for row in table.rows] == ["cuda", "—"]
    assert not table.numeric[column]
    old_run = last_round_table([report_client("hospital-1", {"train_loss": 0.4})], 2)
    assert "Device" not in old_run.columns


# ------------------------------------------------------------------ simulated GPU shares


def test_simulated_hospitals_share_the_gpus_of_a_cuda_run() -> None:
    cfg = load_config(None, {"federated.num_clients": 4})
    assert gpu_share(cfg, 4, cpus=4, gpus=0) == 0.0  # the CPU path as before
    assert gpu_share(cfg, 4, cpus=4, gpus=1) == 0.25
    assert gpu_share(cfg, 4, cpus=2, gpus=1) == 0.5  # two train at once: one per CPU
    assert gpu_share(cfg, 3, cpus=8, gpus=1) == 0.3333
    assert gpu_share(cfg, 4, cpus=8, gpus=8) == 2.0
    assert gpu_share(cfg, 2, cpus=8, gpus=3) == 1.0  # Ray takes whole GPUs above one
    half = load_config(None, {"federated.fraction_train": 0.5, "federated.min_train_clients": 2})
    assert gpu_share(half, 8, cpus=8, gpus=2) == 0.5  # four hospitals a round


def test_the_simulated_server_evaluates_on_the_cores_its_hospitals_leave() -> None:
    assert server_threads(cpus=2, hospitals=4) == 1  # the demo: every core trains a hospital
    assert server_threads(cpus=16, hospitals=4) == 12
    assert server_threads(cpus=8, hospitals=8) == 1
    assert server_threads(cpus=1, hospitals=1) == 1


def test_simulated_gpus_are_used_only_when_the_device_can_be_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert simulated_gpus(load_config(None, {"training.device": "auto"})) == 2
    assert simulated_gpus(load_config(None, {"training.device": "cuda"})) == 2
    assert simulated_gpus(load_config(None, {"training.device": "cpu"})) == 0
    assert simulated_gpus(load_config(None, {"training.device": "mps"})) == 0
    assert ray_init_args(2)["num_gpus"] == 0 and ray_init_args(2, 2)["num_gpus"] == 2


# ------------------------------------------------------------------ on a CUDA GPU


@needs_cuda
def test_cuda_batches_come_from_pinned_memory_and_are_transformed_on_the_gpu() -> None:
    images, labels = blobs(40)
    cpu = list(
        ArrayLoader(images, labels, batch_size=16, shuffle=True, seed=1, transform=transform())
    )
    loader = ArrayLoader(
        images, labels, batch_size=16, shuffle=True, seed=1, transform=transform(), device="cuda"
    )
    assert loader.images.is_pinned() and loader.labels.is_pinned()
    for (x_cpu, y_cpu), (x, y) in zip(cpu, loader, strict=True):
        assert x.device.type == "cuda" and y.device.type == "cuda"
        assert torch.equal(y.cpu(), y_cpu)
        torch.testing.assert_close(x.cpu(), x_cpu, atol=1e-4, rtol=1e-4)


@needs_cuda
def test_training_on_cuda_learns_with_and_without_amp() -> None:
    images, labels = blobs()
    for amp in (False, True):
        weights = trained_weights(torch.device("cuda"), amp=amp, epochs=6)
        model = build_model("cancer_cnn", 1, 2)
        model.load_state_dict(weights)
        loader = ArrayLoader(images, labels, batch_size=32, transform=BatchTransform(0.5, 0.25))
        assert evaluate(model, loader)["accuracy"] >= 0.9, f"amp={amp}"
        assert all(torch.isfinite(t).all() for t in weights.values())


@needs_cuda
def test_evaluation_on_cuda_matches_the_cpu() -> None:
    images, labels = blobs()
    set_seed(0)
    model = build_model("cancer_cnn", 1, 2)
    loader = ArrayLoader(images, labels, batch_size=32, transform=BatchTransform(0.5, 0.25))
    on_cpu = evaluate(model, loader)
    gpu_loader = ArrayLoader(
        images, labels, batch_size=32, transform=BatchTransform(0.5, 0.25), device="cuda"
    )
    on_gpu = evaluate(model.to("cuda"), gpu_loader)
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-3)
    assert on_gpu["confusion_matrix"] == on_cpu["confusion_matrix"]


@needs_cuda
def test_a_hospital_trains_and_evaluates_on_cuda_and_replies_with_cpu_weights(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    overrides = tiny_overrides(kaggle_dataset, tmp_path, **{"training.amp": True})
    cfg = absolute_paths(load_config(None, overrides))
    assert training_device(cfg.training).type == "cuda"
    hospital = open_hospital(cfg, {"partition-id": 0, "num-partitions": 1}, "run", ["0", "1"])
    update = train_locally(hospital, cfg, build_run_model(cfg, 2).state_dict(), 2, 1, "run")
    assert all(t.device.type == "cpu" for t in update.state.values())
    assert update.metrics["train_loss"] > 0
    model = build_run_model(cfg, 2)
    model.load_state_dict(update.state)
    result, stats = evaluate_locally(hospital, cfg, model)
    assert 0 <= result["accuracy"] <= 1
    assert stats and all(isinstance(v, np.ndarray) for v in stats.values())
    assert dict(_info(hospital, cfg))["device"] == "cuda"


@needs_cuda
def test_dp_sgd_runs_on_cuda_with_its_noise_drawn_there(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    overrides = tiny_overrides(
        kaggle_dataset,
        tmp_path,
        **{
            "model.norm": "group",
            "privacy.mode": "sample",
            "privacy.noise_multiplier": 1.0,
            "training.device": "cuda",
        },
    )
    cfg = absolute_paths(load_config(None, overrides))
    hospital = open_hospital(cfg, {"partition-id": 0, "num-partitions": 1}, "run", ["0", "1"])
    update = train_locally(hospital, cfg, build_run_model(cfg, 2).state_dict(), 2, 1, "run")
    assert update.metrics["epsilon"] > 0
    assert all(t.device.type == "cpu" for t in update.state.values())


@needs_cuda
def test_augmentation_draws_are_the_same_on_cuda_and_the_cpu() -> None:
    images, _ = blobs(8)
    batch = torch.from_numpy(images)
    on_cpu = transform(seed=9)(batch)
    on_gpu = transform(seed=9)(batch.to("cuda"))
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("native", [True, False])
def test_a_measuring_pass_gives_float32_metrics_and_leaves_the_model_as_it_was(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where bfloat16 is native the pass runs in it, channels-last; its evaluation matches the
    float32 one, and the model's weights come back in their own layout, unchanged."""
    monkeypatch.setattr(device_module, "native_bf16", lambda _device: native)
    set_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(24, 3, 32, 32)
    y = torch.randint(0, 2, (24,))
    reference = evaluate(model, [(x, y)])
    seen: list[tuple[torch.dtype, bool]] = []
    channels_last = torch.channels_last

    def note(module: torch.nn.Module, _inputs: object, out: torch.Tensor) -> None:
        seen.append((out.dtype, module.weight.is_contiguous(memory_format=channels_last)))

    model.conv1.register_forward_hook(note)
    with measuring_pass(model):
        result = evaluate(model, [(x, y)])
    measured = (torch.bfloat16, True) if native else (torch.float32, False)
    assert seen == [measured]
    assert result["loss"] == pytest.approx(reference["loss"], abs=0.02)
    with measuring_pass(model):  # a pass within a pass keeps the outer one's layout
        with measuring_pass(model):
            evaluate(model, [(x, y)])
        evaluate(model, [(x, y)])
    assert seen == [measured] * 3
    for name, tensor in model.state_dict().items():
        assert tensor.is_contiguous(), name
        assert torch.equal(tensor, before[name]), name
