"""medfed: federated learning for medical image classification, built on Flower."""

__version__ = "0.1.0"
