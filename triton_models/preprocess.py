"""Video bytes -> face tensors: the ``preprocessing`` library behind a python-backend model."""

from __future__ import annotations

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from preprocessing import FacePipeline, InputError, PipelineConfig
from triton_models.common import instance_device, model_parameters, parse_config

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


def run_pipeline(pipeline: FacePipeline, name: str, row: np.ndarray):
    """One video through the pipeline: ``(result, None)``, or ``(None, error response)``."""
    try:
        return pipeline(row), None
    except InputError as exc:
        return None, pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
    except (RuntimeError, MemoryError, OSError) as exc:
        # Not the client's fault: say what broke, keep serving the next request.
        pb_utils.Logger.log_error(f"{name}: preprocessing failed: {type(exc).__name__}: {exc}")
        return None, pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocessing failed: {type(exc).__name__}: {exc}"))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        self.logger = pb_utils.Logger
        self.pipeline, _ = build_pipeline(args)
        self.config = self.pipeline.config

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        videos = pb_utils.get_input_tensor_by_name(request, "VIDEO").as_numpy()
        results = []
        for row in videos:
            result, error = run_pipeline(self.pipeline, self.name, row)
            if error is not None:
                return error
            results.append(result)
        timings = results[0].timings if results else {}
        self.logger.log_verbose(f"{self.name}: " + " ".join(f"{k}={v * 1000:.0f}ms" for k, v in timings.items()))
        outputs = [
            pb_utils.Tensor("FACES", np.stack([r.faces for r in results]).astype(np.float32, copy=False)),
            pb_utils.Tensor("FACE_BOXES", np.stack([r.boxes for r in results]).astype(np.float32, copy=False)),
            pb_utils.Tensor("FACE_FOUND", np.stack([r.found for r in results]).astype(np.bool_, copy=False)),
            pb_utils.Tensor("FRAMES_DECODED", np.array([[r.frames_decoded] for r in results], dtype=np.int32)),
            # Seconds from the stream's start; FP32 keeps 0.25 ms at one hour.
            pb_utils.Tensor("FRAME_TIMES", np.stack([r.frame_times for r in results]).astype(np.float32)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)
