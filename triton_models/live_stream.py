"""Live streams scored while they play: ``stream``, a stateful, decoupled python model.

Triton's sequence batcher gives each stream (correlation id) a slot and marks its first and last
requests (START, END); this model keeps one :class:`~preprocessing.live.LiveStream` per
correlation id: its decoder, face tracker, pace and recent scores, which no other stream touches.
Each request carries encoded packets; the frames they complete are decoded, the ones due for
scoring are cropped around the followed face, and the crops of every request of the call (of
several streams) are scored together by ``resnext_frame_<N>`` through BLS, in batches of at most
``max_batch_size`` rows. Each event goes back as its own response (zero or more per request: a
frame, a window, the skipped frames, the summary at END), then the final flag.

Two limits of Triton are handled here:

* the sequence batcher has no queue policy: a stream past its slots waits unseen. The model keeps
  its own cap (``max_streams``, below the slots) and refuses a START past it with UNAVAILABLE;
* Triton does not tell a model when it drops an idle sequence: a timer of the model frees the
  state of a stream idle for ``max_sequence_idle_microseconds`` (read from this model's config,
  the same setting Triton uses for its slots).

The number of live streams is the ``deepfake_stream_live`` gauge on Triton's metrics endpoint.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from contract import MAX_BATCH, Kind, lengths_of, model_name, version_folders
from preprocessing import ConfigError, FaceDetector, InputError, PipelineConfig
from preprocessing.live import (
    CropSettings,
    LiveStream,
    OnlineFaceFollower,
    ScoredFrame,
    StreamFrame,
    StreamSettings,
    check_limits,
)
from triton_models.common import OutputTensors, instance_device, model_parameters, parse_config
from triton_models.versions import VersionError, checkpoint_sha256

# Adapter parameters; the others are detection and crop settings (PipelineConfig).
ADAPTER_KEYS = ("max_streams", "max_packets", "max_request_bytes", "torch_threads")
REAPER_INTERVAL_S = 1.0
# Error kinds, turned into Triton's codes when answered (pb_utils.TritonError exists once the stub runs).
_INVALID = "INVALID_ARG"
_UNAVAILABLE = "UNAVAILABLE"
_INTERNAL = "INTERNAL"
_GRPC_STATUS = {_INVALID: "INVALID_ARGUMENT", _UNAVAILABLE: "UNAVAILABLE", _INTERNAL: "INTERNAL"}


class StreamError(Exception):
    """A request that cannot go on; ``code`` names the Triton error code it is answered with."""

    def __init__(self, message: str, code: str = _INVALID) -> None:
        super().__init__(message)
        self.code = code


def _scalar(request, name: str, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0]


def _row(request, name: str) -> np.ndarray | None:
    """An input's single row (the batch axis of 1 dropped), or None when it was not sent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    array = tensor.as_numpy()
    if array.shape[0] != 1:
        raise StreamError(f"{name} must hold one row per request (one stream), got {array.shape[0]}")
    return array[0]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        config = parse_config(args)
        params = model_parameters(config)
        own = {key: params.pop(key) for key in ADAPTER_KEYS if key in params}
        # Every adapter parameter is written into the config by the renderer (export/configs.py):
        # no defaults restated here.
        missing = [key for key in ADAPTER_KEYS if key not in own]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.name}: parameters missing from its config: {', '.join(missing)}"
            )
        try:
            self.max_streams = int(own["max_streams"])
            self.max_packets = int(own["max_packets"])
            self.max_request_bytes = int(own["max_request_bytes"])
            threads = int(own["torch_threads"])
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{self.name}: bad parameter in its config: {exc}") from exc
        self.tensor = OutputTensors(config)
        batching = config.get("sequence_batching", {})
        slots = int(
            batching.get("oldest", {}).get("max_candidate_sequences", 0)
            or config.get("max_batch_size", 0) * len(config.get("instance_group", [{}]))
        )
        self.idle_s = int(batching.get("max_sequence_idle_microseconds", 0)) / 1e6
        params["device"] = instance_device(args)
        try:
            check_limits(self.max_streams, slots, self.idle_s)
            self.pipeline = PipelineConfig.from_parameters(params, frames=1)
        except (ConfigError, ValueError) as exc:
            raise pb_utils.TritonModelException(f"{self.name}: bad parameters in its config: {exc}") from exc
        if threads > 0:
            torch.set_num_threads(threads)
        cfg = self.pipeline
        self.detector = FaceDetector(
            detect_size=cfg.detect_size, min_face_size=cfg.min_face_size, thresholds=cfg.thresholds, device=cfg.device
        )
        self.crop = CropSettings(margin=cfg.margin, square=cfg.square, shift_y=cfg.shift_y)
        # The lengths served: the per-frame classifiers beside this model in the repository.
        self.repository = Path(args["model_repository"]).parent
        self.served = lengths_of(
            Kind.FRAME_CLASSIFIER, (child.name for child in self.repository.iterdir() if child.is_dir())
        )
        self.streams: dict[int, LiveStream] = {}
        self._lock = threading.Lock()
        self._metrics()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="stream-reaper", daemon=True)
        self._reaper.start()
        pb_utils.Logger.log_info(
            f"{self.name}: up to {self.max_streams} live streams in {slots} slots, idle timeout "
            f"{self.idle_s:g} s, lengths {self.served}, {cfg}"
        )

    def _metrics(self) -> None:
        labels = {"model": self.name}
        self._live_family = pb_utils.MetricFamily(
            name="deepfake_stream_live",
            description="live streams held by the stream model",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self._frames_family = pb_utils.MetricFamily(
            name="deepfake_stream_frames_total",
            description="stream frames by outcome (scored, skipped)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._refused_family = pb_utils.MetricFamily(
            name="deepfake_stream_refused_total",
            description="streams ended by an error, by cause",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._live = self._live_family.Metric(labels=labels)
        self._frames = {
            outcome: self._frames_family.Metric(labels={**labels, "outcome": outcome})
            for outcome in ("scored", "skipped")
        }
        self._refused = {
            cause: self._refused_family.Metric(labels={**labels, "cause": cause})
            for cause in ("cap", "input", "idle", "server")
        }

    # -- the idle timer -------------------------------------------------------------------------

    def _reap(self) -> None:
        while not self._stop.wait(REAPER_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                for corrid in [c for c, s in self.streams.items() if now - s.last_active > self.idle_s]:
                    pb_utils.Logger.log_warn(
                        f"{self.name}: stream {corrid} idle for more than {self.idle_s:g} s: freed"
                    )
                    self._drop(corrid)
                    self._refused["idle"].increment(1)

    def _drop(self, corrid: int) -> None:
        stream = self.streams.pop(corrid, None)
        if stream is not None:
            stream.close()
        self._live.set(len(self.streams))

    # -- requests -------------------------------------------------------------------------------

    def execute(self, requests):
        with self._lock:
            admitted = []
            for request in requests:
                sender = request.get_response_sender()
                corrid = int(_scalar(request, "CORRID", 0))
                try:
                    admitted.append((sender, corrid, *self._admit(request, corrid)))
                except StreamError as exc:
                    self._refuse(sender, corrid, exc)
            scores, failed = self._score([prepared for _, _, _, _, prepared, _ in admitted if prepared])
            for sender, corrid, stream, frames, prepared, end in admitted:
                if stream is None:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                elif failed is not None and any(p is not None for p in prepared):
                    self._refuse(sender, corrid, failed)
                else:
                    self._respond(sender, corrid, stream, frames, prepared, end, scores)
        return None

    def _admit(self, request, corrid: int):
        """Reads one request and decodes its packets: ``(stream, frames, prepared, end)``.

        ``stream`` is None for an END with nothing to end (a stream already gone, released by its client).
        """
        start = bool(_scalar(request, "START", False))
        end = bool(_scalar(request, "END", False))
        packets = self._packets(request)
        settings = _row(request, "STREAM")
        if start:
            if settings is None:
                raise StreamError("the first request of a stream (START) must carry STREAM, its codec parameters")
            try:
                parsed = StreamSettings.from_json(settings[0], self.served)
            except InputError as exc:
                raise StreamError(f"STREAM: {exc}") from None
            self._drop(corrid)  # a client starting an id again starts afresh
            if len(self.streams) >= self.max_streams:
                self._refused["cap"].increment(1)
                raise StreamError(
                    f"{self.name} is following its maximum of {self.max_streams} live streams; "
                    "retry later or on another server",
                    _UNAVAILABLE,
                )
            extradata = _row(request, "EXTRADATA")
            follower = OnlineFaceFollower(
                self.detector,
                self.pipeline.detect_every,
                self.pipeline.max_followed,
                self.pipeline.min_face_prob,
                self.pipeline.iou_threshold,
            )
            try:
                stream = LiveStream(
                    parsed,
                    b"" if extradata is None else extradata.tobytes(),
                    follower,
                    self.crop,
                    self.pipeline.max_pixels,
                )
            except InputError as exc:
                raise StreamError(str(exc)) from None
            stream.version, stream.checkpoint_sha256 = self._version(parsed.frames, parsed.model_version)
            self.streams[corrid] = stream
            self._live.set(len(self.streams))
        else:
            if settings is not None:
                raise StreamError("STREAM is read from a stream's first request (START) only")
            stream = self.streams.get(corrid)
            if stream is None:
                if end and not packets:
                    return None, [], [], end
                raise StreamError(
                    f"no live stream with correlation id {corrid} here: it was not started (START), "
                    f"has ended or failed, or sent nothing for more than {self.idle_s:g} s"
                )
        stream.last_active = time.monotonic()
        try:
            frames, prepared = stream.prepare(packets, end)
        except InputError as exc:
            self._drop(corrid)
            raise StreamError(str(exc)) from None
        return stream, frames, prepared, end

    def _version(self, frames: int, asked: int) -> tuple[int, str]:
        """The classifier version a stream is scored with (asked, or the latest ready) and its checkpoint."""
        model = model_name(Kind.FRAME_CLASSIFIER, frames)
        ready = [v for v in version_folders(self.repository / model) if pb_utils.is_model_ready(model, str(v))]
        if not ready:
            raise StreamError(f"no version of {model} is ready", _UNAVAILABLE)
        if asked and asked not in ready:
            served = ", ".join(map(str, ready))
            raise StreamError(f"model_version {asked}: {model} serves version(s) {served}")
        version = asked or ready[-1]
        try:
            sha = checkpoint_sha256(self.repository / model_name(Kind.CLASSIFIER, frames) / str(version))
        except VersionError as exc:
            raise StreamError(str(exc), _INTERNAL) from None
        return version, sha

    def _packets(self, request) -> list[tuple[bytes, int]]:
        data, sizes, pts = (_row(request, name) for name in ("PACKETS", "PACKET_SIZES", "PACKET_PTS"))
        if data is None or sizes is None or pts is None:
            raise StreamError("every request needs PACKETS, PACKET_SIZES and PACKET_PTS (they may be empty)")
        if len(sizes) != len(pts):
            raise StreamError(f"PACKET_SIZES has {len(sizes)} entries but PACKET_PTS {len(pts)}")
        if len(sizes) > self.max_packets:
            raise StreamError(f"a request may carry at most {self.max_packets} packets, got {len(sizes)}")
        if len(data) > self.max_request_bytes:
            raise StreamError(f"a request may carry at most {self.max_request_bytes} bytes of packets, got {len(data)}")
        if np.any(sizes <= 0):
            raise StreamError("every packet size in PACKET_SIZES must be positive")
        if int(sizes.sum(dtype=np.int64)) != len(data):
            raise StreamError(
                f"PACKET_SIZES add up to {int(sizes.sum(dtype=np.int64))} bytes but PACKETS holds {len(data)}"
            )
        raw = data.tobytes()
        offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        return [(raw[offsets[i] : offsets[i + 1]], int(pts[i])) for i in range(len(sizes))]

    def _score(self, prepared_lists: list[list[ScoredFrame | None]]) -> tuple[dict[int, float], StreamError | None]:
        """Every crop of the call scored, keyed by ``id(ScoredFrame)``; the error when the classifier failed."""
        by_length: dict[tuple[int, int], list[ScoredFrame]] = {}
        for prepared in prepared_lists:
            for item in prepared:
                if item is not None:
                    by_length.setdefault((item.length, item.version), []).append(item)
        scores: dict[int, float] = {}
        for (length, version), items in by_length.items():
            model = model_name(Kind.FRAME_CLASSIFIER, length)
            for start in range(0, len(items), MAX_BATCH):
                batch = items[start : start + MAX_BATCH]
                faces = np.ascontiguousarray(np.stack([item.faces for item in batch]), dtype=np.float32)
                response = pb_utils.InferenceRequest(
                    model_name=model,
                    model_version=version,
                    requested_output_names=["PROB_FAKE"],
                    inputs=[pb_utils.Tensor("FACES", faces)],
                ).exec()
                if response.has_error():
                    message = f"{model} failed: {response.error().message()}"
                    pb_utils.Logger.log_error(f"{self.name}: {message}")
                    return scores, StreamError(message, _INTERNAL)
                probs = pb_utils.get_output_tensor_by_name(response, "PROB_FAKE").as_numpy().reshape(-1)
                if len(probs) != len(batch):
                    return scores, StreamError(
                        f"{model} returned {len(probs)} scores for {len(batch)} frames", _INTERNAL
                    )
                for item, prob in zip(batch, probs):
                    scores[id(item)] = float(prob)
        return scores, None

    def _respond(
        self,
        sender,
        corrid: int,
        stream: LiveStream,
        frames: list[StreamFrame],
        prepared: list[ScoredFrame | None],
        end: bool,
        scores: dict[int, float],
    ) -> None:
        skipped = []
        for frame, item in zip(frames, prepared):
            score = None if item is None else scores[id(item)]
            if item is None:
                skipped.append(frame.index)
            else:
                sender.send(
                    self._event(
                        "frame",
                        FRAME_INDEX=[frame.index],
                        FRAME_PTS=[frame.pts],
                        FRAME_PROB_FAKE=[score],
                        FACE_BOXES=[item.box],
                        FACE_FOUND=[item.found],
                    )
                )
            window = stream.record(frame, score)
            if window is not None:
                sender.send(
                    self._event(
                        "window",
                        FRAME_INDEX=[window.end_frame],
                        FRAME_PTS=[window.end_pts],
                        WINDOW_START=[window.start],
                        PROB_FAKE=[window.prob_fake],
                        WINDOW_PROB_FAKE_MEAN=[window.mean],
                        FRAMES_SCORED=[window.scored],
                        CLASSIFIER_VERSION=[stream.version],
                        CHECKPOINT_SHA256=[stream.checkpoint_sha256.encode()],
                    )
                )
        self._frames["scored"].increment(len(frames) - len(skipped))
        if skipped:
            self._frames["skipped"].increment(len(skipped))
            sender.send(self._event("skipped", SKIPPED_FRAMES=skipped))
        if end:
            sender.send(
                self._event(
                    "summary",
                    FRAMES_RECEIVED=[stream.received],
                    FRAMES_DECODED=[stream.decoder.frames],
                    FRAMES_SCORED=[stream.scored],
                    FRAMES_SKIPPED=[stream.skipped],
                    CLASSIFIER_VERSION=[stream.version],
                    CHECKPOINT_SHA256=[stream.checkpoint_sha256.encode()],
                )
            )
            self._drop(corrid)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _refuse(self, sender, corrid: int, error: StreamError) -> None:
        """Answers with the error and the final flag, and frees the stream."""
        if error.code != _UNAVAILABLE:
            self._refused["input" if error.code == _INVALID else "server"].increment(1)
            self._drop(corrid)
        # A stream's error reaches a gRPC streaming client as a message without its status: the message
        # starts with the status's name, so that clients can tell a refusal from a failure.
        message = f"{_GRPC_STATUS[error.code]}: {error}"
        sender.send(
            pb_utils.InferenceResponse(error=pb_utils.TritonError(message, getattr(pb_utils.TritonError, error.code))),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    def _event(self, kind: str, **values) -> pb_utils.InferenceResponse:
        """One event as a response: ``EVENT`` plus its outputs (types from the config), each with the batch
        axis of 1."""
        tensors = [self.tensor("EVENT", [[kind.encode()]])]
        tensors += [self.tensor(name, np.asarray(value)[None]) for name, value in values.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self._stop.set()
        self._reaper.join()
        with self._lock:
            for corrid in list(self.streams):
                self._drop(corrid)
