"""Image requests for textures, concept art and projections from the camera, and sorting their
results: plain Python, no bpy."""

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


MIN_CAPTURE_SIDE = 64  # stylize needs 32 px on both sides, and a diffusion model has no room for a picture in less


@dataclass(frozen=True)
class CaptureLayout:
    """The camera frame rendered at width x height, centred on a canvas the server takes (each side
    a multiple of 8 and at least MIN_CAPTURE_SIDE): the padding keeps the frame's own aspect, and the
    result is cropped back to the frame."""

    width: int
    height: int
    canvas_width: int
    canvas_height: int

    @property
    def x(self) -> int:
        return (self.canvas_width - self.width) // 2

    @property
    def y(self) -> int:
        return (self.canvas_height - self.height) // 2

    @property
    def padded(self) -> bool:
        return (self.width, self.height) != (self.canvas_width, self.canvas_height)

    def frame_in(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the frame in a result of width x height (the canvas, or scaled from it)."""
        sx, sy = width / self.canvas_width, height / self.canvas_height
        x, y = round(self.x * sx), round(self.y * sy)
        return x, y, max(1, min(width - x, round(self.width * sx))), max(1, min(height - y, round(self.height * sy)))


def capture_layout(resolution_x: int, resolution_y: int, size: int) -> CaptureLayout:
    """`size` pixels on the frame's long side, the short side by the frame's aspect (at least 1)."""
    aspect = resolution_x / max(1, resolution_y)
    width, height = (size, size / aspect) if aspect >= 1 else (size * aspect, size)
    width, height = max(1, round(width)), max(1, round(height))

    def canvas(side: int) -> int:
        return max(MIN_CAPTURE_SIDE, -(-side // 8) * 8)

    return CaptureLayout(width, height, canvas(width), canvas(height))


@dataclass(frozen=True)
class ProjectionSettings:
    """Project Texture from View: a txt2img job (img2img with the view's colours) that follows the
    camera's depth through a depth ControlNet."""

    prompt: str
    depth_strength: float = 1.0  # the ControlNet's strength, 0..2
    init_strength: float | None = None  # img2img from the view's colours at this strength; None: txt2img
    model: str = ""
    steps: int = 0
    seed: int = -1


def projection_request(
    settings: ProjectionSettings, depth_png: bytes, layout: CaptureLayout, colour_png: bytes | None = None
) -> image_pb2.GenerateImageRequest:
    """The canvas-sized job (each side a multiple of 8; the result is cropped back to the frame)
    with one depth control, the depth PNG as it is (near bright, no preprocessor)."""
    control = image_pb2.Control(
        type="depth", image=pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=depth_png), strength=settings.depth_strength
    )
    request = image_pb2.GenerateImageRequest(
        prompt=settings.prompt,
        model=settings.model,
        width=layout.canvas_width,
        height=layout.canvas_height,
        steps=settings.steps or None,
        seed=_seed(settings.seed),
        controls=[control],
        preview_every=1,
        output_format=pixels_pb2.OUTPUT_FORMAT_PNG8,
    )
    if settings.init_strength is not None:
        if colour_png is None:
            raise ValueError("img2img from the view needs the view's colours")
        request.mode = image_pb2.IMAGE_MODE_IMG2IMG
        request.init_image.CopyFrom(pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=colour_png))
        request.strength = settings.init_strength
    return request


def maps_by_name(images: list[ImageResult]) -> dict[str, ImageResult]:
    """The first batch item's results by map name ("albedo", "normal", ...)."""
    return {ROLE_NAMES[r.role]: r for r in images if r.header.batch_index == 0 and r.role in ROLE_NAMES}


def short_label(prompt: str, limit: int = 24) -> str:
    """A prompt cut to fit a datablock name next to a suffix."""
    text = " ".join(prompt.split()) or "untitled"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
