"""proto <-> domain: the only place that knows both shapes."""

from __future__ import annotations

from artforge import __version__
from artforge.api.pixels import decode_image
from artforge.config import Limits
from artforge.engines.base import Provenance, Usage
from artforge.engines.image import ControlInput, ImageRequest
from artforge.engines.preprocess import PreprocessRequest
from artforge.engines.stylize import StylizeRequest
from artforge.engines.text import TextRequest
from artforge.errors import invalid
from artforge.images import EncodedImage
from artforge.jobs.events import Event, Finished, ImageChunk, ImageHeader, Progress, Queued, Started, TextDelta
from artforge.jobs.scheduler import JobSummary, UserLoad
from artforge.service import ModelStatus, RequestReader, ServerInfo, ServerStats, SubmitOptions, WorkerStatus
from artforge.users import User
from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2, server_pb2, text_pb2

_PHASES = {
    "loading_model": jobs_pb2.JobProgress.PHASE_LOADING_MODEL,
    "generating": jobs_pb2.JobProgress.PHASE_GENERATING,
    "postprocessing": jobs_pb2.JobProgress.PHASE_POSTPROCESSING,
    "exporting_model": jobs_pb2.JobProgress.PHASE_EXPORTING_MODEL,
    "restarting": jobs_pb2.JobProgress.PHASE_RESTARTING,
    "preprocessing": jobs_pb2.JobProgress.PHASE_PREPROCESSING,
}
_MODEL_KINDS = {
    "text": server_pb2.MODEL_KIND_TEXT,
    "image": server_pb2.MODEL_KIND_IMAGE,
    "style": server_pb2.MODEL_KIND_STYLE,
    "safety": server_pb2.MODEL_KIND_SAFETY,
    "lora": server_pb2.MODEL_KIND_LORA,
    "controlnet": server_pb2.MODEL_KIND_CONTROLNET,
    "depth": server_pb2.MODEL_KIND_DEPTH,
}
MODEL_KIND_NAMES = {number: name for name, number in _MODEL_KINDS.items()}
_MODES = {
    image_pb2.IMAGE_MODE_UNSPECIFIED: "txt2img",
    image_pb2.IMAGE_MODE_TXT2IMG: "txt2img",
    image_pb2.IMAGE_MODE_IMG2IMG: "img2img",
    image_pb2.IMAGE_MODE_INPAINT: "inpaint",
}
_OUTPUT_FORMATS = {
    pixels_pb2.OUTPUT_FORMAT_UNSPECIFIED: "png8",
    pixels_pb2.OUTPUT_FORMAT_PNG8: "png8",
    pixels_pb2.OUTPUT_FORMAT_PNG16: "png16",
    pixels_pb2.OUTPUT_FORMAT_RAW_FLOAT32: "raw_float32",
}
_ROLES = {
    "color": pixels_pb2.IMAGE_ROLE_COLOR,
    "height": pixels_pb2.IMAGE_ROLE_HEIGHT,
    "normal": pixels_pb2.IMAGE_ROLE_NORMAL,
    "roughness": pixels_pb2.IMAGE_ROLE_ROUGHNESS,
}
_ENCODINGS = {"png": pixels_pb2.IMAGE_ENCODING_PNG, "raw": pixels_pb2.IMAGE_ENCODING_RAW}
_DTYPES = {"uint8": pixels_pb2.PIXEL_TYPE_UINT8, "uint16": pixels_pb2.PIXEL_TYPE_UINT16, "float32": pixels_pb2.PIXEL_TYPE_FLOAT32}


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
        json_schema=message.json_schema,
    )


def request_readers(limits: Limits) -> dict[str, RequestReader]:
    """How each kind of job's request reads from the bytes the job store keeps."""
    max_pixels = limits.max_image_pixels
    return {
        "text": lambda data: text_request(text_pb2.GenerateTextRequest.FromString(data)),
        "image": lambda data: image_request(image_pb2.GenerateImageRequest.FromString(data), max_pixels),
        "stylize": lambda data: stylize_request(image_pb2.StylizeRequest.FromString(data), max_pixels),
        "preprocess": lambda data: preprocess_request(image_pb2.PreprocessRequest.FromString(data), max_pixels),
    }


def submit_options(options: jobs_pb2.JobOptions, output_format: int) -> SubmitOptions:
    """The priority is checked by the service: its range depends on the caller's role."""
    if output_format not in _OUTPUT_FORMATS:
        raise invalid("output_format", f"{output_format} is not a known OutputFormat")
    return SubmitOptions(options.priority, options.keep_on_disconnect, options.label, _OUTPUT_FORMATS[output_format])


def image_request(message: image_pb2.GenerateImageRequest, max_pixels: int) -> ImageRequest:
    """Decodes the input images (INVALID_ARGUMENT for corrupt or oversized ones)."""
    if message.mode not in _MODES:
        raise invalid("mode", f"{message.mode} is not a known ImageMode")
    has = message.HasField
    return ImageRequest(
        prompt=message.prompt,
        negative_prompt=message.negative_prompt,
        model=message.model,
        mode=_MODES[message.mode],
        width=message.width,
        height=message.height,
        steps=message.steps if has("steps") else None,
        guidance_scale=message.guidance_scale if has("guidance_scale") else None,
        seed=message.seed if has("seed") else None,
        batch_size=message.batch_size,
        scheduler=message.scheduler,
        tile_x=message.tiling.x,
        tile_y=message.tiling.y,
        loras=[(lora.name, lora.scale) for lora in message.loras],
        init_image=decode_image(message.init_image, "init_image", max_pixels) if has("init_image") else None,
        strength=message.strength,
        mask=decode_image(message.mask, "mask", max_pixels) if has("mask") else None,
        pbr_maps=message.pbr_maps,
        preview_every=message.preview_every,
        controls=[_control(control, f"controls[{i}]", max_pixels) for i, control in enumerate(message.controls)],
    )


def _control(message: image_pb2.Control, name: str, max_pixels: int) -> ControlInput:
    has = message.HasField
    return ControlInput(
        type=message.type,
        model=message.model,
        image=decode_image(message.image, f"{name}.image", max_pixels) if has("image") else None,
        strength=message.strength if has("strength") else 1.0,
        start=message.start if has("start") else 0.0,
        end=message.end if has("end") else 1.0,
        preprocessor=message.preprocessor,
    )


def stylize_request(message: image_pb2.StylizeRequest, max_pixels: int) -> StylizeRequest:
    if not message.HasField("image"):
        raise invalid("image", "is required: the picture to stylize")
    style = message.WhichOneof("style")
    if style == "blend":
        styles, weights = message.blend.styles, message.blend.weights
        if not styles:
            raise invalid("blend", "is empty; give styles and their weights")
        if len(styles) != len(weights):
            raise invalid("blend", f"has {len(styles)} styles but {len(weights)} weights; give one weight per style")
    return StylizeRequest(
        image=decode_image(message.image, "image", max_pixels),
        model=message.model,
        style_index=message.style_index if style == "style_index" else None,
        blend=list(zip(message.blend.styles, message.blend.weights, strict=True)) if style == "blend" else [],
        style_image=decode_image(message.style_image, "style_image", max_pixels) if style == "style_image" else None,
        strength=message.strength,
        tile_size=message.tile_size,
    )


def preprocess_request(message: image_pb2.PreprocessRequest, max_pixels: int) -> PreprocessRequest:
    image = decode_image(message.image, "image", max_pixels) if message.HasField("image") else None
    return PreprocessRequest(image=image, preprocessor=message.preprocessor)


def image_message(image: EncodedImage, with_data: bool) -> pixels_pb2.Image:
    return pixels_pb2.Image(
        encoding=_ENCODINGS[image.encoding],
        width=image.width,
        height=image.height,
        channels=image.channels,
        dtype=_DTYPES[image.dtype],
        data=image.data if with_data else b"",
    )


def provenance(p: Provenance, server_version: str) -> pixels_pb2.Provenance:
    return pixels_pb2.Provenance(
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        seed=p.seed,
        model=p.model,
        steps=p.steps,
        scheduler=p.scheduler,
        width=p.width,
        height=p.height,
        guidance_scale=p.guidance_scale,
        strength=p.strength,
        tiling=pixels_pb2.Tiling(x=p.tiling_x, y=p.tiling_y),
        loras=[pixels_pb2.LoraWeight(name=name, scale=scale) for name, scale in p.loras],
        server_version=server_version,
        style=p.style,
        controls=[
            pixels_pb2.AppliedControl(model=model, strength=strength, start=start, end=end, preprocessor=preprocessor)
            for model, strength, start, end, preprocessor in p.controls
        ],
    )


def usage(u: Usage) -> jobs_pb2.Usage:
    return jobs_pb2.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        time_to_first_token_seconds=u.time_to_first_token_seconds,
        tokens_per_second=u.tokens_per_second,
        queued_seconds=u.queued_seconds,
        run_seconds=u.run_seconds,
        device_seconds=u.device_seconds,
    )


def job_event(job_id: str, sequence: int, elapsed: float, event: Event) -> jobs_pb2.JobEvent:
    message = jobs_pb2.JobEvent(job_id=job_id, sequence=sequence, elapsed_seconds=elapsed)
    match event:
        case Queued():
            message.queued.CopyFrom(
                jobs_pb2.JobQueued(
                    position=event.position, queue_length=event.queue_length, estimated_wait_seconds=event.estimated_wait_seconds
                )
            )
        case Started():
            started = jobs_pb2.JobStarted(
                model=event.model, backend=event.backend, device=event.device, seed=event.seed, backend_reason=event.reason
            )
            started.attempt, started.worker = event.attempt, event.worker
            message.started.CopyFrom(started)
        case Progress():
            message.progress.CopyFrom(
                jobs_pb2.JobProgress(
                    phase=_PHASES[event.phase],
                    step=event.step,
                    total_steps=event.total_steps,
                    message=event.message,
                    preview=image_message(event.preview, with_data=True) if event.preview else None,
                )
            )
        case ImageHeader():
            message.image_header.CopyFrom(
                pixels_pb2.ImageResultHeader(
                    result_index=event.result_index,
                    batch_index=event.batch_index,
                    role=_ROLES[event.role],
                    image=image_message(event.image, with_data=False),
                    total_bytes=event.total_bytes,
                    sha256=event.sha256,
                    provenance=provenance(event.provenance, __version__),
                    nsfw_blurred=event.nsfw_blurred,
                )
            )
        case ImageChunk():
            message.image_chunk.CopyFrom(pixels_pb2.ImageDataChunk(result_index=event.result_index, offset=event.offset, data=event.data))
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


def job_info(job: JobSummary) -> jobs_pb2.JobInfo:
    return jobs_pb2.JobInfo(
        job_id=job.id,
        state=job.state.value,
        kind=job.kind,
        model=job.model,
        label=job.label,
        priority=job.priority,
        queue_position=job.position,
        usage=usage(job.usage),
        error=jobs_pb2.JobError(code=job.error_code.value, message=job.error_message) if job.error_code else None,
        events=job.events,
        owner=job.owner,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        device=job.device,
        estimated_wait_seconds=job.estimated_wait_seconds,
    )


def server_stats(stats: ServerStats) -> server_pb2.ServerStats:
    return server_pb2.ServerStats(
        users=[user_stats(row.user, row.load) for row in stats.users],
        queue_length=stats.queue_length,
        running_jobs=stats.running_jobs,
        queue_policy=stats.queue_policy,
        caller=stats.caller.name,
        workers=[device(worker) for worker in stats.workers],
    )


def device(worker: WorkerStatus) -> server_pb2.Device:
    return server_pb2.Device(
        name=worker.name, description=worker.description, busy=worker.busy, node=worker.node, loaded_models=worker.loaded_models
    )


def user_stats(user: User, load: UserLoad) -> server_pb2.UserStats:
    quota = user.quota
    return server_pb2.UserStats(
        user=user.name,
        role=user.role,
        weight=user.weight,
        queued_jobs=load.queued,
        running_jobs=load.running,
        device_seconds_last_hour=load.device_seconds_last_hour,
        quotas=server_pb2.Quotas(
            max_queued_jobs=quota.max_queued_jobs,
            max_running_jobs=quota.max_running_jobs,
            device_seconds_per_hour=quota.device_seconds_per_hour,
            device_seconds_burst=quota.bucket_seconds,
            max_image_pixels=quota.max_image_pixels,
        ),
        queued_jobs_left=max(quota.max_queued_jobs - load.queued, 0),
        device_seconds_left=load.device_seconds_left,
        device_seconds_charged=load.device_seconds_charged,
    )


def model_info(model: ModelStatus) -> server_pb2.ModelInfo:
    spec = model.spec
    return server_pb2.ModelInfo(
        name=spec.name,
        kind=_MODEL_KINDS[spec.kind],
        format=spec.format,
        path=str(spec.path),
        backend_requested=spec.backend,
        backend=model.backend,
        backend_reason=model.backend_reason,
        loaded=model.loaded,
        is_default=model.is_default,
        description=spec.description,
        context_length=model.context_length,
        control_type=spec.control_type,
    )


def server_info(info: ServerInfo, *, auth_required: bool, style_previews: bool) -> server_pb2.ServerInfo:
    """`style_previews`: send each style's preview PNG (about 40 KB each)."""
    return server_pb2.ServerInfo(
        server_version=info.version,
        api_version="v1",
        devices=[device(worker) for worker in info.devices],
        limits=server_pb2.Limits(**info.limits),
        tasks=[server_pb2.TextTask(name=t.name, description=t.description) for t in info.tasks],
        default_text_model=info.default_text_model,
        default_image_model=info.default_image_model,
        schedulers=info.schedulers,
        styles=[server_pb2.Style(index=s.index, name=s.name, preview_png=s.preview_png if style_previews else b"") for s in info.styles],
        images_available=info.images_available,
        stylize_available=info.stylize_available,
        queue_length=info.queue_length,
        running_jobs=info.running_jobs,
        auth_required=auth_required,
        loaded_models=[model_info(model) for model in info.loaded_models],
    )
