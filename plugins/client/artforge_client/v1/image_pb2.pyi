from . import jobs_pb2 as _jobs_pb2
from . import pixels_pb2 as _pixels_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_MODE_UNSPECIFIED: _ClassVar[ImageMode]
    IMAGE_MODE_TXT2IMG: _ClassVar[ImageMode]
    IMAGE_MODE_IMG2IMG: _ClassVar[ImageMode]
    IMAGE_MODE_INPAINT: _ClassVar[ImageMode]
IMAGE_MODE_UNSPECIFIED: ImageMode
IMAGE_MODE_TXT2IMG: ImageMode
IMAGE_MODE_IMG2IMG: ImageMode
IMAGE_MODE_INPAINT: ImageMode

class GenerateImageRequest(_message.Message):
    __slots__ = ("model", "mode", "prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "seed", "batch_size", "scheduler", "tiling", "loras", "init_image", "strength", "mask", "output_format", "pbr_maps", "preview_every", "options", "controls")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    TILING_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PBR_MAPS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    model: str
    mode: ImageMode
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    batch_size: int
    scheduler: str
    tiling: _pixels_pb2.Tiling
    loras: _containers.RepeatedCompositeFieldContainer[_pixels_pb2.LoraWeight]
    init_image: _pixels_pb2.Image
    strength: float
    mask: _pixels_pb2.Image
    output_format: _pixels_pb2.OutputFormat
    pbr_maps: bool
    preview_every: int
    options: _jobs_pb2.JobOptions
    controls: _containers.RepeatedCompositeFieldContainer[Control]
    def __init__(self, model: _Optional[str] = ..., mode: _Optional[_Union[ImageMode, str]] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., batch_size: _Optional[int] = ..., scheduler: _Optional[str] = ..., tiling: _Optional[_Union[_pixels_pb2.Tiling, _Mapping]] = ..., loras: _Optional[_Iterable[_Union[_pixels_pb2.LoraWeight, _Mapping]]] = ..., init_image: _Optional[_Union[_pixels_pb2.Image, _Mapping]] = ..., strength: _Optional[float] = ..., mask: _Optional[_Union[_pixels_pb2.Image, _Mapping]] = ..., output_format: _Optional[_Union[_pixels_pb2.OutputFormat, str]] = ..., pbr_maps: _Optional[bool] = ..., preview_every: _Optional[int] = ..., options: _Optional[_Union[_jobs_pb2.JobOptions, _Mapping]] = ..., controls: _Optional[_Iterable[_Union[Control, _Mapping]]] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("type", "model", "image", "strength", "start", "end", "preprocessor")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSOR_FIELD_NUMBER: _ClassVar[int]
    type: str
    model: str
    image: _pixels_pb2.Image
    strength: float
    start: float
    end: float
    preprocessor: str
    def __init__(self, type: _Optional[str] = ..., model: _Optional[str] = ..., image: _Optional[_Union[_pixels_pb2.Image, _Mapping]] = ..., strength: _Optional[float] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., preprocessor: _Optional[str] = ...) -> None: ...

class PreprocessRequest(_message.Message):
    __slots__ = ("image", "preprocessor", "output_format", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSOR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _pixels_pb2.Image
    preprocessor: str
    output_format: _pixels_pb2.OutputFormat
    options: _jobs_pb2.JobOptions
    def __init__(self, image: _Optional[_Union[_pixels_pb2.Image, _Mapping]] = ..., preprocessor: _Optional[str] = ..., output_format: _Optional[_Union[_pixels_pb2.OutputFormat, str]] = ..., options: _Optional[_Union[_jobs_pb2.JobOptions, _Mapping]] = ...) -> None: ...

class StyleBlend(_message.Message):
    __slots__ = ("styles", "weights")
    STYLES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    styles: _containers.RepeatedScalarFieldContainer[int]
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, styles: _Optional[_Iterable[int]] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class StylizeRequest(_message.Message):
    __slots__ = ("model", "image", "style_index", "blend", "style_image", "strength", "tile_size", "output_format", "options")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STYLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    BLEND_FIELD_NUMBER: _ClassVar[int]
    STYLE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: _pixels_pb2.Image
    style_index: int
    blend: StyleBlend
    style_image: _pixels_pb2.Image
    strength: float
    tile_size: int
    output_format: _pixels_pb2.OutputFormat
    options: _jobs_pb2.JobOptions
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[_pixels_pb2.Image, _Mapping]] = ..., style_index: _Optional[int] = ..., blend: _Optional[_Union[StyleBlend, _Mapping]] = ..., style_image: _Optional[_Union[_pixels_pb2.Image, _Mapping]] = ..., strength: _Optional[float] = ..., tile_size: _Optional[int] = ..., output_format: _Optional[_Union[_pixels_pb2.OutputFormat, str]] = ..., options: _Optional[_Union[_jobs_pb2.JobOptions, _Mapping]] = ...) -> None: ...
