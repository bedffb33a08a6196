"""Depth estimation on PyTorch (transformers): DPT and Depth Anything folders, for depth controls.

These models predict relative inverse depth (disparity): larger is nearer. The estimate comes
back at the picture's size, scaled to 0..1 over the picture (near 1, far 0), which is how depth
ControlNets were trained to read it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from artforge.images import resize, to_rgb


class DepthEstimator:
    def __init__(self, folder: Path, device: str) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.device = torch.device(device)
        self.processor = AutoImageProcessor.from_pretrained(str(folder))
        self.model = AutoModelForDepthEstimation.from_pretrained(str(folder)).to(self.device).eval()

    def estimate(self, pixels: np.ndarray) -> np.ndarray:
        """H x W x 1 in 0..1 for an H x W picture: near bright, far dark."""
        import torch

        rgb = to_rgb(pixels, over_white=True)[0]
        inputs = self.processor(images=rgb, return_tensors="pt", do_rescale=False).to(self.device)
        with torch.inference_mode():
            disparity = self.model(**inputs).predicted_depth[0].float().cpu().numpy()
        low, high = float(disparity.min()), float(disparity.max())
        scaled = (disparity - low) / (high - low) if high > low else np.zeros_like(disparity)
        return resize(scaled.astype(np.float32)[..., None], pixels.shape[1], pixels.shape[0])
