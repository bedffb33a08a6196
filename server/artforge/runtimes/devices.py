"""Which devices the server runs jobs on: one worker per device."""

from __future__ import annotations

from artforge.errors import ArtForgeError, ErrorCode


def resolve_devices(requested: list[str]) -> list[str]:
    """Expand "auto" to every CUDA GPU, or the CPU when there is none; check the rest."""
    import torch

    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    devices: list[str] = []
    for name in requested or ["auto"]:
        if name == "auto":
            devices.extend(gpus or ["cpu"])
        elif name == "cpu" or name in gpus:
            devices.append(name)
        elif name == "cuda" and gpus:
            devices.append(gpus[0])
        else:
            available = ", ".join(["cpu", *gpus])
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"devices: {name!r} is not available here; available: {available}")
    return list(dict.fromkeys(devices))


def describe_device(name: str) -> str:
    import torch

    if name.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(name))
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
