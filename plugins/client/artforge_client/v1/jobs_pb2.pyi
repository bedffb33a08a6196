from . import pixels_pb2 as _pixels_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_DEADLINE_EXCEEDED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_DEADLINE_EXCEEDED: JobState

class JobOptions(_message.Message):
    __slots__ = ("priority", "keep_on_disconnect", "label")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    KEEP_ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    priority: int
    keep_on_disconnect: bool
    label: str
    def __init__(self, priority: _Optional[int] = ..., keep_on_disconnect: _Optional[bool] = ..., label: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "elapsed_seconds", "queued", "started", "progress", "text", "image_header", "image_chunk", "finished")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEADER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    elapsed_seconds: float
    queued: JobQueued
    started: JobStarted
    progress: JobProgress
    text: TextDelta
    image_header: _pixels_pb2.ImageResultHeader
    image_chunk: _pixels_pb2.ImageDataChunk
    finished: JobFinished
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., queued: _Optional[_Union[JobQueued, _Mapping]] = ..., started: _Optional[_Union[JobStarted, _Mapping]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., text: _Optional[_Union[TextDelta, _Mapping]] = ..., image_header: _Optional[_Union[_pixels_pb2.ImageResultHeader, _Mapping]] = ..., image_chunk: _Optional[_Union[_pixels_pb2.ImageDataChunk, _Mapping]] = ..., finished: _Optional[_Union[JobFinished, _Mapping]] = ...) -> None: ...

class JobQueued(_message.Message):
    __slots__ = ("position", "queue_length", "estimated_wait_seconds")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    position: int
    queue_length: int
    estimated_wait_seconds: float
    def __init__(self, position: _Optional[int] = ..., queue_length: _Optional[int] = ..., estimated_wait_seconds: _Optional[float] = ...) -> None: ...

class JobStarted(_message.Message):
    __slots__ = ("model", "backend", "device", "seed", "attempt", "worker", "backend_reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    backend: str
    device: str
    seed: int
    attempt: int
    worker: str
    backend_reason: str
    def __init__(self, model: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., seed: _Optional[int] = ..., attempt: _Optional[int] = ..., worker: _Optional[str] = ..., backend_reason: _Optional[str] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("phase", "step", "total_steps", "preview", "message")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[JobProgress.Phase]
        PHASE_LOADING_MODEL: _ClassVar[JobProgress.Phase]
        PHASE_GENERATING: _ClassVar[JobProgress.Phase]
        PHASE_POSTPROCESSING: _ClassVar[JobProgress.Phase]
        PHASE_EXPORTING_MODEL: _ClassVar[JobProgress.Phase]
        PHASE_RESTARTING: _ClassVar[JobProgress.Phase]
        PHASE_PREPROCESSING: _ClassVar[JobProgress.Phase]
    PHASE_UNSPECIFIED: JobProgress.Phase
    PHASE_LOADING_MODEL: JobProgress.Phase
    PHASE_GENERATING: JobProgress.Phase
    PHASE_POSTPROCESSING: JobProgress.Phase
    PHASE_EXPORTING_MODEL: JobProgress.Phase
    PHASE_RESTARTING: JobProgress.Phase
    PHASE_PREPROCESSING: JobProgress.Phase
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    phase: JobProgress.Phase
    step: int
    total_steps: int
    preview: _pixels_pb2.Image
    message: str
    def __init__(self, phase: _Optional[_Union[JobProgress.Phase, str]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., preview: _Optional[_Union[_pixels_pb2.Image, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text", "completion_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    completion_tokens: int
    def __init__(self, text: _Optional[str] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "time_to_first_token_seconds", "tokens_per_second", "queued_seconds", "run_seconds", "device_seconds")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_seconds: float
    tokens_per_second: float
    queued_seconds: float
    run_seconds: float
    device_seconds: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., time_to_first_token_seconds: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., queued_seconds: _Optional[float] = ..., run_seconds: _Optional[float] = ..., device_seconds: _Optional[float] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class JobFinished(_message.Message):
    __slots__ = ("state", "error", "usage", "text", "finish_reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    error: JobError
    usage: Usage
    text: str
    finish_reason: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., text: _Optional[str] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "state", "kind", "model", "label", "priority", "queue_position", "usage", "error", "events", "owner", "submitted_at", "started_at", "finished_at", "device", "estimated_wait_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    kind: str
    model: str
    label: str
    priority: int
    queue_position: int
    usage: Usage
    error: JobError
    events: int
    owner: str
    submitted_at: float
    started_at: float
    finished_at: float
    device: str
    estimated_wait_seconds: float
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., label: _Optional[str] = ..., priority: _Optional[int] = ..., queue_position: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., events: _Optional[int] = ..., owner: _Optional[str] = ..., submitted_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., device: _Optional[str] = ..., estimated_wait_seconds: _Optional[float] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("all_users", "include_finished", "limit")
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FINISHED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    all_users: bool
    include_finished: bool
    limit: int
    def __init__(self, all_users: _Optional[bool] = ..., include_finished: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "others_queued", "others_running")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    OTHERS_QUEUED_FIELD_NUMBER: _ClassVar[int]
    OTHERS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    others_queued: int
    others_running: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ..., others_queued: _Optional[int] = ..., others_running: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "from_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    from_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., from_sequence: _Optional[int] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...
