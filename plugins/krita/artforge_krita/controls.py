"""Control layers in plain Python (no `krita` import): the docker's control rows, what they send, and what the server offers.

A row picks a layer, a use, a strength and the part of the steps it acts on. A use is a
ControlNet type and how the layer is read: as it is (the layer already holds a control image: a
"Control: canny" layer made by From canvas, a depth pass) or through the server's preprocessor of
that type ("scribble from layer": the strokes of a drawn layer, found by its alpha; "canny from
layer": the edges of a picture). The layer's pixels go over the job's region, padded like the
job's source image (krita_adapter reads them, jobs.image_request adds them to the request).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from artforge_client.v1 import image_pb2, pixels_pb2
from artforge_krita.pixels import Refused

# The server's control types (artforge.models.registry.CONTROL_TYPES), in the order the Type list shows them.
CONTROL_TYPES = ("scribble", "lineart", "canny", "depth", "softedge", "normal", "tile", "inpaint")
# What the server can make a control image from (Control.preprocessor, PreprocessRequest.preprocessor).
PREPROCESSORS = ("canny", "scribble", "lineart", "depth")
DEFAULT_MAX_CONTROLS = 4  # ServerInfo.limits.max_controls of a server that does not say
MAX_STRENGTH = 2.0
LAYER_PREFIX = "Control: "  # the name of a layer From canvas makes: "Control: canny"


@dataclass(frozen=True)
class Use:
    """An entry of a row's Type list: the ControlNet type, and the preprocessor the server runs on the layer first ("": none)."""

    type: str
    preprocessor: str = ""

    @property
    def label(self) -> str:
        return f"{self.type} from layer" if self.preprocessor else self.type


def uses(types: Sequence[str]) -> list[Use]:
    """The Type list: every type as it is, then the types the server can make from a layer."""
    return [Use(kind) for kind in types] + [Use(kind, kind) for kind in types if kind in PREPROCESSORS]


def default_use(entries: Sequence[Use], layer_name: str) -> Use:
    """What a new row uses its layer as: a "Control: TYPE" layer as it is; any other layer as a
    drawing the server reads for scribble (else the first entry)."""
    made = use_of_control_layer(layer_name)
    for wanted in (made, Use("scribble", "scribble")):
        if wanted is not None and wanted in entries:
            return wanted
    return entries[0] if entries else Use(CONTROL_TYPES[0])


def use_of_control_layer(layer_name: str) -> Use | None:
    """A layer From canvas made ("Control: canny") holds a finished control image of that type."""
    if not layer_name.startswith(LAYER_PREFIX):
        return None
    kind = layer_name[len(LAYER_PREFIX) :].strip()
    return Use(kind) if kind in CONTROL_TYPES else None


def layer_name(preprocessor: str) -> str:
    return f"{LAYER_PREFIX}{preprocessor}"


@dataclass(frozen=True)
class ControlOptions:
    """What the server offers for controls: the types of its registered ControlNets (all types when
    it has none or was not asked), and how many controls a job may have."""

    types: tuple[str, ...] = CONTROL_TYPES
    max_controls: int = DEFAULT_MAX_CONTROLS
    known: bool = False  # whether the server listed its ControlNets

    @property
    def uses(self) -> list[Use]:
        return uses(self.types)


def control_options(controlnet_types: Iterable[str], max_controls: int) -> ControlOptions:
    """From Test Connection's ServerSummary: its ControlNets' types and ServerInfo.limits.max_controls (0: not said)."""
    found = set(controlnet_types)
    types = tuple(kind for kind in CONTROL_TYPES if kind in found) or CONTROL_TYPES
    return ControlOptions(types, max_controls or DEFAULT_MAX_CONTROLS, known=True)


@dataclass(frozen=True)
class ControlChoice:
    """One row of the docker's Controls: a layer (Krita's unique id, and its name to speak of it), its use, strength and step range."""

    layer_id: str
    layer_name: str
    use: Use
    strength: float = 1.0
    start: float = 0.0  # fractions of the steps
    end: float = 1.0


def check_choices(choices: Sequence[ControlChoice], max_controls: int = DEFAULT_MAX_CONTROLS) -> None:
    """Refused with a sentence naming the row when the server would refuse the controls."""
    if len(choices) > max_controls:
        raise Refused(f"The server takes at most {max_controls} controls a job; remove {len(choices) - max_controls}.")
    for number, choice in enumerate(choices, 1):
        if not choice.layer_id:
            raise Refused(f"Control {number}: pick its layer.")
        if choice.use.type not in CONTROL_TYPES:
            raise Refused(f"Control {number}: '{choice.use.type}' is not a control type ({', '.join(CONTROL_TYPES)}).")
        if choice.use.preprocessor and choice.use.preprocessor not in PREPROCESSORS:
            raise Refused(f"Control {number}: the server cannot make '{choice.use.preprocessor}' from a layer.")
        if not 0.0 <= choice.strength <= MAX_STRENGTH:
            raise Refused(f"Control {number}: strength {choice.strength:g} is outside 0..{MAX_STRENGTH:g}.")
        if not 0.0 <= choice.start < choice.end <= 1.0:
            raise Refused(f"Control {number}: it must start before it ends (from {choice.start:.0%} to {choice.end:.0%} of the steps).")


@dataclass(frozen=True)
class ControlLayer:
    """A row with its layer's pixels over the job's region, in the document's format (what Node.pixelData gave)."""

    choice: ControlChoice
    data: bytes


def control_message(choice: ControlChoice, image: pixels_pb2.Image) -> image_pb2.Control:
    """A Control for the request; strength, start and end always set, so the request says what the row says."""
    control = image_pb2.Control(type=choice.use.type, image=image, preprocessor=choice.use.preprocessor)
    control.strength = choice.strength
    control.start = choice.start
    control.end = choice.end
    return control
