"""The block-out plan: the JSON the text engine returns for "block out a scene from a description".

The model's reply is data, never code: it is parsed with `json` (after at most two textual
repairs, trailing commas and single-quoted strings), checked field by field against the limits
below, and comes back either as a normalized `BlockoutPlan` or as `PlanError`s naming the JSON
path and the limit broken. Nothing here imports bpy, and nothing is ever evaluated.

Conventions the bpy builder must follow, because the prompt promises them to the model:
- Metres, Z up, the ground at z = 0; `location` is an object's centre.
- At scale (1, 1, 1) every primitive fits a 1 m cube centred on its location, so `scale` is the
  size in metres along x, y, z (cube size=1, spheres radius=0.5, cylinder/cone radius 0.5 and
  depth 1, plane size=1, monkey size=1, torus scaled to 1 m across). The schema asks for it as
  `size`, which reads more plainly to a small model.
- Rotations are XYZ Euler in DEGREES (convert with math.radians).
- Colours are sRGB 0..1 (`color`); `linear_color` is what goes into a Principled BSDF Base Color.
- Names are unique within the plan (duplicates get ".001" suffixes, as Blender does), but the
  scene may already use them: Blender renames on creation, so use the created object, not a lookup.
- Camera and lights are aimed already: `rotation` is resolved from `look_at` when one was given.
  Every valid plan has a camera: the plan's own, or one framed on the objects (`frame_camera`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from artforge_client.colors import RGB, parse_hex, srgb_to_linear

Vec3 = tuple[float, float, float]

PRIMITIVE_TYPES = ("cube", "uv_sphere", "ico_sphere", "cylinder", "cone", "torus", "plane", "monkey")
LIGHT_TYPES = ("point", "sun", "spot", "area")
# Spellings small models use for the same primitives; mapping them changes no meaning.
_PRIMITIVE_ALIASES = {"box": "cube", "sphere": "uv_sphere", "uvsphere": "uv_sphere", "icosphere": "ico_sphere", "suzanne": "monkey"}

MAX_OBJECTS = 64
MAX_LIGHTS = 16
MAX_COORDINATE = 1000.0  # metres, each axis, for locations and look-at targets
MAX_ROTATION = 360.0  # degrees, each axis
MAX_SCALE = 100.0  # scale is in (0, MAX_SCALE]
MAX_NAME_BYTES = 63  # Blender's limit for datablock names (UTF-8 bytes)
LENS_RANGE = (10.0, 300.0)  # mm
MAX_ENERGY = {"point": 100_000.0, "spot": 100_000.0, "area": 100_000.0, "sun": 1000.0}  # W; W/m² for a sun
MAX_REPLY_CHARS = 100_000  # a longer reply is not a plan; refuse before parsing
MAX_REPAIR_ERRORS = 8  # errors fed back to the model in one retry

# Names Blender itself gives new primitives; a plan without names gets these (then .001, .002 ...).
_DEFAULT_NAMES = {"cube": "Cube", "uv_sphere": "Sphere", "ico_sphere": "Icosphere", "cylinder": "Cylinder", "cone": "Cone"}
_DEFAULT_NAMES |= {"torus": "Torus", "plane": "Plane", "monkey": "Suzanne"}
DEFAULT_COLOR: RGB = (0.8, 0.8, 0.8)
DEFAULT_ENERGY = {"point": 1000.0, "spot": 1000.0, "area": 500.0, "sun": 3.0}
DEFAULT_LENS = 50.0
DEFAULT_LIGHT_LOCATION: Vec3 = (0.0, 0.0, 5.0)

# Sampling that suits structured output from a small model; the default 256 tokens is too few.
SUGGESTED_TEMPERATURE = 0.2
RETRY_TEMPERATURE = 0.7  # a retry with the first try's seed and temperature repeats the first reply
SUGGESTED_MAX_TOKENS = 1536
TOKENS_PER_OBJECT = 64  # one object in the embedded model's replies (1469 tokens for 23 objects, measured)
TOKENS_FOR_LIGHTS = 120  # the lights and the closing brackets
FRAME_LENS = 35.0  # mm; the framed camera's lens
FRAME_ELEVATION = 25.0  # degrees above the horizon the framed camera looks down from
FRAME_SENSOR_HEIGHT = 36.0 * 9 / 16  # mm: Blender's 36 mm sensor across a 16:9 frame, the tighter side

# The prompt says what the fields mean but holds no scene: the embedded model copied an example
# plan in the prompt ("House", 4x3x3) into every reply. The shots below show the mapping instead.
SYSTEM_PROMPT = (
    "You plan a block-out of the 3D scene the user describes: rough shapes in Blender that stand in for each thing. "
    "Reply with one JSON object and nothing else.\n"
    "objects: one for each thing the description names, and for the main parts of big things. When it gives a number "
    "(two, three, four ...) make that many, each with its own name and place. "
    "name: the thing, in a few words. type: the closest shape, one of cube, uv_sphere, ico_sphere, cylinder, cone, torus, "
    "plane, monkey. location: the centre in metres, Z up, the ground at z = 0, so a thing on the ground has z = half its "
    "height; things side by side have different x and y. size: the real width, depth and height in metres. rotation: "
    "degrees, only when a thing is turned or tilted. color: #RRGGBB.\n"
    "lights: a sun (energy 1 to 10) for daylight; point, spot or area lamps (energy 10 to 5000 W) at a location for lamps and fires."
)


def _shot(name: str, kind: str, location: Vec3, size: Vec3, color: str, rotation: Vec3 | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "type": kind, "location": list(location), "size": list(size)}
    if rotation is not None:
        item["rotation"] = list(rotation)
    return item | {"color": color}


# Few-shot turns (description, plan), sent as history before the artist's description. They differ
# from each other in scale (a desk, a street, a sky), count and layout, and from the descriptions
# the tests measure, so what a reply copies from them shows up as a copied name.
SHOTS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "a bench, a timetable sign and a rubbish bin on a pavement",
        {
            "objects": [
                _shot("Bench", "cube", (0, 1.3, 0.25), (1.8, 0.45, 0.5), "#6B4A2F"),
                _shot("Timetable sign", "cylinder", (2.5, -1.5, 1.5), (0.08, 0.08, 3), "#FFD21F"),
                _shot("Rubbish bin", "cylinder", (-2.4, 1.1, 0.45), (0.5, 0.5, 0.9), "#2E4D2E"),
                _shot("Pavement", "plane", (0, 0, 0), (12, 5, 1), "#8A8A85"),
            ],
            "lights": [{"type": "sun", "energy": 3, "color": "#FFF4E0"}],
        },
    ),
    (
        "three hot air balloons over a wheat field",
        {
            "objects": [
                _shot("Red balloon", "uv_sphere", (-20, 10, 40), (16, 16, 18), "#C8322D"),
                _shot("Yellow balloon", "uv_sphere", (15, 35, 55), (15, 15, 17), "#E8C220"),
                _shot("Blue balloon", "uv_sphere", (5, -30, 28), (17, 17, 19), "#2D5FC8"),
                _shot("Wheat field", "plane", (0, 0, 0), (100, 100, 1), "#C9A94B"),
            ],
            "lights": [{"type": "sun", "energy": 2.5, "color": "#FFB878"}],
        },
    ),
    (
        "a writing desk with a monitor, a desk lamp and a coffee mug",
        {
            "objects": [
                _shot("Desk", "cube", (0, 0, 0.37), (1.4, 0.7, 0.74), "#5C3B22"),
                _shot("Monitor", "cube", (0, 0.15, 1.0), (0.6, 0.05, 0.36), "#1A1A1A"),
                _shot("Desk lamp", "cone", (-0.5, 0.15, 0.9), (0.2, 0.2, 0.3), "#2F6F4F", (0, 0, 30)),
                _shot("Coffee mug", "cylinder", (0.45, -0.1, 0.79), (0.08, 0.08, 0.1), "#F2F2F2"),
                _shot("Floor", "plane", (0, 0, 0), (4, 4, 1), "#9C7A54"),
            ],
            "lights": [{"type": "point", "location": [-0.5, 0.1, 1.0], "energy": 40, "color": "#FFD9A0"}],
        },
    ),
)


def shot_history() -> tuple[tuple[str, str], ...]:
    """SHOTS as chat turns; the plans written the way the server's grammar writes JSON (", ", ": ")."""
    turns: list[tuple[str, str]] = []
    for description, plan in SHOTS:
        turns += [("user", description), ("assistant", json.dumps(plan))]
    return tuple(turns)


def _vec3(low: float, high: float, *, low_open: bool = False, step: float = 0.01) -> dict[str, Any]:
    # multipleOf keeps numbers short: a small model writes 2.3417 as readily as 2.34, for more tokens
    number: dict[str, Any] = {"type": "number", "exclusiveMinimum" if low_open else "minimum": low, "maximum": high, "multipleOf": step}
    return {"type": "array", "items": number, "minItems": 3, "maxItems": 3}


_COLOR_SCHEMA = {"type": "string", "pattern": "^#[0-9A-Fa-f]{6}$"}
MAX_SCHEMA_NAME = 32  # characters; a name is a few words, not the description copied (the embedded model did)
_SUN = {
    "type": "object",
    "properties": {
        "type": {"const": "sun"},
        "energy": {"type": "number", "minimum": 1, "maximum": 10, "multipleOf": 0.5},
        "color": _COLOR_SCHEMA,
    },
    "required": ["type", "energy"],
    "additionalProperties": False,
}
_LAMP = {
    "type": "object",
    "properties": {
        "type": {"enum": [kind for kind in LIGHT_TYPES if kind != "sun"]},
        "location": _vec3(-MAX_COORDINATE, MAX_COORDINATE),
        "energy": {"type": "integer", "minimum": 10, "maximum": 5000},
        "color": _COLOR_SCHEMA,
    },
    "required": ["type", "location", "energy"],
    "additionalProperties": False,
}


def plan_schema(min_objects: int = 1, max_objects: int = MAX_OBJECTS) -> dict[str, Any]:
    """The plan's shape for grammar-constrained decoding (GenerateTextRequest.json_schema).

    The reply always parses and keeps to the shots' format. What the embedded model kept getting
    wrong is out of its hands: no camera (it set look_at to the camera's own location; the
    camera is framed on the objects instead), lights unaimed, a sun's energy apart from a
    lamp's (it gave spots 2 W), short names and numbers. The object count is the caller's:
    the embedded model wrote exactly `min_objects` (with the server's default repetition
    penalty; without one it ran to the maximum, one object over and over), and `max_objects`
    is sized so the reply fits the token budget. validate_plan stays the authority. Property
    order is the order the model writes them in."""
    max_objects = max(1, min(max_objects, MAX_OBJECTS))
    return {
        "type": "object",
        "properties": {
            "objects": {
                "type": "array",
                "minItems": max(1, min(min_objects, max_objects)),
                "maxItems": max_objects,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": MAX_SCHEMA_NAME},
                        "type": {"enum": list(PRIMITIVE_TYPES)},
                        "location": _vec3(-MAX_COORDINATE, MAX_COORDINATE),
                        "size": _vec3(0.0, MAX_SCALE, low_open=True),
                        "rotation": _vec3(-MAX_ROTATION, MAX_ROTATION, step=5),
                        "color": _COLOR_SCHEMA,
                    },
                    "required": ["name", "type", "location", "size", "color"],
                    "additionalProperties": False,
                },
            },
            "lights": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"anyOf": [_SUN, _LAMP]}},
        },
        "required": ["objects", "lights"],
        "additionalProperties": False,
    }


def objects_for_budget(max_tokens: int) -> int:
    """How many objects a reply of `max_tokens` has room for, so it is not cut off mid-plan."""
    return (max_tokens - TOKENS_FOR_LIGHTS) // TOKENS_PER_OBJECT


# Words that join the things of an English description, and counts written as words.
_JOINS = re.compile(r",|;|\b(?:next to|in front of|and|with|on|in|over|under|at|by|beside|near|behind|around|inside)\b")
_COUNTS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_COUNTS |= {"eleven": 11, "twelve": 12, "few": 3, "several": 3, "some": 3, "pair": 2, "couple": 2}
_FILLER = {"a", "an", "the", "of", "lit", "small", "big", "large", "little", "old", "new"}


def things_in(description: str) -> int:
    """How many objects an English description names: one per thing joined by commas, "and",
    "with", "on", ..., a number before a thing counting that many ("four chairs" is 4). A
    description this cannot read (another language, one long phrase) counts as 2."""
    total = 0
    for phrase in _JOINS.split(description.lower()):
        words = re.findall(r"[a-z]+|\d+", phrase)
        if not [w for w in words if w not in _FILLER and w not in _COUNTS and not w.isdigit()]:
            continue
        numbers = [int(w) if w.isdigit() else _COUNTS[w] for w in words if w.isdigit() or w in _COUNTS]
        total += min(numbers[0], MAX_OBJECTS) if numbers else 1
    return max(2, total)


# The schema for a description of two things at the default budget, for a request by hand.
PLAN_SCHEMA = plan_schema(2, objects_for_budget(SUGGESTED_MAX_TOKENS))


@dataclass(frozen=True)
class Primitive:
    type: str  # one of PRIMITIVE_TYPES
    name: str
    location: Vec3
    rotation: Vec3  # degrees, XYZ Euler
    scale: Vec3  # metres along x, y, z (see the module docstring)
    color: RGB  # sRGB 0..1

    @property
    def linear_color(self) -> RGB:
        return _linear(self.color)


@dataclass(frozen=True)
class Light:
    type: str  # one of LIGHT_TYPES
    name: str
    location: Vec3
    rotation: Vec3  # degrees; a light shines down its local -Z, like a camera looks
    color: RGB  # sRGB 0..1
    energy: float  # W; W/m² for a sun

    @property
    def linear_color(self) -> RGB:
        return _linear(self.color)


@dataclass(frozen=True)
class Camera:
    name: str
    location: Vec3
    rotation: Vec3  # degrees, resolved from look_at when the plan gave one
    lens: float  # mm
    clip_end: float  # m; far enough to see every object (Blender's default 100 m cuts big scenes)


@dataclass(frozen=True)
class BlockoutPlan:
    objects: tuple[Primitive, ...]
    lights: tuple[Light, ...]
    camera: Camera  # the plan's own, or framed on the objects
    notes: tuple[str, ...] = ()  # harmless things that were ignored or repaired, for the report


@dataclass(frozen=True)
class PlanError:
    path: str  # "objects[3].scale[1]", "camera.lens", or "plan" for the reply as a whole
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class PlanResult:
    plan: BlockoutPlan | None
    errors: tuple[PlanError, ...]

    @property
    def ok(self) -> bool:
        return self.plan is not None


def _linear(color: RGB) -> RGB:
    return (srgb_to_linear(color[0]), srgb_to_linear(color[1]), srgb_to_linear(color[2]))


def look_at_rotation(location: Vec3, target: Vec3) -> Vec3:
    """XYZ Euler degrees that point a camera or light (which look down their local -Z, up +Y)
    from `location` at `target`, with the horizon level. Same result as a Track To constraint."""
    dx, dy, dz = (t - p for t, p in zip(target, location, strict=True))
    horizontal = math.hypot(dx, dy)
    tilt = math.degrees(math.atan2(horizontal, -dz))
    heading = math.degrees(math.atan2(-dx, dy)) if horizontal > 1e-9 else 0.0
    return (tilt, 0.0, heading)


def _bounds(objects: tuple[Primitive, ...] | list[Primitive]) -> tuple[Vec3, float]:
    """Centre and radius of a sphere around every object, however it is rotated."""
    spheres = []
    for item in objects:
        sx, sy, sz = item.scale
        spheres.append((item.location, 0.5 * (math.hypot(sx, sy) if item.type == "plane" else math.hypot(sx, sy, sz))))
    low = [min(c[axis] - r for c, r in spheres) for axis in range(3)]
    high = [max(c[axis] + r for c, r in spheres) for axis in range(3)]
    centre = ((low[0] + high[0]) / 2, (low[1] + high[1]) / 2, (low[2] + high[2]) / 2)
    return centre, max(0.5, max(math.dist(centre, c) + r for c, r in spheres))


def _clip_end(location: Vec3, centre: Vec3, radius: float) -> float:
    return max(100.0, round(1.1 * (math.dist(location, centre) + radius), 1))


def frame_camera(objects: tuple[Primitive, ...] | list[Primitive], name: str = "Camera") -> Camera:
    """A camera that sees every object: from the front right, FRAME_ELEVATION degrees up, far
    enough that the objects' bounding sphere fits the frame's height."""
    centre, radius = _bounds(objects)
    distance = radius / math.sin(math.atan(FRAME_SENSOR_HEIGHT / 2 / FRAME_LENS))
    up = math.radians(FRAME_ELEVATION)
    direction = (math.cos(up) * math.sqrt(0.5), -math.cos(up) * math.sqrt(0.5), math.sin(up))
    location = (
        round(centre[0] + distance * direction[0], 2),
        round(centre[1] + distance * direction[1], 2),
        round(centre[2] + distance * direction[2], 2),
    )
    return Camera(name, location, look_at_rotation(location, centre), FRAME_LENS, _clip_end(location, centre, radius))


# -- reading the reply --------------------------------------------------------------------------

_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_CANDIDATES = 16  # '{' positions tried per source; bounds the work on chatty replies


def _balanced_object(text: str, start: int) -> str | None:
    """The {...} starting at text[start], braces matched outside strings; None if it never closes."""
    depth = 0
    quote = ""
    index = start
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return text[start : index + 1]
        index += 1
    return None


def _repair(text: str) -> str:
    """Trailing commas dropped and single-quoted strings double-quoted, outside of strings only.

    A pure text rewrite for json.loads; it cannot make anything run, only change what parses."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':
            end = index + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[index : end + 1])
            index = end + 1
        elif char == "'":
            end = index + 1
            inner: list[str] = []
            while end < len(text) and text[end] != "'":
                if text[end] == "\\" and end + 1 < len(text):
                    inner.append("'" if text[end + 1] == "'" else text[end : end + 2])
                    end += 2
                else:
                    inner.append('\\"' if text[end] == '"' else text[end])
                    end += 1
            out.append('"' + "".join(inner) + '"')
            index = end + 1
        elif char == ",":
            after = index + 1
            while after < len(text) and text[after] in " \t\r\n":
                after += 1
            if after < len(text) and text[after] in "}]":
                index = after  # drop the comma; the bracket is copied next
            else:
                out.append(char)
                index += 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _loads(candidate: str) -> tuple[Any, bool]:
    """json.loads, retried once on the repaired text; (value, repaired). Raises the first error."""
    try:
        return json.loads(candidate), False
    except json.JSONDecodeError as error:
        repaired = _repair(candidate)
        if repaired == candidate:
            raise
        try:
            return json.loads(repaired), True
        except json.JSONDecodeError:
            raise error from None


def extract_json(reply: str) -> tuple[dict[str, Any] | None, PlanError | None, bool]:
    """The first JSON object in a model's reply: inside ```json fences, or amid chatter.
    Returns (object, None, repaired) or (None, error, False)."""
    if len(reply) > MAX_REPLY_CHARS:
        return None, PlanError("plan", f"the reply is {len(reply)} characters; the limit is {MAX_REPLY_CHARS}"), False
    # Fenced blocks first (the model's own framing), then the whole reply.
    sources = [match.group(1) for match in _FENCE.finditer(reply)] + [reply]
    first_error: PlanError | None = None
    for source in sources:
        start = source.find("{")
        for _ in range(_MAX_CANDIDATES):
            if start < 0:
                break
            candidate = _balanced_object(source, start)
            if candidate is None:
                first_error = first_error or PlanError("plan", "the JSON object is not closed (was the reply cut off?)")
                break  # every later '{' is inside this unclosed one
            try:
                value, repaired = _loads(candidate)
            except json.JSONDecodeError as error:
                first_error = first_error or PlanError("plan", f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}")
                value, repaired = None, False
            except RecursionError:
                first_error = first_error or PlanError("plan", "the JSON is nested too deeply")
                value, repaired = None, False
            if isinstance(value, dict):
                return value, None, repaired
            # Skip past this candidate: an object nested in a broken plan is not the plan.
            start = source.find("{", start + len(candidate))
    return None, first_error or PlanError("plan", "no JSON object found in the reply"), False


# -- checking the plan --------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """A value as an error message shows it: short, JSON-like."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = json.dumps(value) if isinstance(value, (str, list, dict)) else "null" if value is None else str(value).lower()
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    """Walks the parsed JSON, collecting errors (with paths) and notes; returns None on a bad field."""

    def __init__(self) -> None:
        self.errors: list[PlanError] = []
        self.notes: list[str] = []
        self.names: set[str] = set()

    def error(self, path: str, problem: str) -> None:
        self.errors.append(PlanError(path, problem))

    def fields(self, value: Any, path: str, known: tuple[str, ...], aliases: dict[str, str] | None = None) -> dict[str, Any] | None:
        """A JSON object with lower-cased keys, aliases resolved; unknown keys are noted, not fatal."""
        if not isinstance(value, dict):
            self.error(path, f"must be an object {{...}}, not {type(value).__name__}")
            return None
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = key.lower()
            name = (aliases or {}).get(name, name)
            if name in known:
                result[name] = item
            else:
                self.notes.append(f"{path}: ignored unknown key {key!r}")
        return result

    def number(self, value: Any, path: str, low: float, high: float, low_open: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(path, f"must be a number, not {_fmt(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.error(path, f"{value} is not a finite number")
            return None
        if value < low or value > high or (low_open and value == low):
            self.error(path, f"{_fmt(value)} is outside {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}]")
            return None
        return float(value)

    def vector(self, value: Any, path: str, low: float, high: float, low_open: bool = False, uniform: bool = False) -> Vec3 | None:
        if uniform and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value] * 3  # "scale": 2 means 2 on every axis
        if not isinstance(value, list) or len(value) != 3:
            self.error(path, f"must be a list of 3 numbers [x, y, z], not {_fmt(value)}")
            return None
        numbers = [self.number(item, f"{path}[{axis}]", low, high, low_open) for axis, item in enumerate(value)]
        if any(n is None for n in numbers):
            return None
        return (numbers[0], numbers[1], numbers[2])

    def color(self, value: Any, path: str) -> RGB | None:
        if value is None:
            return DEFAULT_COLOR
        if isinstance(value, str):
            rgb = parse_hex(value)
            if rgb is None:
                self.error(path, f"{_fmt(value)} is not a colour; use '#RRGGBB' or [r, g, b] with each in [0, 1]")
            return rgb
        if isinstance(value, list) and len(value) == 4:
            value = value[:3]  # RGBA: alpha has no meaning for a block-out colour
        return self.vector(value, path, 0.0, 1.0)

    def choice(self, value: Any, path: str, options: tuple[str, ...], aliases: dict[str, str]) -> str | None:
        if isinstance(value, str):
            key = value.strip().lower().replace(" ", "_").replace("-", "_")
            key = aliases.get(key, key)
            if key in options:
                return key
        self.error(path, f"{_fmt(value)} is not one of {', '.join(options)}")
        return None

    def name(self, value: Any, path: str, default: str) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            value = default
        if not isinstance(value, str):
            self.error(path, f"must be a string, not {_fmt(value)}")
            return None
        value = " ".join(value.split())  # one line, no control characters
        size = len(value.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            self.error(path, f"{size} bytes is over the limit of {MAX_NAME_BYTES}")
            return None
        return self.unique(value)

    def unique(self, name: str) -> str:
        candidate, number = name, 0
        while candidate in self.names:
            number += 1
            suffix = f".{number:03d}"
            candidate = name.encode("utf-8")[: MAX_NAME_BYTES - len(suffix)].decode("utf-8", "ignore") + suffix
        self.names.add(candidate)
        return candidate

    def looks_at_itself(self, fields: dict[str, Any], location: Vec3 | None) -> bool:
        """look_at is location: a direction nobody can follow (the embedded model wrote it often)."""
        target = fields.get("look_at")
        if location is None or not isinstance(target, list) or len(target) != 3:
            return False
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in target)
        return numbers and math.dist(target, location) < 1e-6

    def aim(self, fields: dict[str, Any], path: str, location: Vec3 | None) -> Vec3 | None:
        """`rotation` from `look_at` when given (it wins over `rotation`), else `rotation`, else level."""
        if fields.get("look_at") is not None:
            target = self.vector(fields["look_at"], f"{path}.look_at", -MAX_COORDINATE, MAX_COORDINATE)
            if target is None or location is None:
                return None
            if fields.get("rotation") is not None:
                self.notes.append(f"{path}: rotation ignored because look_at is given")
            return look_at_rotation(location, target)
        if fields.get("rotation") is None:
            return (0.0, 0.0, 0.0)
        return self.vector(fields["rotation"], f"{path}.rotation", -MAX_ROTATION, MAX_ROTATION)

    def primitive(self, value: Any, path: str) -> Primitive | None:
        fields = self.fields(value, path, ("type", "name", "location", "rotation", "scale", "color"), {"colour": "color", "size": "scale"})
        if fields is None:
            return None
        kind = self.choice(fields.get("type"), f"{path}.type", PRIMITIVE_TYPES, _PRIMITIVE_ALIASES)
        name = self.name(fields.get("name"), f"{path}.name", _DEFAULT_NAMES.get(kind or "", "Object"))
        location = self.vector(fields.get("location", [0, 0, 0]), f"{path}.location", -MAX_COORDINATE, MAX_COORDINATE)
        rotation = self.vector(fields.get("rotation", [0, 0, 0]), f"{path}.rotation", -MAX_ROTATION, MAX_ROTATION)
        scale = self.vector(fields.get("scale", [1, 1, 1]), f"{path}.scale", 0.0, MAX_SCALE, low_open=True, uniform=True)
        color = self.color(fields.get("color"), f"{path}.color")
        if kind is None or name is None or location is None or rotation is None or scale is None or color is None:
            return None
        return Primitive(kind, name, location, rotation, scale, color)

    def light(self, value: Any, path: str) -> Light | None:
        known = ("type", "name", "location", "rotation", "look_at", "color", "energy")
        fields = self.fields(value, path, known, {"colour": "color", "target": "look_at", "power": "energy", "strength": "energy"})
        if fields is None:
            return None
        kind = self.choice(fields.get("type", "point"), f"{path}.type", LIGHT_TYPES, {})
        name = self.name(fields.get("name"), f"{path}.name", "Light")
        location = self.vector(fields.get("location", list(DEFAULT_LIGHT_LOCATION)), f"{path}.location", -MAX_COORDINATE, MAX_COORDINATE)
        if self.looks_at_itself(fields, location):
            self.notes.append(f"{path}.look_at was the light's own location; it shines straight down")
            fields = {key: item for key, item in fields.items() if key not in ("look_at", "rotation")}
        rotation = self.aim(fields, path, location)
        color = self.color(fields.get("color"), f"{path}.color")
        energy = None
        if kind is not None:
            energy = self.number(fields.get("energy", DEFAULT_ENERGY[kind]), f"{path}.energy", 0.0, MAX_ENERGY[kind])
        if kind is None or name is None or location is None or rotation is None or color is None or energy is None:
            return None
        return Light(kind, name, location, rotation, color, energy)

    def camera(self, value: Any, path: str, objects: list[Primitive]) -> Camera | None:
        """The plan's camera; framed on the objects when it looked at its own location."""
        aliases = {"target": "look_at", "focal_length": "lens"}
        fields = self.fields(value, path, ("name", "location", "rotation", "look_at", "lens"), aliases)
        if fields is None:
            return None
        name = self.name(fields.get("name"), f"{path}.name", "Camera")
        if "location" not in fields:
            self.error(f"{path}.location", "is missing; a camera needs a location [x, y, z]")
            return None
        location = self.vector(fields["location"], f"{path}.location", -MAX_COORDINATE, MAX_COORDINATE)
        if objects and name is not None and self.looks_at_itself(fields, location):
            self.notes.append(f"{path}.look_at was the camera's own location; the camera is framed on the objects instead")
            return frame_camera(objects, name)
        rotation = self.aim(fields, path, location)
        lens = self.number(fields.get("lens", DEFAULT_LENS), f"{path}.lens", *LENS_RANGE)
        if name is None or location is None or rotation is None or lens is None:
            return None
        return Camera(name, location, rotation, lens, _clip_end(location, *_bounds(objects)) if objects else 100.0)

    def items(self, value: Any, path: str, limit: int, what: str) -> list[Any] | None:
        if not isinstance(value, list):
            self.error(path, f"must be a list [...] of {what}, not {_fmt(value)}")
            return None
        if len(value) > limit:
            # Checked before the items: the model should cut the list, and the work stays bounded.
            self.error(path, f"{len(value)} {what} is over the limit of {limit}")
            return None
        return value


SPREAD_GAP = 0.5  # m between objects moved apart by _spread


def _spread(objects: list[Primitive], notes: list[str]) -> list[Primitive]:
    """Objects given exactly the same location hide inside each other, so each later one moves
    along +x to stand beside the one before it (the embedded model gave most objects one spot)."""
    ends: dict[Vec3, float] = {}  # for each spot taken, where the row of objects on it ends along x
    placed, moved = [], []
    for item in objects:
        spot = item.location
        if spot in ends:
            x = round(ends[spot] + SPREAD_GAP + item.scale[0] / 2, 2)
            moved.append(item.name)
            item = replace(item, location=(x, spot[1], spot[2]))
        ends[spot] = item.location[0] + item.scale[0] / 2
        placed.append(item)
    if moved:
        notes.append(f"moved {_listed(moved)} along x, off the spot an earlier object has")
    return placed


def validate_plan(data: Any) -> PlanResult:
    """Check an already-parsed plan; a normalized BlockoutPlan, or every error found."""
    check = _Checker()
    fields = check.fields(data, "plan", ("objects", "lights", "camera"), {"primitives": "objects"})
    if fields is None:
        return PlanResult(None, tuple(check.errors))
    objects: list[Primitive | None] = []
    raw_objects = check.items(fields.get("objects", []), "objects", MAX_OBJECTS, "objects")
    if raw_objects is not None:
        if not raw_objects:
            check.error("objects", "the plan has no objects; give at least one")
        objects = [check.primitive(item, f"objects[{index}]") for index, item in enumerate(raw_objects)]
    lights: list[Light | None] = []
    raw_lights = check.items(fields.get("lights", []), "lights", MAX_LIGHTS, "lights")
    if raw_lights is not None:
        lights = [check.light(item, f"lights[{index}]") for index, item in enumerate(raw_lights)]
    built = _spread([o for o in objects if o is not None], check.notes)
    camera = check.camera(fields["camera"], "camera", built) if fields.get("camera") is not None else None
    if check.errors:
        return PlanResult(None, tuple(check.errors))
    plan = BlockoutPlan(
        objects=tuple(built),
        lights=tuple(lt for lt in lights if lt is not None),
        # Replies held to the schema have no camera: a plan always gets one that sees it all.
        camera=camera or frame_camera(built, check.unique("Camera")),
        notes=tuple(check.notes),
    )
    return PlanResult(plan, ())


def parse_plan(reply: str) -> PlanResult:
    """A model's reply (chatter, fences and all) to a validated plan, or the errors that stop it."""
    data, error, repaired = extract_json(reply)
    if error is not None:
        return PlanResult(None, (error,))
    result = validate_plan(data)
    if result.plan is not None and repaired:
        notes = ("plan: repaired trailing commas or single quotes in the JSON", *result.plan.notes)
        return PlanResult(BlockoutPlan(result.plan.objects, result.plan.lights, result.plan.camera, notes), ())
    return result


def repair_prompt(errors: tuple[PlanError, ...] | list[PlanError]) -> str:
    """The retry message: what was wrong, path by path, and what to send back."""
    listed = [f"- {error}" for error in errors[:MAX_REPAIR_ERRORS]]
    if len(errors) > MAX_REPAIR_ERRORS:
        listed.append(f"- and {len(errors) - MAX_REPAIR_ERRORS} more problems")
    return (
        "Your plan could not be used:\n"
        + "\n".join(listed)
        + "\nFix these and reply with the whole corrected JSON object only, in the same format, with no other text."
    )


# -- what a build made, in words --------------------------------------------------------------


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True)
class BuildReport:
    """What the bpy builder made, as it ended up in the scene (names after Blender's renaming)."""

    collection: str
    objects: int
    lights: int
    camera: str | None  # the block-out's camera, when one was made (it is then the scene camera)
    kept_camera: str | None  # the scene camera that was kept instead
    replaced: str | None = None  # the previous block-out's collection, removed
    renamed: tuple[str, ...] = ()  # objects whose plan name other objects hold, as Blender numbered them
    notes: tuple[str, ...] = ()  # the plan's notes: what was repaired or ignored

    @property
    def message(self) -> str:
        made = [_count(self.objects, "object")] + ([_count(self.lights, "light")] if self.lights else [])
        made += ["a camera"] if self.camera else []
        text = f"Blocked out {_listed(made)} in '{self.collection}'"
        if self.replaced:
            text += ", replacing the previous one" + ("" if self.replaced == self.collection else f", '{self.replaced}'")
        text += "."
        if self.camera:
            text += f" Its camera '{self.camera}' is now the scene camera."
        if self.kept_camera:
            text += f" Kept the scene camera '{self.kept_camera}'."
        if self.renamed:
            more = f" (+{len(self.renamed) - 3} more)" if len(self.renamed) > 3 else ""
            text += f" Names already taken, so numbered: {', '.join(self.renamed[:3])}{more}."
        if self.notes:
            more = f" (+{len(self.notes) - 2} more)" if len(self.notes) > 2 else ""
            text += f" Note: {'; '.join(self.notes[:2])}{more}."
        return text
