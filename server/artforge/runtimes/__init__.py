"""How an engine runs: devices, loaded models, the PyTorch text runtime."""
