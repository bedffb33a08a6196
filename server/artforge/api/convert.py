"""proto <-> domain: the only place that knows both shapes."""

from __future__ import annotations

from artforge.engines.base import Usage
from artforge.engines.text import TextRequest
from artforge.jobs.events import Event, Finished, JobState, Progress, Queued, Started, TextDelta
from artforge.jobs.job import Job
from artforge.models.registry import ModelSpec
from artforge_client.v1 import jobs_pb2, server_pb2, text_pb2

_PHASES = {
    "loading_model": jobs_pb2.JobProgress.PHASE_LOADING_MODEL,
    "generating": jobs_pb2.JobProgress.PHASE_GENERATING,
    "postprocessing": jobs_pb2.JobProgress.PHASE_POSTPROCESSING,
}
_MODEL_KINDS = {
    "text": server_pb2.MODEL_KIND_TEXT,
    "image": server_pb2.MODEL_KIND_IMAGE,
    "style": server_pb2.MODEL_KIND_STYLE,
    "safety": server_pb2.MODEL_KIND_SAFETY,
    "lora": server_pb2.MODEL_KIND_LORA,
}
MODEL_KIND_NAMES = {number: name for name, number in _MODEL_KINDS.items()}


def text_request(message: text_pb2.GenerateTextRequest) -> TextRequest:
    return TextRequest(
        prompt=message.prompt,
        model=message.model,
        task=message.task,
        history=[(m.role, m.content) for m in message.history],
        system_prompt=message.system_prompt,
        max_tokens=message.max_tokens if message.HasField("max_tokens") else None,
        temperature=message.temperature if message.HasField("temperature") else None,
        top_p=message.top_p if message.HasField("top_p") else None,
        stop=list(message.stop),
        seed=message.seed if message.HasField("seed") else None,
        repetition_penalty=message.repetition_penalty if message.HasField("repetition_penalty") else None,
    )


def usage(u: Usage) -> jobs_pb2.Usage:
    return jobs_pb2.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        time_to_first_token_seconds=u.time_to_first_token_seconds,
        tokens_per_second=u.tokens_per_second,
        queued_seconds=u.queued_seconds,
        run_seconds=u.run_seconds,
    )


def job_event(job_id: str, sequence: int, elapsed: float, event: Event) -> jobs_pb2.JobEvent:
    message = jobs_pb2.JobEvent(job_id=job_id, sequence=sequence, elapsed_seconds=elapsed)
    match event:
        case Queued():
            message.queued.CopyFrom(jobs_pb2.JobQueued(position=event.position, queue_length=event.queue_length))
        case Started():
            message.started.CopyFrom(jobs_pb2.JobStarted(model=event.model, backend=event.backend, device=event.device, seed=event.seed))
        case Progress():
            message.progress.CopyFrom(
                jobs_pb2.JobProgress(phase=_PHASES[event.phase], step=event.step, total_steps=event.total_steps, message=event.message)
            )
        case TextDelta():
            message.text.CopyFrom(jobs_pb2.TextDelta(text=event.text, completion_tokens=event.completion_tokens))
        case Finished():
            message.finished.CopyFrom(
                jobs_pb2.JobFinished(
                    state=event.state.value,
                    error=jobs_pb2.JobError(code=event.error_code.value, message=event.error_message) if event.error_code else None,
                    usage=usage(event.usage),
                    text=event.text,
                    finish_reason=event.finish_reason,
                )
            )
    return message


def job_info(job: Job) -> jobs_pb2.JobInfo:
    code, message = job.error()
    return jobs_pb2.JobInfo(
        job_id=job.id,
        state=job.state.value,
        kind=job.kind,
        model=job.model,
        label=job.label,
        priority=job.priority,
        queue_position=max(job.position, 0) if job.state is JobState.QUEUED else 0,
        usage=usage(job.usage),
        error=jobs_pb2.JobError(code=code.value, message=message) if code else None,
        events=len(job.events),
    )


def model_info(spec: ModelSpec, *, loaded: bool, is_default: bool, context_length: int) -> server_pb2.ModelInfo:
    return server_pb2.ModelInfo(
        name=spec.name,
        kind=_MODEL_KINDS[spec.kind],
        format=spec.format,
        path=str(spec.path),
        backend_requested=spec.backend,
        # Only the PyTorch runtime exists so far; the ONNX fast path will report itself here.
        backend="torch" if loaded else "",
        backend_reason="" if spec.backend == "torch" else "PyTorch: the ONNX fast path is not in this version yet",
        loaded=loaded,
        is_default=is_default,
        description=spec.description,
        context_length=context_length,
    )
