"""Image requests for textures and concept art, and sorting their results: plain Python, no bpy."""

from __future__ import annotations

from dataclasses import dataclass

from artforge_client import ImageResult
from artforge_client.v1 import image_pb2, pixels_pb2

TEXTURE_SIZES = (256, 512, 768, 1024)
# Names of the maps in datablock names and in the material; the server's roles map onto them.
ROLE_NAMES = {
    pixels_pb2.IMAGE_ROLE_COLOR: "albedo",
    pixels_pb2.IMAGE_ROLE_HEIGHT: "height",
    pixels_pb2.IMAGE_ROLE_NORMAL: "normal",
    pixels_pb2.IMAGE_ROLE_ROUGHNESS: "roughness",
}
DATA_MAPS = ("height", "normal", "roughness")  # data, not colour: Blender must not colour-manage them
STYLIZE, IMG2IMG = "STYLIZE", "IMG2IMG"


@dataclass(frozen=True)
class TextureSettings:
    prompt: str
    size: int = 512
    seamless: bool = True
    pbr: bool = True
    model: str = ""  # empty: the server's default image model
    steps: int = 0  # 0: the model's default
    seed: int = -1  # -1: the server picks one


def _seed(seed: int) -> int | None:
    return None if seed < 0 else seed


def texture_request(settings: TextureSettings) -> image_pb2.GenerateImageRequest:
    """txt2img, square, PNG 8-bit (Blender packs the server's PNG as it is), a preview every step."""
    return image_pb2.GenerateImageRequest(
        prompt=settings.prompt,
        model=settings.model,
        width=settings.size,
        height=settings.size,
        steps=settings.steps or None,
        seed=_seed(settings.seed),
        tiling=pixels_pb2.Tiling(x=settings.seamless, y=settings.seamless),
        pbr_maps=settings.pbr,
        preview_every=1,
        output_format=pixels_pb2.OUTPUT_FORMAT_PNG8,
    )


def concept_request(
    png: bytes, prompt: str, *, mode: str, strength: float, model: str = "", steps: int = 0, seed: int = -1, style_index: int = 0
) -> image_pb2.GenerateImageRequest | image_pb2.StylizeRequest:
    """The captured camera view as img2img (prompt-guided) or stylize (a built-in painting style)."""
    image = pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=png)
    if mode == STYLIZE:
        return image_pb2.StylizeRequest(image=image, style_index=style_index, strength=strength)
    return image_pb2.GenerateImageRequest(
        mode=image_pb2.IMAGE_MODE_IMG2IMG,
        prompt=prompt,
        model=model,
        init_image=image,
        strength=strength,
        steps=steps or None,
        seed=_seed(seed),
        preview_every=1,
    )


def capture_size(resolution_x: int, resolution_y: int, size: int) -> tuple[int, int]:
    """The camera capture's pixels: the scene's aspect ratio, `size` on the long side, each side a
    multiple of 8 (as the server wants) and at least 8."""
    aspect = resolution_x / max(1, resolution_y)
    width, height = (size, size / aspect) if aspect >= 1 else (size * aspect, size)
    return max(8, round(width / 8) * 8), max(8, round(height / 8) * 8)


def maps_by_name(images: list[ImageResult]) -> dict[str, ImageResult]:
    """The first batch item's results by map name ("albedo", "normal", ...)."""
    return {ROLE_NAMES[r.role]: r for r in images if r.header.batch_index == 0 and r.role in ROLE_NAMES}


def short_label(prompt: str, limit: int = 24) -> str:
    """A prompt cut to fit a datablock name next to a suffix."""
    text = " ".join(prompt.split()) or "untitled"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
