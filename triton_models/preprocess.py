"""Video bytes -> face tensors: the ``preprocessing`` library behind a python-backend model."""

from __future__ import annotations

import torch
import triton_python_backend_utils as pb_utils

from preprocessing import FacePipeline, InputError, PipelineConfig
from triton_models.common import OutputTensors, instance_device, model_parameters, parse_config
from triton_models.metrics import VideoCounter
from triton_models.video import Fingerprints, VideoModel

# Adapter settings; every other parameter goes to PipelineConfig.from_parameters.
TORCH_THREADS = "torch_threads"


def build_pipeline(args: dict[str, str], adapter_keys: tuple[str, ...] = ()) -> tuple[FacePipeline, dict[str, str]]:
    """The pipeline a python model's config describes, and the adapter's own parameters.

    ``torch_threads`` and the ``adapter_keys`` are the adapter's; every other parameter goes to
    :meth:`PipelineConfig.from_parameters`.

    Raises:
        TritonModelException: A parameter is unknown or out of range (the message names it).
    """
    name = args["model_name"]
    params = model_parameters(parse_config(args))
    own = {key: params.pop(key) for key in (TORCH_THREADS, *adapter_keys) if key in params}
    threads = int(own.get(TORCH_THREADS, "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    params["device"] = instance_device(args)
    try:
        config = PipelineConfig.from_parameters(params)
    except (InputError, ValueError) as exc:
        raise pb_utils.TritonModelException(f"{name}: bad parameters in its config: {exc}") from exc
    pb_utils.Logger.log_info(f"{name}: {config}")
    return FacePipeline(config), own


class TritonPythonModel(VideoModel):
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        self.logger = pb_utils.Logger
        self.pipeline, _ = build_pipeline(args)
        self.tensor = OutputTensors(parse_config(args))
        self.videos = VideoCounter(self.name)
        self.fingerprints = Fingerprints(self.name, self.pipeline.config)

    def finalize(self) -> None:
        self.fingerprints.close()
