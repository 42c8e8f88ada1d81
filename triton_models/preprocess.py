"""Video bytes -> face tensors: the ``preprocessing`` library behind a python-backend model."""

from __future__ import annotations

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from preprocessing import FacePipeline, InputError, PipelineConfig
from triton_models.common import instance_device, model_parameters, parse_config

# Adapter settings; every other parameter goes to PipelineConfig.from_parameters.
TORCH_THREADS = "torch_threads"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_config(args)
        params = model_parameters(config)
        threads = int(params.pop(TORCH_THREADS, "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        params["device"] = instance_device(args)
        self.name = args["model_name"]
        self.logger = pb_utils.Logger
        try:
            self.config = PipelineConfig.from_parameters(params)
        except (InputError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"{self.name}: bad parameters in its config: {exc}") from exc
        self.pipeline = FacePipeline(self.config)
        self.logger.log_info(f"{self.name}: {self.config}")

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        videos = pb_utils.get_input_tensor_by_name(request, "VIDEO").as_numpy()
        results = []
        for row in videos:
            try:
                results.append(self.pipeline(row))
            except InputError as exc:
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
            except (RuntimeError, MemoryError, OSError) as exc:
                # Not the client's fault: say what broke, keep serving the next request.
                self.logger.log_error(f"{self.name}: preprocessing failed: {type(exc).__name__}: {exc}")
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocessing failed: {type(exc).__name__}: {exc}"))
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
