from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_TEXT: _ClassVar[ModelKind]
    MODEL_KIND_IMAGE: _ClassVar[ModelKind]
    MODEL_KIND_STYLE: _ClassVar[ModelKind]
    MODEL_KIND_SAFETY: _ClassVar[ModelKind]
    MODEL_KIND_LORA: _ClassVar[ModelKind]
    MODEL_KIND_CONTROLNET: _ClassVar[ModelKind]
    MODEL_KIND_DEPTH: _ClassVar[ModelKind]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_TEXT: ModelKind
MODEL_KIND_IMAGE: ModelKind
MODEL_KIND_STYLE: ModelKind
MODEL_KIND_SAFETY: ModelKind
MODEL_KIND_LORA: ModelKind
MODEL_KIND_CONTROLNET: ModelKind
MODEL_KIND_DEPTH: ModelKind

class GetServerInfoRequest(_message.Message):
    __slots__ = ("include_style_previews",)
    INCLUDE_STYLE_PREVIEWS_FIELD_NUMBER: _ClassVar[int]
    include_style_previews: bool
    def __init__(self, include_style_previews: _Optional[bool] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_tokens", "default_max_tokens", "max_prompt_chars", "max_image_pixels", "max_steps", "max_batch", "max_queue", "chunk_bytes", "max_request_bytes", "max_priority", "result_ttl_seconds", "min_priority", "max_history_messages", "max_history_chars", "max_name_chars", "max_label_chars", "max_stop_strings", "max_stop_chars", "max_json_schema_chars", "max_json_schema_depth", "max_loras", "max_blend_styles", "max_concurrent_rpcs", "max_result_bytes", "drain_seconds", "max_controls")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RESULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_HISTORY_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_HISTORY_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_NAME_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_LABEL_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_STOP_STRINGS_FIELD_NUMBER: _ClassVar[int]
    MAX_STOP_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_JSON_SCHEMA_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_JSON_SCHEMA_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_LORAS_FIELD_NUMBER: _ClassVar[int]
    MAX_BLEND_STYLES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RPCS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTROLS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    default_max_tokens: int
    max_prompt_chars: int
    max_image_pixels: int
    max_steps: int
    max_batch: int
    max_queue: int
    chunk_bytes: int
    max_request_bytes: int
    max_priority: int
    result_ttl_seconds: float
    min_priority: int
    max_history_messages: int
    max_history_chars: int
    max_name_chars: int
    max_label_chars: int
    max_stop_strings: int
    max_stop_chars: int
    max_json_schema_chars: int
    max_json_schema_depth: int
    max_loras: int
    max_blend_styles: int
    max_concurrent_rpcs: int
    max_result_bytes: int
    drain_seconds: float
    max_controls: int
    def __init__(self, max_tokens: _Optional[int] = ..., default_max_tokens: _Optional[int] = ..., max_prompt_chars: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_queue: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_priority: _Optional[int] = ..., result_ttl_seconds: _Optional[float] = ..., min_priority: _Optional[int] = ..., max_history_messages: _Optional[int] = ..., max_history_chars: _Optional[int] = ..., max_name_chars: _Optional[int] = ..., max_label_chars: _Optional[int] = ..., max_stop_strings: _Optional[int] = ..., max_stop_chars: _Optional[int] = ..., max_json_schema_chars: _Optional[int] = ..., max_json_schema_depth: _Optional[int] = ..., max_loras: _Optional[int] = ..., max_blend_styles: _Optional[int] = ..., max_concurrent_rpcs: _Optional[int] = ..., max_result_bytes: _Optional[int] = ..., drain_seconds: _Optional[float] = ..., max_controls: _Optional[int] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "description", "busy", "node", "loaded_models")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    busy: bool
    node: str
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., busy: _Optional[bool] = ..., node: _Optional[str] = ..., loaded_models: _Optional[_Iterable[str]] = ...) -> None: ...

class TextTask(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Style(_message.Message):
    __slots__ = ("index", "name", "preview_png")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_PNG_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    preview_png: bytes
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., preview_png: _Optional[bytes] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("server_version", "api_version", "devices", "limits", "tasks", "default_text_model", "default_image_model", "schedulers", "styles", "queue_length", "running_jobs", "auth_required", "images_available", "stylize_available", "loaded_models")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TEXT_MODEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_IMAGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    STYLIZE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    limits: Limits
    tasks: _containers.RepeatedCompositeFieldContainer[TextTask]
    default_text_model: str
    default_image_model: str
    schedulers: _containers.RepeatedScalarFieldContainer[str]
    styles: _containers.RepeatedCompositeFieldContainer[Style]
    queue_length: int
    running_jobs: int
    auth_required: bool
    images_available: bool
    stylize_available: bool
    loaded_models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TextTask, _Mapping]]] = ..., default_text_model: _Optional[str] = ..., default_image_model: _Optional[str] = ..., schedulers: _Optional[_Iterable[str]] = ..., styles: _Optional[_Iterable[_Union[Style, _Mapping]]] = ..., queue_length: _Optional[int] = ..., running_jobs: _Optional[int] = ..., auth_required: _Optional[bool] = ..., images_available: _Optional[bool] = ..., stylize_available: _Optional[bool] = ..., loaded_models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "format", "path", "backend_requested", "backend", "backend_reason", "loaded", "is_default", "description", "context_length", "control_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REASON_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CONTROL_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    format: str
    path: str
    backend_requested: str
    backend: str
    backend_reason: str
    loaded: bool
    is_default: bool
    description: str
    context_length: int
    control_type: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., format: _Optional[str] = ..., path: _Optional[str] = ..., backend_requested: _Optional[str] = ..., backend: _Optional[str] = ..., backend_reason: _Optional[str] = ..., loaded: _Optional[bool] = ..., is_default: _Optional[bool] = ..., description: _Optional[str] = ..., context_length: _Optional[int] = ..., control_type: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: ModelKind
    def __init__(self, kind: _Optional[_Union[ModelKind, str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetServerStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Quotas(_message.Message):
    __slots__ = ("max_queued_jobs", "max_running_jobs", "device_seconds_per_hour", "device_seconds_burst", "max_image_pixels")
    MAX_QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_BURST_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    max_queued_jobs: int
    max_running_jobs: int
    device_seconds_per_hour: float
    device_seconds_burst: float
    max_image_pixels: int
    def __init__(self, max_queued_jobs: _Optional[int] = ..., max_running_jobs: _Optional[int] = ..., device_seconds_per_hour: _Optional[float] = ..., device_seconds_burst: _Optional[float] = ..., max_image_pixels: _Optional[int] = ...) -> None: ...

class UserStats(_message.Message):
    __slots__ = ("user", "role", "weight", "queued_jobs", "running_jobs", "device_seconds_last_hour", "quotas", "queued_jobs_left", "device_seconds_left", "device_seconds_charged")
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_LAST_HOUR_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_LEFT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_LEFT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    user: str
    role: str
    weight: float
    queued_jobs: int
    running_jobs: int
    device_seconds_last_hour: float
    quotas: Quotas
    queued_jobs_left: int
    device_seconds_left: float
    device_seconds_charged: float
    def __init__(self, user: _Optional[str] = ..., role: _Optional[str] = ..., weight: _Optional[float] = ..., queued_jobs: _Optional[int] = ..., running_jobs: _Optional[int] = ..., device_seconds_last_hour: _Optional[float] = ..., quotas: _Optional[_Union[Quotas, _Mapping]] = ..., queued_jobs_left: _Optional[int] = ..., device_seconds_left: _Optional[float] = ..., device_seconds_charged: _Optional[float] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("users", "queue_length", "running_jobs", "queue_policy", "caller", "workers")
    USERS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POLICY_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserStats]
    queue_length: int
    running_jobs: int
    queue_policy: str
    caller: str
    workers: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, users: _Optional[_Iterable[_Union[UserStats, _Mapping]]] = ..., queue_length: _Optional[int] = ..., running_jobs: _Optional[int] = ..., queue_policy: _Optional[str] = ..., caller: _Optional[str] = ..., workers: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...
