"""Every face of a video, each scored: preprocessing with ``max_faces`` and the classifier through BLS.

An ensemble cannot turn the ``[1, K, N, ...]`` crops of one video into a batch of K for the
classifier, so this python model runs the preprocessing library itself and calls ``classify_<N>``
(the model named by its ``classifier`` parameter: it picks the classifier version the request's
optional ``MODEL_VERSION`` names) once per video with the K faces as K rows: the exported graph
scores rows independently, so each face scores as if alone.
K varies per video (the faces found, at most ``max_faces``): the face axis of every output is
open, so no slot is ever unused.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import DECISION_OUTPUTS, FINGERPRINT_INPUT, MATCH_OUTPUTS, VERSION_INPUT, VERSION_OUTPUTS, VIDEO_INPUT
from triton_models.common import OutputTensors, parse_config
from triton_models.metrics import VideoCounter
from triton_models.preprocess import build_pipeline
from triton_models.video import Fingerprints, run_pipeline

# Adapter parameter: the classifier to call.
CLASSIFIER = "classifier"
_SCORES = ("LOGITS", "PROB_FAKE", "FRAME_PROB_FAKE")
# The decision (calibrated, of each face's faithful score) comes with the scores; the answer's is
# the main face's, which is what deepfake_<N>'s calibration was fitted on.
_ASKED = (*_SCORES, *VERSION_OUTPUTS, *DECISION_OUTPUTS, *MATCH_OUTPUTS)


def video_score(frame_scores: np.ndarray, found: np.ndarray) -> float:
    """A face's contribution to "is any face fake": its mean frame score where it was detected."""
    seen = frame_scores[found] if found.any() else frame_scores
    return float(seen.mean())


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        self.pipeline, own = build_pipeline(args, adapter_keys=(CLASSIFIER,))
        if CLASSIFIER not in own:
            raise pb_utils.TritonModelException(
                f"{self.name}: parameter {CLASSIFIER!r} (the model to score faces with) is missing"
            )
        self.classifier = own[CLASSIFIER]
        self.tensor = OutputTensors(parse_config(args))
        self.videos = VideoCounter(self.name)
        self.fingerprints = Fingerprints(self.name, self.pipeline.config)

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def finalize(self) -> None:
        self.fingerprints.close()

    def _score(self, faces: np.ndarray, version, fingerprint: bytes) -> dict[str, np.ndarray] | pb_utils.TritonError:
        # The video's fingerprint with every face row: the bank is asked once per distinct fingerprint.
        inputs = [
            pb_utils.Tensor("FACES", faces),
            pb_utils.Tensor(FINGERPRINT_INPUT, np.array([[fingerprint]] * len(faces), dtype=np.object_)),
        ]
        if version is not None:
            # One version for every face row of this video.
            asked = version.as_numpy().reshape(-1)[:1]
            inputs.append(pb_utils.Tensor(VERSION_INPUT, np.repeat(asked, len(faces)).reshape(-1, 1)))
        request = pb_utils.InferenceRequest(
            model_name=self.classifier, requested_output_names=list(_ASKED), inputs=inputs
        )
        response = request.exec()
        if response.has_error():
            # The step's own code stays: a version that is not served is the client's mistake.
            return pb_utils.TritonError(f"{self.classifier}: {response.error().message()}", response.error().code())
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in _ASKED}

    def _respond(self, request):
        videos = pb_utils.get_input_tensor_by_name(request, VIDEO_INPUT).as_numpy()
        if len(videos) != 1:
            # Each video has its own number of faces: one per request (the batch axis of 1).
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"{self.name} scores one video per request, got {len(videos)}", pb_utils.TritonError.INVALID_ARG
                )
            )
        printing = self.fingerprints.submit(videos[0])
        result, error = run_pipeline(self.pipeline, self.name, videos[0], self.videos)
        if error is not None:
            printing.cancel()
            return error
        fingerprint = self.fingerprints.result(printing)
        faces = np.ascontiguousarray(np.stack([track.faces for track in result.tracks]), dtype=np.float32)
        scores = self._score(faces, pb_utils.get_input_tensor_by_name(request, VERSION_INPUT), fingerprint)
        if isinstance(scores, pb_utils.TritonError):
            return pb_utils.InferenceResponse(error=scores)
        found = np.stack([track.found for track in result.tracks])
        frame_scores = scores["FRAME_PROB_FAKE"]
        any_fake = max(video_score(s, f) for s, f in zip(frame_scores, found))
        tensor = self.tensor
        outputs = [
            # The main face, as deepfake_<N> returns it.
            tensor("LOGITS", scores["LOGITS"][:1]),
            tensor("PROB_FAKE", scores["PROB_FAKE"][:1].reshape(1, 1)),
            tensor("FRAME_PROB_FAKE", frame_scores[:1]),
            tensor("FACE_BOXES", result.boxes[None]),
            tensor("FACE_FOUND", result.found[None]),
            # Every face.
            tensor("MAX_PROB_FAKE", [[any_fake]]),
            tensor("TRACK_PROB_FAKE", scores["PROB_FAKE"].reshape(1, -1)),
            tensor("TRACK_FRAME_PROB_FAKE", frame_scores[None]),
            tensor("TRACK_BOXES", np.stack([t.boxes for t in result.tracks])[None]),
            tensor("TRACK_FOUND", found[None]),
            tensor("TRACK_PROMINENCE", [[t.prominence for t in result.tracks]]),
            tensor("FACES_SEEN", [[result.faces_seen]]),
            tensor("FRAMES_DECODED", [[result.frames_decoded]]),
            tensor("FRAME_TIMES", result.frame_times[None]),
            *(tensor(name, scores[name][:1]) for name in (*VERSION_OUTPUTS, *DECISION_OUTPUTS, *MATCH_OUTPUTS)),
            tensor("FINGERPRINT", np.array([[fingerprint]], dtype=np.object_)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs)
