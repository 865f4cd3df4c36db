"""Datasets: builders (sprites, import-folder), preprocessing, the canonical index, loaders."""
