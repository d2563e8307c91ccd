"""Plain PyTorch training and evaluation (no Flower): trainer, metrics, central baseline."""
