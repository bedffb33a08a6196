"""The PyTorch diffusion runtime on the tiny SD 1.5 pipeline: what one job leaves on a warm pipeline."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub

from dataclasses import replace

from diffusers import DEISMultistepScheduler

from artforge.runtimes.torch_diffusion import load_pipeline, set_scheduler
from tests.conftest import REPO
from tests.tiny_pipelines import build_all


def test_a_model_whose_own_scheduler_has_no_name_here_gets_it_back_after_another_job():
    paths = build_all(REPO / ".cache" / "tiny-models")
    # As a checkpoint that ships DEIS (no API name) loads: its class kept, its config as it came.
    loaded = replace(load_pipeline("tiny-sd15", paths["tiny-sd15"], False, None, "cpu"), scheduler_class=DEISMultistepScheduler)
    pipeline = loaded.text2img
    set_scheduler(loaded, pipeline, "dpmpp_2m_karras")
    assert pipeline.scheduler.config.use_karras_sigmas
    set_scheduler(loaded, pipeline, "DEISMultistepScheduler")  # the model's default, by its class name
    assert type(pipeline.scheduler) is DEISMultistepScheduler and not pipeline.scheduler.config.use_karras_sigmas
