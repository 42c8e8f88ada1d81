"""Video bytes -> the original app's face tensors (``preprocess_original_<N>``, the first step of ``original_<N>``).

The same outputs as ``preprocess_<N>`` (``triton_models/video.py``), from
:class:`preprocessing.original.OriginalPipeline`: OpenCV's frames, dlib's HOG detector, tight crops.
Neither imports torch: the stub holds OpenCV, dlib and numpy alone.
"""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from preprocessing.errors import ConfigError
from preprocessing.original import OriginalConfig, OriginalPipeline
from triton_models.common import OutputTensors, model_parameters, parse_config
from triton_models.metrics import VideoCounter
from triton_models.video import Fingerprints, VideoModel


class TritonPythonModel(VideoModel):
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        self.logger = pb_utils.Logger
        self.tensor = OutputTensors(parse_config(args))
        self.videos = VideoCounter(self.name)
        try:
            config = OriginalConfig.from_parameters(model_parameters(parse_config(args)))
        except ConfigError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: bad parameters in its config: {exc}") from exc
        pb_utils.Logger.log_info(f"{self.name}: {config}")
        self.pipeline = OriginalPipeline(config)
        self.fingerprints = Fingerprints(self.name, config)

    def finalize(self) -> None:
        self.pipeline.close()
        self.fingerprints.close()
