from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW: _ClassVar[ImageEncoding]

class PixelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_TYPE_UNSPECIFIED: _ClassVar[PixelType]
    PIXEL_TYPE_UINT8: _ClassVar[PixelType]
    PIXEL_TYPE_UINT16: _ClassVar[PixelType]
    PIXEL_TYPE_FLOAT16: _ClassVar[PixelType]
    PIXEL_TYPE_FLOAT32: _ClassVar[PixelType]

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG8: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG16: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_RAW_FLOAT32: _ClassVar[OutputFormat]

class ImageRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ROLE_UNSPECIFIED: _ClassVar[ImageRole]
    IMAGE_ROLE_COLOR: _ClassVar[ImageRole]
    IMAGE_ROLE_HEIGHT: _ClassVar[ImageRole]
    IMAGE_ROLE_NORMAL: _ClassVar[ImageRole]
    IMAGE_ROLE_ROUGHNESS: _ClassVar[ImageRole]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_RAW: ImageEncoding
PIXEL_TYPE_UNSPECIFIED: PixelType
PIXEL_TYPE_UINT8: PixelType
PIXEL_TYPE_UINT16: PixelType
PIXEL_TYPE_FLOAT16: PixelType
PIXEL_TYPE_FLOAT32: PixelType
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_PNG8: OutputFormat
OUTPUT_FORMAT_PNG16: OutputFormat
OUTPUT_FORMAT_RAW_FLOAT32: OutputFormat
IMAGE_ROLE_UNSPECIFIED: ImageRole
IMAGE_ROLE_COLOR: ImageRole
IMAGE_ROLE_HEIGHT: ImageRole
IMAGE_ROLE_NORMAL: ImageRole
IMAGE_ROLE_ROUGHNESS: ImageRole

class Image(_message.Message):
    __slots__ = ("encoding", "width", "height", "channels", "dtype", "data")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    encoding: ImageEncoding
    width: int
    height: int
    channels: int
    dtype: PixelType
    data: bytes
    def __init__(self, encoding: _Optional[_Union[ImageEncoding, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., dtype: _Optional[_Union[PixelType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Tiling(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: bool
    y: bool
    def __init__(self, x: _Optional[bool] = ..., y: _Optional[bool] = ...) -> None: ...

class LoraWeight(_message.Message):
    __slots__ = ("name", "scale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("prompt", "negative_prompt", "seed", "model", "steps", "scheduler", "width", "height", "guidance_scale", "strength", "tiling", "loras", "server_version", "style", "controls")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    TILING_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    negative_prompt: str
    seed: int
    model: str
    steps: int
    scheduler: str
    width: int
    height: int
    guidance_scale: float
    strength: float
    tiling: Tiling
    loras: _containers.RepeatedCompositeFieldContainer[LoraWeight]
    server_version: str
    style: str
    controls: _containers.RepeatedCompositeFieldContainer[AppliedControl]
    def __init__(self, prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ..., steps: _Optional[int] = ..., scheduler: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., strength: _Optional[float] = ..., tiling: _Optional[_Union[Tiling, _Mapping]] = ..., loras: _Optional[_Iterable[_Union[LoraWeight, _Mapping]]] = ..., server_version: _Optional[str] = ..., style: _Optional[str] = ..., controls: _Optional[_Iterable[_Union[AppliedControl, _Mapping]]] = ...) -> None: ...

class AppliedControl(_message.Message):
    __slots__ = ("model", "strength", "start", "end", "preprocessor")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    strength: float
    start: float
    end: float
    preprocessor: str
    def __init__(self, model: _Optional[str] = ..., strength: _Optional[float] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., preprocessor: _Optional[str] = ...) -> None: ...

class ImageResultHeader(_message.Message):
    __slots__ = ("result_index", "batch_index", "role", "image", "total_bytes", "sha256", "provenance", "nsfw_blurred")
    RESULT_INDEX_FIELD_NUMBER: _ClassVar[int]
    BATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    NSFW_BLURRED_FIELD_NUMBER: _ClassVar[int]
    result_index: int
    batch_index: int
    role: ImageRole
    image: Image
    total_bytes: int
    sha256: str
    provenance: Provenance
    nsfw_blurred: bool
    def __init__(self, result_index: _Optional[int] = ..., batch_index: _Optional[int] = ..., role: _Optional[_Union[ImageRole, str]] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., nsfw_blurred: _Optional[bool] = ...) -> None: ...

class ImageDataChunk(_message.Message):
    __slots__ = ("result_index", "offset", "data")
    RESULT_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    result_index: int
    offset: int
    data: bytes
    def __init__(self, result_index: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
