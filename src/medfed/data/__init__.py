"""Datasets: readers and validation, decoded cache, batch transforms, loaders, partitions.

Importing this package does not import torch; ``transforms`` and ``loader`` do.
"""
