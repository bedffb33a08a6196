"""The block-out plan: the JSON the text engine returns for "block out a scene from a description".

The model's reply is data, never code: it is parsed with `json` (after at most two textual
repairs, trailing commas and single-quoted strings), checked field by field against the limits
below, and comes back either as a normalized `BlockoutPlan` or as `PlanError`s naming the JSON
path and the limit broken. Nothing here imports bpy, and nothing is ever evaluated.

Conventions the bpy builder must follow, because the prompt promises them to the model:
- Metres, Z up, the ground at z = 0; `location` is an object's centre.
- At scale (1, 1, 1) every primitive fits a 1 m cube centred on its location, so `scale` is the
  size in metres along x, y, z (cube size=1, spheres radius=0.5, cylinder/cone radius 0.5 and
  depth 1, plane size=1, monkey size=1, torus scaled to 1 m across).
- Rotations are XYZ Euler in DEGREES (convert with math.radians).
- Colours are sRGB 0..1 (`color`); `linear_color` is what goes into a Principled BSDF Base Color.
- Names are unique within the plan (duplicates get ".001" suffixes, as Blender does), but the
  scene may already use them: Blender renames on creation, so use the created object, not a lookup.
- Camera and lights are aimed already: `rotation` is resolved from `look_at` when one was given.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
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
SUGGESTED_MAX_TOKENS = 1536

SYSTEM_PROMPT = (
    "You turn a scene description into a JSON block-out plan for Blender. Reply with one JSON object and nothing else.\n"
    'Format: {"objects": [{"type": T, "name": "...", "location": [x, y, z], "rotation": [x, y, z], "scale": [x, y, z], '
    '"color": "#RRGGBB"}], "lights": [{"type": L, "location": [x, y, z], "energy": W, "color": "#RRGGBB"}], '
    '"camera": {"look_at": [x, y, z], "location": [x, y, z], "lens": 50}}\n'
    "T is one of: cube, uv_sphere, ico_sphere, cylinder, cone, torus, plane, monkey. L is one of: point, sun, spot, area.\n"
    "Metres, Z is up, the ground is z = 0. location is the centre; scale is the size in metres; rotation is in degrees. "
    f"At most {MAX_OBJECTS} objects.\n"
    'Example: {"objects": [{"type": "plane", "name": "Ground", "location": [0, 0, 0], "scale": [20, 20, 1], "color": "#557733"}, '
    '{"type": "cube", "name": "House", "location": [0, 0, 1.5], "scale": [4, 3, 3], "color": "#AA4433"}], '
    '"lights": [{"type": "sun", "energy": 3}], "camera": {"look_at": [0, 0, 1], "location": [10, -10, 6], "lens": 35}}'
)


def _vec3(low: float, high: float, *, low_open: bool = False) -> dict[str, Any]:
    number: dict[str, Any] = {"type": "number", "exclusiveMinimum" if low_open else "minimum": low, "maximum": high}
    return {"type": "array", "items": number, "minItems": 3, "maxItems": 3}


_COLOR_SCHEMA = {"type": "string", "pattern": "^#[0-9A-Fa-f]{6}$"}
_NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES}

# The plan's shape for grammar-constrained decoding (GenerateTextRequest.json_schema): the reply
# always parses and keeps to the format in SYSTEM_PROMPT (lights are not aimed: the embedded
# model copied their location into look_at). validate_plan stays the authority: a schema cannot
# say that a sun's energy has a lower limit than other lights', that names are counted in UTF-8
# bytes, or that look_at differs from location. Property order is the order the model writes them in.
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "objects": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_OBJECTS,
            "items": {
                "type": "object",
                "properties": {
                    "type": {"enum": list(PRIMITIVE_TYPES)},
                    "name": _NAME_SCHEMA,
                    "location": _vec3(-MAX_COORDINATE, MAX_COORDINATE),
                    "rotation": _vec3(-MAX_ROTATION, MAX_ROTATION),
                    "scale": _vec3(0.0, MAX_SCALE, low_open=True),
                    "color": _COLOR_SCHEMA,
                },
                "required": ["type", "name", "location", "scale", "color"],
                "additionalProperties": False,
            },
        },
        "lights": {
            "type": "array",
            "maxItems": MAX_LIGHTS,
            "items": {
                "type": "object",
                "properties": {
                    "type": {"enum": list(LIGHT_TYPES)},
                    "location": _vec3(-MAX_COORDINATE, MAX_COORDINATE),
                    "energy": {"type": "number", "minimum": 0, "maximum": max(MAX_ENERGY.values())},
                    "color": _COLOR_SCHEMA,
                },
                "required": ["type", "energy"],
                "additionalProperties": False,
            },
        },
        "camera": {
            "type": "object",
            "properties": {
                "look_at": _vec3(-MAX_COORDINATE, MAX_COORDINATE),
                "location": _vec3(-MAX_COORDINATE, MAX_COORDINATE),
                "lens": {"type": "number", "minimum": LENS_RANGE[0], "maximum": LENS_RANGE[1]},
            },
            "required": ["location", "look_at", "lens"],
            "additionalProperties": False,
        },
    },
    "required": ["objects", "lights", "camera"],
    "additionalProperties": False,
}


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


@dataclass(frozen=True)
class BlockoutPlan:
    objects: tuple[Primitive, ...]
    lights: tuple[Light, ...]
    camera: Camera | None
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

    def aim(self, fields: dict[str, Any], path: str, location: Vec3 | None) -> Vec3 | None:
        """`rotation` from `look_at` when given (it wins over `rotation`), else `rotation`, else level."""
        if fields.get("look_at") is not None:
            target = self.vector(fields["look_at"], f"{path}.look_at", -MAX_COORDINATE, MAX_COORDINATE)
            if target is None or location is None:
                return None
            if math.dist(target, location) < 1e-6:
                self.error(f"{path}.look_at", "is the same point as location")
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
        rotation = self.aim(fields, path, location)
        color = self.color(fields.get("color"), f"{path}.color")
        energy = None
        if kind is not None:
            energy = self.number(fields.get("energy", DEFAULT_ENERGY[kind]), f"{path}.energy", 0.0, MAX_ENERGY[kind])
        if kind is None or name is None or location is None or rotation is None or color is None or energy is None:
            return None
        return Light(kind, name, location, rotation, color, energy)

    def camera(self, value: Any, path: str) -> Camera | None:
        aliases = {"target": "look_at", "focal_length": "lens"}
        fields = self.fields(value, path, ("name", "location", "rotation", "look_at", "lens"), aliases)
        if fields is None:
            return None
        name = self.name(fields.get("name"), f"{path}.name", "Camera")
        if "location" not in fields:
            self.error(f"{path}.location", "is missing; a camera needs a location [x, y, z]")
            return None
        location = self.vector(fields["location"], f"{path}.location", -MAX_COORDINATE, MAX_COORDINATE)
        rotation = self.aim(fields, path, location)
        lens = self.number(fields.get("lens", DEFAULT_LENS), f"{path}.lens", *LENS_RANGE)
        if name is None or location is None or rotation is None or lens is None:
            return None
        return Camera(name, location, rotation, lens)

    def items(self, value: Any, path: str, limit: int, what: str) -> list[Any] | None:
        if not isinstance(value, list):
            self.error(path, f"must be a list [...] of {what}, not {_fmt(value)}")
            return None
        if len(value) > limit:
            # Checked before the items: the model should cut the list, and the work stays bounded.
            self.error(path, f"{len(value)} {what} is over the limit of {limit}")
            return None
        return value


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
    camera = check.camera(fields["camera"], "camera") if fields.get("camera") is not None else None
    if check.errors:
        return PlanResult(None, tuple(check.errors))
    plan = BlockoutPlan(
        objects=tuple(o for o in objects if o is not None),
        lights=tuple(lt for lt in lights if lt is not None),
        camera=camera,
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
