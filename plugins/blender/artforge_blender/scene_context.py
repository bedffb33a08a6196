"""The scene as compact structured text, for the text engine's `scene_description` task.

The data classes are filled by the thin bpy adapter; nothing here imports bpy. Where each field
comes from in Blender (the adapter's job):

    SceneInfo.name            scene.name
    SceneInfo.objects         visible objects (obj.visible_get()) that are not lights or cameras
    SceneInfo.lights          visible objects with obj.type == "LIGHT"
    SceneInfo.camera          scene.camera (None when the scene has none)
    SceneInfo.world_color     the Background node's Color input when the world has a node tree,
                              else scene.world.color (RGB, scene-linear); None without a world
    ObjectInfo.name / type    obj.name / obj.type ("MESH", "CURVE", "EMPTY", ...)
    ObjectInfo.dimensions     tuple(obj.dimensions): world-size bounding box, scale applied
    ObjectInfo.location       tuple(obj.matrix_world.translation) (world space, parents applied)
    ObjectInfo.rotation       obj.matrix_world.to_euler("XYZ") converted to DEGREES
    ObjectInfo.materials      one MaterialInfo per filled material slot (slot.material), in slot order
    MaterialInfo.name         material.name
    MaterialInfo.base_color   what feeds the Principled BSDF's "Base Color": an RGB node's colour, an
                              image's mean, else its default_value[:3]; material.diffuse_color[:3]
                              (the viewport colour) when that is Blender's untouched default or there
                              is no Principled BSDF (scene-linear)
    LightInfo.type            light.type ("POINT", "SUN", "SPOT", "AREA"); light = obj.data
    LightInfo.color / energy  tuple(light.color) (scene-linear) / light.energy (W, or W/m² for suns)
    CameraInfo.lens           obj.data.lens (mm); location/rotation as for objects

All colours in these classes are scene-linear, as Blender stores them; the text shows them as
sRGB hex plus a coarse name, which is what an artist sees in the colour picker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from artforge_client.colors import RGB, colour_name, linear_to_srgb, srgb_hex

Vec3 = tuple[float, float, float]

MAX_OBJECTS = 40  # objects listed; the rest are counted, not listed
MAX_LIGHTS = 12
MAX_MATERIALS_PER_OBJECT = 3
MAX_NAME_CHARS = 40
MAX_CONTEXT_CHARS = 6000  # the prompt stays small for a small model's context window


@dataclass(frozen=True)
class MaterialInfo:
    name: str
    base_color: RGB | None = None  # scene-linear RGB; None when it has no single base colour


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    type: str
    dimensions: Vec3 = (0.0, 0.0, 0.0)
    location: Vec3 = (0.0, 0.0, 0.0)
    rotation: Vec3 = (0.0, 0.0, 0.0)  # degrees, XYZ Euler
    materials: tuple[MaterialInfo, ...] = ()


@dataclass(frozen=True)
class LightInfo:
    name: str
    type: str
    color: RGB = (1.0, 1.0, 1.0)
    energy: float = 1000.0
    location: Vec3 = (0.0, 0.0, 0.0)
    rotation: Vec3 = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CameraInfo:
    name: str
    lens: float = 50.0
    location: Vec3 = (0.0, 0.0, 0.0)
    rotation: Vec3 = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SceneInfo:
    name: str = "Scene"
    objects: Sequence[ObjectInfo] = field(default_factory=tuple)
    lights: Sequence[LightInfo] = field(default_factory=tuple)
    camera: CameraInfo | None = None
    world_color: RGB | None = None


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def _name(text: str) -> str:
    """A name on one line and bounded, so a name cannot add lines to the context."""
    text = _UNSAFE.sub(" ", text).strip()
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


def _number(value: float, digits: int) -> str:
    """Rounded, without trailing zeros and never '-0'."""
    if not math.isfinite(value):
        return "?"
    text = f"{round(value, digits):.{digits}f}".rstrip("0").rstrip(".") if digits else str(round(value))
    return "0" if text in ("-0", "") else text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _vector(values: Vec3, digits: int = 2) -> str:
    return "(" + ", ".join(_number(v, digits) for v in values) + ")"


def _colour(linear: RGB) -> str:
    srgb = tuple(linear_to_srgb(c) for c in linear[:3])
    return f"{srgb_hex(srgb)} {colour_name(srgb)}"


def _size(obj: ObjectInfo) -> float:
    return max((abs(d) for d in obj.dimensions if math.isfinite(d)), default=0.0)


def _object_line(obj: ObjectInfo) -> str:
    parts = [f"- {_name(obj.name)}: {obj.type.lower()}, size {' x '.join(_number(d, 2) for d in obj.dimensions)}"]
    parts.append(f"at {_vector(obj.location)}")
    if any(abs(r) >= 0.5 for r in obj.rotation):
        parts.append(f"rot {_vector(obj.rotation, 0)}")
    materials = obj.materials[:MAX_MATERIALS_PER_OBJECT]
    if materials:
        listed = [_name(m.name) + (f" {_colour(m.base_color)}" if m.base_color is not None else "") for m in materials]
        more = len(obj.materials) - len(materials)
        parts.append("material " + "; ".join(listed) + (f"; +{more} more" if more else ""))
    return ", ".join(parts)


def _light_line(light: LightInfo) -> str:
    unit = "W/m²" if light.type.upper() == "SUN" else "W"
    return (
        f"- {_name(light.name)}: {light.type.lower()} light, {_colour(light.color)}, {_number(light.energy, 1)} {unit}, "
        f"at {_vector(light.location)}, rot {_vector(light.rotation, 0)}"
    )


def _ordered(scene: SceneInfo) -> tuple[list[ObjectInfo], list[LightInfo]]:
    # Largest objects first: when the list is capped, the ones that shape the picture stay.
    # Full sort keys make the text independent of the order Blender happened to list them in.
    objects = sorted(scene.objects, key=lambda o: (-_size(o), o.name, o.type, o.location))
    # Lights by name: watts and a sun's W/m² do not compare, so "strongest first" would mislead.
    lights = sorted(scene.lights, key=lambda lt: (lt.name, lt.type))
    return objects, lights


def _render(scene: SceneInfo, objects: list[ObjectInfo], shown: int, lights: list[LightInfo]) -> str:
    camera = scene.camera
    summary = f"{_plural(len(objects), 'object')}, {_plural(len(lights), 'light')}, {'a camera' if camera else 'no camera'}"
    lines = [f"Scene {_name(scene.name)}: {summary}.", "Units: metres, Z up, rotations in degrees."]
    if objects:
        lines.append("Objects (largest first):")
        lines += [_object_line(obj) for obj in objects[:shown]]
        if shown < len(objects):
            lines.append(f"- ... and {_plural(len(objects) - shown, 'smaller object')} not listed")
    if lights:
        lines.append("Lights:")
        lines += [_light_line(light) for light in lights[:MAX_LIGHTS]]
        if len(lights) > MAX_LIGHTS:
            lines.append(f"- ... and {_plural(len(lights) - MAX_LIGHTS, 'more light')} not listed")
    if camera is not None:
        lens = _number(camera.lens, 0)
        lines.append(f"Camera {_name(camera.name)}: lens {lens} mm, at {_vector(camera.location)}, rot {_vector(camera.rotation, 0)}")
    if scene.world_color is not None:
        lines.append(f"World: {_colour(scene.world_color)}")
    return "\n".join(lines)


def scene_context(scene: SceneInfo, max_objects: int = MAX_OBJECTS, max_chars: int = MAX_CONTEXT_CHARS) -> str:
    """The scene as a few compact lines: deterministic, rounded, at most `max_objects` objects
    listed (the largest; the rest counted) and at most about `max_chars` characters."""
    objects, lights = _ordered(scene)
    shown = min(max_objects, len(objects))
    text = _render(scene, objects, shown, lights)
    # Each line is bounded, so this only trims when max_chars is set below the default budget.
    while len(text) > max_chars and shown > 0:
        shown -= 1
        text = _render(scene, objects, shown, lights)
    return text
