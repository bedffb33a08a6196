"""How an engine runs: devices, loaded models, PyTorch text and diffusion, onnxruntime sessions."""
