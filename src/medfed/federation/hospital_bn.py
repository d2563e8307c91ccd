"""A hospital's BatchNorm: the moments it sends the server, and FedBN's own statistics.

Unless ``federated.bn`` is ``local``, a hospital measures BatchNorm moments of the global model
on its training images for the server to combine; under FedBN (``local``) it keeps its own
BatchNorm statistics and affine weights between rounds in its state folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from medfed.config import MedfedConfig
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform
from medfed.learning.device import measuring_pass, model_device, to_cpu
from medfed.models import bn_state_keys

if TYPE_CHECKING:
    from medfed.federation.hospital import Hospital

BN_STATS_MAX_IMAGES = 256  # enough for stable per-channel moments; keeps the pass short


def bn_statistics(
    hospital: Hospital, cfg: MedfedConfig, model: torch.nn.Module
) -> dict[str, np.ndarray]:
    """BatchNorm mean and E[x^2] of the model's activations on the local training images.

    The server combines them across hospitals into the global model's running statistics, so
    the averaged weights are evaluated with statistics that belong to them (averaging each
    hospital's own running statistics does not give that, and skews predictions). The pass
    runs the model in training mode: its own running statistics change, so use it last.
    It runs where the model is, in bfloat16 where that device computes it natively (the
    layers' own batch statistics, in float32, then match float32 moments: the same validation
    accuracy on the demo images); the moments come back as CPU arrays.
    """
    layers = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats
    }
    if not layers or cfg.federated.bn == "local":
        return {}
    sums: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook(name: str):
        def record(module: torch.nn.BatchNorm2d, inputs, _output) -> None:
            # With momentum 1 the layer's running statistics are this batch's own, computed in
            # float32 by the layer as it normalises (no second pass over the activations).
            x, running_mean, running_var = inputs[0], module.running_mean, module.running_var
            assert running_mean is not None and running_var is not None  # only tracked layers
            n = x.numel() // x.shape[1]  # values per channel
            mean = running_mean.detach().clone()
            variance = running_var.detach() * ((n - 1) / n)  # unbiased to biased
            sums[name].append(torch.stack([mean, variance + mean * mean]) * x.shape[0])

        return record

    momenta = {name: m.momentum for name, m in layers.items()}
    for m in layers.values():
        m.momentum = 1.0
    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    device = model_device(model)
    loader = ArrayLoader(
        hospital.data.images,
        hospital.data.labels,
        indices=bn_sample(hospital.train_idx, cfg.training.seed),
        batch_size=max(cfg.training.batch_size, 64),
        transform=eval_transform(cfg.data),
        device=device,
    )
    model.train()
    try:
        with torch.no_grad(), measuring_pass(model):
            for x, _ in loader:
                model(x)
    finally:
        for handle in handles:
            handle.remove()
        for name, m in layers.items():
            m.momentum = momenta[name]
    n = float(loader.num_examples)
    out = {}
    for name, parts in sums.items():
        moments = torch.stack(parts).sum(dim=0) / n
        out[f"{name}.mean"] = moments[0].cpu().numpy()
        out[f"{name}.sqmean"] = moments[1].cpu().numpy()
    return out


def bn_sample(indices: np.ndarray, seed: int) -> np.ndarray:
    """A seeded subset of at most BN_STATS_MAX_IMAGES training images for the moments pass."""
    if len(indices) <= BN_STATS_MAX_IMAGES:
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, BN_STATS_MAX_IMAGES, replace=False))


def restore_local_bn(model: torch.nn.Module, hospital: Hospital, cfg: MedfedConfig) -> None:
    """FedBN: put this hospital's own BatchNorm statistics and affine weights back."""
    path = hospital.state_dir / "bn.pt"
    if cfg.federated.bn == "local" and path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True), strict=False)


def keep_local_bn(
    model: torch.nn.Module,
    hospital: Hospital,
    cfg: MedfedConfig,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """FedBN: save this hospital's BatchNorm state (from ``state``, default the model's)."""
    if cfg.federated.bn != "local":
        return
    keys = bn_state_keys(model)
    state = {k: v for k, v in (state or to_cpu(model.state_dict())).items() if k in keys}
    tmp = hospital.state_dir / "bn.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(hospital.state_dir / "bn.pt")
