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
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import CLASSIFIER_INPUTS, EXPORT_METADATA_FILE, VERSION_INPUT, VERSION_OUTPUTS, version_folders
from triton_models.common import OutputTensors, model_parameters, parse_config
from triton_models.versions import VersionError, checkpoint_sha256

(FACES_INPUT,) = CLASSIFIER_INPUTS
VERSION_OUTPUT, CHECKPOINT_OUTPUT = VERSION_OUTPUTS
# Adapter parameter: the model whose versions this step chooses between.
CLASSIFIER = "classifier"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = parse_config(args)
        self.name = args["model_name"]
        params = model_parameters(config)
        if CLASSIFIER not in params:
            raise pb_utils.TritonModelException(f"{self.name}: parameter {CLASSIFIER!r} (the model to call) is missing")
        self.classifier = params[CLASSIFIER]
        # args["model_repository"] is this model's own folder; the classifier is its sibling.
        self.classifier_dir = Path(args["model_repository"]).parent / self.classifier
        self.outputs = [output["name"] for output in config["output"]]
        self.classifier_outputs = [name for name in self.outputs if name not in VERSION_OUTPUTS]
        self.tensor = OutputTensors(config)
        # (version, export.json's modification time) -> sha256: read again when a version is re-exported.
        self._shas: dict[tuple[int, int], str] = {}

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
            try:
                version, sha = self._resolve(self._asked_version(request), ready)
            except VersionError as exc:
                responses[index] = self._error(exc)
                continue
            requested = set(request.requested_output_names())
            wanted = tuple(name for name in self.classifier_outputs if name in requested) or tuple(
                self.classifier_outputs
            )
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
            offsets = np.cumsum([0, *sizes])
            for position, i in enumerate(indices):
                start, stop = offsets[position], offsets[position + 1]
                count = stop - start
                tensors = [self.tensor(name, results[name][start:stop]) for name in wanted]
                tensors.append(self.tensor(VERSION_OUTPUT, np.full((count, 1), version)))
                tensors.append(self.tensor(CHECKPOINT_OUTPUT, np.array([[sha.encode()]] * count, dtype=np.object_)))
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses
