"""The classifier on ONNX Runtime inside a python-backend model (the embedded CPU server).

Requests are concatenated into one ONNX Runtime call per set of requested outputs and split
back by each request's batch size; only the outputs a request asks for are fetched, so the
scoring ensemble does not pay for heatmaps. A request for the score alone (``LOGITS`` and/or
``PROB_FAKE``) runs the trunk on the last frame only: the published weights score a video from
its last frame (the LSTM quirk), so the other N-1 frames would be computed for nothing.

Each call is split into ``frame_chunks`` chunks of frames run at once on their own threads
(:mod:`triton_models.chunks`; 0: one per core), each with ``intra_op_threads`` ONNX Runtime threads.

The same adapter serves a trained temporal model (``resnext_temporal_<N>``): its config says
``frames_independent: 0``, its outputs are its own, and since its frames meet in the attention it
neither scores from the last frame alone nor splits a video's frames over threads.

Each version folder is its own model instance: ``args["model_version"]`` picks the file.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from contract import CLASSIFIER_INPUTS, LAST_FRAME_OUTPUTS, ONNX_FILE
from triton_models.chunks import ChunkedSession, available_cores
from triton_models.common import model_parameters, parse_config

(INPUT_NAME,) = CLASSIFIER_INPUTS


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_config(args)
        params = model_parameters(config)
        self.logger = pb_utils.Logger
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", ONNX_FILE))
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{path} is missing: run `python -m export onnx --checkpoints <dir> --repository <repository>` first"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        spinning = params.get("allow_spinning", "1")
        if spinning not in ("0", "1"):
            raise pb_utils.TritonModelException(f"parameter allow_spinning must be 0 or 1, got {spinning!r}")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.log_severity_level = 3
        # ONNX Runtime's CPU arena keeps the largest batch's buffers for good (the soak saw the
        # stub grow ~350 MiB in one step). Without it the server ended 200 benchmark requests
        # at 3529 MiB instead of 3897 MiB, at no measurable cost per call (20 frames, 2 threads:
        # 333 ms without, 310-400 ms with).
        options.enable_cpu_mem_arena = False
        chunks = params.get("frame_chunks", "1")
        if not chunks.isdigit():
            raise pb_utils.TritonModelException(f"parameter frame_chunks must be a whole number, got {chunks!r}")
        independent = params.get("frames_independent", "1")
        if independent not in ("0", "1"):
            raise pb_utils.TritonModelException(f"parameter frames_independent must be 0 or 1, got {independent!r}")
        self.output_names = tuple(output["name"] for output in config["output"])
        # Outputs computed from the last frame alone (the graph's frame axis is dynamic).
        self.last_frame_outputs = frozenset(LAST_FRAME_OUTPUTS if independent == "1" else ())
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.session = ChunkedSession(
            session, INPUT_NAME, int(chunks) or available_cores(), frames_independent=independent == "1"
        )
        graph_outputs = {o.name for o in session.get_outputs()}
        missing = [name for name in self.output_names if name not in graph_outputs]
        if missing:
            raise pb_utils.TritonModelException(f"{path} lacks outputs {missing}; re-export it")
        self.logger.log_info(
            f"{args['model_name']} version {args['model_version']}: ONNX Runtime {ort.__version__} session on {path}, "
            f"{self.session.chunks} frame chunk(s) of {options.intra_op_num_threads or 'all'} thread(s)"
        )

    def execute(self, requests):
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            requested = set(request.requested_output_names())
            wanted = tuple(name for name in self.output_names if name in requested) or self.output_names
            groups[wanted].append(index)
        responses: list = [None] * len(requests)
        for wanted, indices in groups.items():
            arrays = [pb_utils.get_input_tensor_by_name(requests[i], INPUT_NAME).as_numpy() for i in indices]
            sizes = [a.shape[0] for a in arrays]
            if self.last_frame_outputs.issuperset(wanted):
                arrays = [a[:, -1:] for a in arrays]  # the concatenation copies the last frames only
            faces = np.concatenate(arrays)
            try:
                results = self.session.run(wanted, faces)
            except (
                ort.capi.onnxruntime_pybind11_state.Fail,
                ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ) as exc:
                error = pb_utils.TritonError(f"ONNX Runtime failed: {exc}")
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=error)
                continue
            if any(r.shape[0] != sum(sizes) for r in results):
                raise pb_utils.TritonModelException(
                    f"batch of {sum(sizes)} produced outputs of {[r.shape for r in results]}"
                )
            offsets = np.cumsum([0, *sizes])
            for position, i in enumerate(indices):
                start, stop = offsets[position], offsets[position + 1]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(r[start:stop])) for name, r in zip(wanted, results)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def finalize(self) -> None:
        self.session.close()
        self.session = None
