"""ArtForge's ONNX Runtime runtime: sessions for a device, cached per (model file, device).

"cpu" runs on the CPU execution provider; "cuda:N" on the CUDA execution provider with
device_id N when this onnxruntime build has it (the `onnxruntime-gpu` package), and otherwise
on the CPU with a warning in the log. Graph optimizations are all on, and compute is
deterministic: the same inputs give the same outputs. After every run the memory arenas shrink
back, so one big image does not keep gigabytes of activations held for the life of the server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from artforge.errors import ArtForgeError, ErrorCode
from artforge.runtimes.devices import is_cpu
from artforge.runtimes.loaded import LoadedModels

if TYPE_CHECKING:  # imported where used: onnxruntime is an optional extra
    import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def cpu_threads() -> int:
    """The cores this process may run on (cgroup/affinity aware where the OS tells us), or fewer
    where OMP_NUM_THREADS says so, as torch does (Ray sets it to a worker's `num_cpus`)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    return min(cores, int(wanted)) if wanted.isdigit() and int(wanted) > 0 else cores


def providers_for(device: str) -> list[str | tuple[str, dict[str, str]]]:
    """The execution providers for an ArtForge device name ("cpu", "cuda", "cuda:N")."""
    import onnxruntime as ort

    if is_cpu(device):
        return [CPU]
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"device: {device!r} is not cpu, cuda or cuda:N")
        if CUDA in ort.get_available_providers():
            # HEURISTIC: tiles of a new shape do not pay for an exhaustive cuDNN search.
            return [(CUDA, {"device_id": index, "cudnn_conv_algo_search": "HEURISTIC"}), CPU]
        log.warning(
            "onnxruntime %s has no CUDA execution provider (install onnxruntime-gpu); running ONNX models of %s on the CPU",
            ort.__version__,
            device,
        )
        return [CPU]
    raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"device: {device!r} is not cpu, cuda or cuda:N")


def session_options(device: str) -> ort.SessionOptions:
    """ONNX Runtime session options for ArtForge: every graph optimization, deterministic compute
    (the same request gives the same output), errors-only logging, and every core for one session,
    since one worker thread per device runs jobs and these models' operators run in order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = True
    options.log_severity_level = 3  # errors only; ORT's warnings about unused initializers are noise
    options.intra_op_num_threads = cpu_threads() if is_cpu(device) else min(4, cpu_threads())
    options.inter_op_num_threads = 1
    return options


def shrinking_run_options(device: str, on_cuda: bool) -> ort.RunOptions:
    """Run options that shrink the memory arenas after each run, so one big image does not keep
    gigabytes of activations held for the life of the server."""
    import onnxruntime as ort

    run_options = ort.RunOptions()
    arenas = f"cpu:0;gpu:{device.partition(':')[2] or '0'}" if on_cuda else "cpu:0"
    run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
    return run_options


class OnnxModel:
    """One InferenceSession on one device, run on numpy arrays by input name."""

    def __init__(self, path: Path, device: str) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.device = device
        providers = providers_for(device)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(device), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtForgeError(ErrorCode.INTERNAL, f"{self.path.name}: onnxruntime could not load it on {device}: {exc}") from exc
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        active = self.session.get_providers()
        if active[0] != wanted:
            # onnxruntime falls back to the CPU silently when the CUDA libraries fail to load.
            log.warning(
                "%s: asked onnxruntime for %s on %s, got %s (CUDA or cuDNN libraries missing?)", self.path.name, wanted, device, active[0]
            )
        self.provider = active[0]
        self.backend = "onnx-cuda" if self.provider == CUDA else "onnx-cpu"
        self.run_options = shrinking_run_options(device, self.provider == CUDA)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def input_shape(self, name: str) -> list[int | str | None]:
        return list(self.inputs[name].shape)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run on float32 inputs given by name; the named outputs (all by default), in order."""
        missing = set(self.inputs) - set(inputs)
        unknown = set(inputs) - set(self.inputs)
        if missing or unknown:
            raise ArtForgeError(
                ErrorCode.INTERNAL,
                f"{self.path.name}: inputs {sorted(inputs)} do not match the model's {self.input_names}",
            )
        feed = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in inputs.items()}
        return self.session.run(outputs, feed, self.run_options)


class OnnxSessions:
    """Sessions cached per (model file, device), least recently used closed first."""

    def __init__(self, max_per_device: int) -> None:
        self._loaded: LoadedModels[OnnxModel] = LoadedModels(max_per_device)

    def get(self, path: Path, device: str, on_load: Callable[[], None] | None = None) -> OnnxModel:
        """The session of `path` on `device`, created (after `on_load()`) when missing."""
        key = str(Path(path).resolve())
        return self._loaded.get(device, key, lambda: OnnxModel(Path(path), device), on_load)

    def loaded_paths(self) -> set[Path]:
        return {Path(name) for name in self._loaded.loaded_names()}
