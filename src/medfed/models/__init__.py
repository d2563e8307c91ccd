"""Model registry: small CNN and torchvision ResNets, built offline by name."""

from medfed.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from medfed.models.registry import MODEL_NAMES, NORMS, bn_state_keys, build_model
from medfed.models.weights import LoadReport, load_pretrained

__all__ = [
    "MODEL_NAMES",
    "NORMS",
    "Checkpoint",
    "LoadReport",
    "bn_state_keys",
    "build_model",
    "load_checkpoint",
    "load_pretrained",
    "save_checkpoint",
]
