"""classify_<N>: calls the classifier version a request names, and says which version answered.

Triton ensembles fix the versions of their steps, and one ``config.pbtxt`` serves every version of
a model, so an ensemble cannot pass a client's version choice on to the classifier by itself. This
step sits where the classifier used to in every scoring ensemble: it reads the optional
``MODEL_VERSION`` input, resolves it against the classifier versions that are loaded and ready
(absent: the highest one), and calls that version through BLS with the outputs the ensemble asked
for. The answer gains ``CLASSIFIER_VERSION`` and ``CHECKPOINT_SHA256`` (the ``sha256`` of that
version's ``export.json``), which is how the version and checkpoint reach every answer on GPU nodes
too, where the classifier is the onnxruntime backend and runs no Python.

Requests of one call asking the same version and the same outputs are concatenated into one BLS
call and split back by their batch sizes, so the classifier's dynamic batcher still sees batches.
A version that is not served gets INVALID_ARGUMENT naming the served ones; a version without an
``export.json`` (copied in by hand) is refused too, since its answers could not be traced.

The decision. Each answer also gains ``PROB_FAKE_CALIBRATED``, ``DECISION`` and ``OPERATING_POINT``
from the calibration installed in the answering version's folder for this step's score (its
``score`` parameter: ``calibration_<score>.json``, see :mod:`calibration`); without one, the
decision is the original app's 0.5, marked uncalibrated. This is the one step every scoring
ensemble runs after the classifier, on the CPU server and on GPU nodes alike, so it is where the
calibration is applied (baking it into the exported graph would tie a calibration to an export,
and a new calibration would mean a new model version). A calibration fitted for another
checkpoint, score or model fails the load with the reason; one replaced while serving is read on
the next batch (the file's modification time is checked), and a replacement that is refused is
logged and the one in force stays. Every row served is counted in the drift metrics
(:mod:`triton_models.metrics`).

The bank. The optional ``FINGERPRINT`` input (the video's vPDQ fingerprint, from the preprocessing
step) is matched against the bank of confirmed fakes (``DEEPFAKE_BANK``, :mod:`bank.match`), once
per distinct fingerprint of a batch, and ``KNOWN_MATCH`` says what was found: null, the entry, or
``status: unavailable`` when the bank cannot be asked (scoring goes on). This step is never cached:
a bank entry added after a video was first scored must show on its next answer.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from bank.match import BankWatcher, unavailable
from calibration.point import Calibration, CalibrationError, decide_uncalibrated, load, uncalibrated_point
from contract import (
    BANK_ENV,
    CLASSIFIER_INPUTS,
    DECISION_OUTPUTS,
    EXPORT_METADATA_FILE,
    FINGERPRINT_INPUT,
    MATCH_OUTPUTS,
    REFUSAL_INPUT,
    VERSION_INPUT,
    VERSION_OUTPUTS,
    Score,
    calibration_file,
    version_folders,
)
from triton_models.common import OutputTensors, model_parameters, parse_config
from triton_models.metrics import DecisionMetrics
from triton_models.versions import VersionError, checkpoint_sha256

(FACES_INPUT,) = CLASSIFIER_INPUTS
VERSION_OUTPUT, CHECKPOINT_OUTPUT = VERSION_OUTPUTS
CALIBRATED_OUTPUT, DECISION_OUTPUT, POINT_OUTPUT = DECISION_OUTPUTS
(MATCH_OUTPUT,) = MATCH_OUTPUTS
# Adapter parameters: the model whose versions this step chooses between, and the score it
# returns (which calibration applies).
CLASSIFIER = "classifier"
SCORE = "score"
#: Needed from the classifier for the decision, whether or not the ensemble returns it.
PROB_FAKE = "PROB_FAKE"


class ServedCalibration:
    """The calibration in force for one version, re-read when its file changes."""

    def __init__(self, stamp: int | None, calibration: Calibration | None, score: Score) -> None:
        self.stamp = stamp
        self.calibration = calibration
        self.point = json.dumps(uncalibrated_point(score) if calibration is None else calibration.operating_point())


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_config(args)
        self.name = args["model_name"]
        params = model_parameters(config)
        if CLASSIFIER not in params:
            raise pb_utils.TritonModelException(f"{self.name}: parameter {CLASSIFIER!r} (the model to call) is missing")
        self.classifier = params[CLASSIFIER]
        try:
            self.score = Score(params.get(SCORE, Score.DEEPFAKE.value))
        except ValueError:
            raise pb_utils.TritonModelException(f"{self.name}: parameter {SCORE!r}: unknown score") from None
        # args["model_repository"] is this model's own folder; the classifier is its sibling.
        self.classifier_dir = Path(args["model_repository"]).parent / self.classifier
        self.outputs = [output["name"] for output in config["output"]]
        self.classifier_outputs = [
            name
            for name in self.outputs
            if name not in VERSION_OUTPUTS and name not in DECISION_OUTPUTS and name not in MATCH_OUTPUTS
        ]
        self.bank = BankWatcher(os.environ.get(BANK_ENV))
        self.tensor = OutputTensors(config)
        # (version, export.json's modification time) -> sha256: read again when a version is re-exported.
        self._shas: dict[tuple[int, int], str] = {}
        self.metrics = DecisionMetrics(self.classifier, self.score)
        self._calibrations: dict[int, ServedCalibration] = {}
        # A calibration fitted for another checkpoint fails the load, naming it.
        for version in version_folders(self.classifier_dir):
            try:
                self._calibration(version, strict=True)
            except (CalibrationError, VersionError) as exc:
                raise pb_utils.TritonModelException(f"{self.name}: version {version}: {exc}") from None

    def _calibration(self, version: int, strict: bool = False) -> ServedCalibration:
        """The calibration in force for ``version``, read again when its file changed.

        Raises:
            CalibrationError: with ``strict``, a file that cannot be used (else it is logged and the
                one in force stays).
        """
        folder = self.classifier_dir / str(version)
        path = folder / calibration_file(self.score)
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        served = self._calibrations.get(version)
        if served is not None and served.stamp == stamp:
            return served
        try:
            calibration = None
            if stamp is not None:
                calibration = load(path)
                calibration.check_for(self.score, self.classifier, checkpoint_sha256(folder), version)
        except (CalibrationError, VersionError) as exc:
            if strict:
                raise
            message = f"{self.name}: {path} refused: {exc}"
            if served is None:
                pb_utils.Logger.log_error(f"{message}; version {version} is served uncalibrated")
                served = ServedCalibration(stamp, None, self.score)
            else:
                pb_utils.Logger.log_error(f"{message}; the calibration in force stays")
                served = ServedCalibration(stamp, served.calibration, self.score)
            self._calibrations[version] = served
            return served
        served = ServedCalibration(stamp, calibration, self.score)
        if calibration is not None:
            pb_utils.Logger.log_info(
                f"{self.name}: version {version}: calibration {calibration.sha256[:12]} in force "
                f"(FAKE at >= {calibration.fake_threshold:.6g}, REAL below {calibration.real_threshold:.6g})"
            )
        self._calibrations[version] = served
        self.metrics.calibration(version, calibration)
        return served

    def _ready_versions(self) -> list[int]:
        """The classifier versions on disk that the server has loaded and that are ready."""
        return [v for v in version_folders(self.classifier_dir) if pb_utils.is_model_ready(self.classifier, str(v))]

    def _resolve(self, asked: int | None, ready: list[int]) -> tuple[int, str]:
        if not ready:
            raise VersionError(f"no version of {self.classifier} is ready", invalid=False)
        if asked is None:
            version = ready[-1]
        elif asked in ready:
            version = asked
        else:
            served = ", ".join(str(v) for v in ready)
            raise VersionError(f"{VERSION_INPUT} {asked}: {self.classifier} serves version(s) {served}", invalid=True)
        folder = self.classifier_dir / str(version)
        try:
            stamp = (folder / EXPORT_METADATA_FILE).stat().st_mtime_ns
        except OSError:
            stamp = -1
        key = (version, stamp)
        if key not in self._shas:
            self._shas[key] = checkpoint_sha256(folder)
        return version, self._shas[key]

    @staticmethod
    def _asked_version(request) -> int | None:
        tensor = pb_utils.get_input_tensor_by_name(request, VERSION_INPUT)
        if tensor is None:
            return None
        values = {int(v) for v in tensor.as_numpy().reshape(-1)}
        if len(values) != 1:
            raise VersionError(f"{VERSION_INPUT}: one version per request, got {sorted(values)}", invalid=True)
        (value,) = values
        if value < 1:
            raise VersionError(f"{VERSION_INPUT} must be a version number of at least 1, got {value}", invalid=True)
        return value

    def _error(self, exc: VersionError) -> pb_utils.InferenceResponse:
        code = pb_utils.TritonError.INVALID_ARG if exc.invalid else pb_utils.TritonError.UNAVAILABLE
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {exc}", code))

    def execute(self, requests):
        responses: list = [None] * len(requests)
        ready = self._ready_versions()
        groups: dict[tuple[int, str, tuple[str, ...]], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            refusal = _refusal(request)
            if refusal:
                # The preprocessing step refused the video (as data: see triton_models/video.py).
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(refusal, pb_utils.TritonError.INVALID_ARG)
                )
                continue
            if pb_utils.get_input_tensor_by_name(request, FACES_INPUT) is None:
                # The preprocessing answer came without FACES: Triton's response cache gave back an
                # answer cut to a few outputs (its key is the inputs alone), or an empty one where a
                # failure of these bytes was cached. Said, never guessed around.
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(
                        f"{self.name}: the preprocessing answer for this video came back without {FACES_INPUT} "
                        "from the server's response cache (a failed or partial answer kept for these bytes); "
                        "send it again after the cache is cleared by a restart, or report it",
                        pb_utils.TritonError.UNAVAILABLE,
                    )
                )
                continue
            try:
                version, sha = self._resolve(self._asked_version(request), ready)
            except VersionError as exc:
                responses[index] = self._error(exc)
                continue
            requested = set(request.requested_output_names())
            wanted = tuple(name for name in self.classifier_outputs if name in requested) or tuple(
                self.classifier_outputs
            )
            if PROB_FAKE not in wanted:
                wanted = (*wanted, PROB_FAKE)
            groups[(version, sha, wanted)].append(index)
        for (version, sha, wanted), indices in groups.items():
            arrays = [pb_utils.get_input_tensor_by_name(requests[i], FACES_INPUT).as_numpy() for i in indices]
            sizes = [a.shape[0] for a in arrays]
            call = pb_utils.InferenceRequest(
                model_name=self.classifier,
                model_version=version,
                requested_output_names=list(wanted),
                inputs=[pb_utils.Tensor(FACES_INPUT, np.concatenate(arrays))],
            )
            answer = call.exec()
            if answer.has_error():
                error = pb_utils.TritonError(f"{self.classifier} version {version}: {answer.error().message()}")
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=error)
                continue
            results = {name: pb_utils.get_output_tensor_by_name(answer, name).as_numpy() for name in wanted}
            if any(r.shape[0] != sum(sizes) for r in results.values()):
                raise pb_utils.TritonModelException(
                    f"{self.classifier} version {version}: a batch of {sum(sizes)} gave "
                    f"{[r.shape for r in results.values()]}"
                )
            served = self._calibration(version)
            calibrated, decisions = self._decide(version, served, results[PROB_FAKE])
            matches = self._matches([requests[i] for i in indices], sizes)
            point = served.point.encode()
            offsets = np.cumsum([0, *sizes])
            for position, i in enumerate(indices):
                start, stop = offsets[position], offsets[position + 1]
                count = stop - start
                returned = set(requests[i].requested_output_names()) or set(self.outputs)
                tensors = [self.tensor(name, results[name][start:stop]) for name in wanted if name in returned]
                tensors.append(self.tensor(VERSION_OUTPUT, np.full((count, 1), version)))
                tensors.append(self.tensor(CHECKPOINT_OUTPUT, np.array([[sha.encode()]] * count, dtype=np.object_)))
                tensors.append(self.tensor(CALIBRATED_OUTPUT, calibrated[start:stop]))
                tensors.append(self.tensor(DECISION_OUTPUT, decisions[start:stop]))
                tensors.append(self.tensor(POINT_OUTPUT, np.array([[point]] * count, dtype=np.object_)))
                tensors.append(self.tensor(MATCH_OUTPUT, matches[start:stop]))
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def _decide(self, version: int, served: ServedCalibration, prob_fake: np.ndarray):
        """[rows, 1] calibrated probabilities and decisions of [rows, 1] raw scores, counted in the metrics."""
        calibration = served.calibration
        calibrated = np.empty(prob_fake.shape, dtype=np.float32)
        decisions = np.empty(prob_fake.shape, dtype=np.object_)
        for row, raw in enumerate(prob_fake.reshape(-1)):
            # The float32 the client receives, compared as a double: the client's check gives the same.
            value = float(raw)
            probability, decision = decide_uncalibrated(value) if calibration is None else calibration.decide(value)
            calibrated.reshape(-1)[row] = probability
            decisions.reshape(-1)[row] = decision.encode()
            self.metrics.observe(version, value, decision, calibration is not None)
        return calibrated, decisions

    def _matches(self, requests, sizes: list[int]) -> np.ndarray:
        """[rows, 1] ``KNOWN_MATCH`` JSON of each row's fingerprint, the bank asked once per distinct one."""
        found: dict[bytes, bytes] = {}
        rows = []
        for request, size in zip(requests, sizes):
            tensor = pb_utils.get_input_tensor_by_name(request, FINGERPRINT_INPUT)
            values = [None] * size if tensor is None else list(tensor.as_numpy().reshape(-1))
            for value in values:
                if value is None:
                    rows.append(json.dumps(unavailable("no fingerprint was given with the faces")).encode())
                    continue
                key = bytes(value)
                if key not in found:
                    found[key] = json.dumps(self.bank.match(key)).encode()
                rows.append(found[key])
        return np.array(rows, dtype=np.object_).reshape(-1, 1)


def _refusal(request) -> str:
    """The preprocessing step's refusal of the request's video ('' when it was accepted or not given)."""
    tensor = pb_utils.get_input_tensor_by_name(request, REFUSAL_INPUT)
    if tensor is None:
        return ""
    values = [bytes(value).decode("utf-8", "replace") for value in tensor.as_numpy().reshape(-1)]
    return next((value for value in values if value), "")
