"""Which devices the server runs jobs on: one worker per device.

"cpu:0", "cpu:1", ... are workers that share the CPU: jobs run side by side on its cores, as on
a many-core machine that serves several small jobs at once.
"""

from __future__ import annotations

import re

from artforge.errors import ArtForgeError, ErrorCode


def is_cpu(device: str) -> bool:
    return device == "cpu" or re.fullmatch(r"cpu:\d+", device) is not None


def resolve_devices(requested: list[str]) -> list[str]:
    """Expand "auto" to every CUDA GPU, or the CPU when there is none; check the rest."""
    import torch

    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    devices: list[str] = []
    for name in requested or ["auto"]:
        if name == "auto":
            devices.extend(gpus or ["cpu"])
        elif is_cpu(name) or name in gpus:
            devices.append(name)
        elif name == "cuda" and gpus:
            devices.append(gpus[0])
        else:
            available = ", ".join(["cpu", "cpu:N", *gpus])
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"devices: {name!r} is not available here; available: {available}")
    return list(dict.fromkeys(devices))


def describe_device(name: str) -> str:
    import torch

    if name.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(name))
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
