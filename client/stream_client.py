"""The client side of live streams: a stream (or a file played as one) scored while it plays.

The client reads SOURCE with PyAV on its own machine (a file, rtsp://, an HLS URL, a device: anything
FFmpeg opens) and sends the video's codec parameters with the first request, then its encoded
packets with their timestamps, over one gRPC stream to the ``stream`` model (one correlation id,
START on the first request, END on the last). Frames are never decoded here, only (with
``--transcode``) re-encoded when the source's codec is not one the server accepts.

PyAV is an optional extra (``pip install '.[stream]'``): only ``python -m client stream``
(:mod:`client.commands.stream`) imports this module.

Each response is one event: a scored ``frame``, a ``window`` of N frames, the ``skipped`` frames,
and at the end the ``summary``. With ``--json`` each is printed as one JSON object with a ``type``.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.error
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from contract import (
    CHECKPOINT_SHA256_KEY,
    LABEL_FAKE,
    LABEL_REAL,
    MODEL_VERSION_KEY,
    STREAM_CODECS,
    STREAM_EVENTS,
    STREAM_OUTPUTS,
    TENSORS,
    VERSION_OUTPUTS,
    Kind,
    model_name,
)

from .connection import Connection
from .errors import DEAD_STUB_MESSAGE, DEADLINE_EXCEEDED, INTERNAL, INVALID_ARGUMENT, UNKNOWN_STATUS, ClientError

STREAM_MODEL = model_name(Kind.STREAM)
#: Packets per request when sending as fast as the server takes them.
CHUNK_PACKETS = 8
#: Requests without their final answer yet: 2 keeps the server busy while the client waits.
IN_FLIGHT = 2
#: With --realtime, the most requests left unanswered before the client waits (a stalled server).
REALTIME_IN_FLIGHT = 64
DEFAULT_HOP_FRACTION = 2
DEFAULT_ANSWER_TIMEOUT_S = 60.0
RELEASE_TIMEOUT_S = 5.0
# Errors of a gRPC stream arrive as messages without a status (Triton's triton_grpc_error header would
# give one, but closes the stream under requests still in flight, which tritonserver 2.51 was seen to
# crash on): the stream model starts its messages with the status's name, and Triton's own refusals of
# a sequence are recognised by their wording.
STATUS_PREFIX = re.compile(r"^(INVALID_ARGUMENT|UNAVAILABLE|INTERNAL): ")
SEQUENCE_REFUSAL = re.compile(
    r"must specify the START flag|sequence .* has not been started|inference request for sequence"
)
TRANSCODE_CODEC = "libx264"
PERCENT = 100.0


@dataclass(frozen=True)
class Packet:
    """One encoded packet of the source: its bytes, timestamp and when it is due (seconds from the start)."""

    data: bytes
    pts: int
    due_s: float


@dataclass
class Source:
    """What the server is told about the video: codec, its global header and the timestamps' unit."""

    codec: str
    extradata: bytes
    time_base: Fraction
    packets: Iterator[Packet]
    closer: Callable[[], None] = field(default=lambda: None)


def open_source(source: str, transcode: bool = False, input_format: str | None = None) -> Source:
    """Opens SOURCE with FFmpeg on this machine and reads its first video stream's packets.

    Args:
        source: A file, a URL FFmpeg reads (rtsp://, http(s):// HLS), or a device (with ``input_format``).
        transcode: Re-encode to H.264 when the codec is not one the server accepts.
        input_format: FFmpeg's input format (e.g. ``v4l2`` for a camera); None lets FFmpeg guess.

    Raises:
        ClientError: INVALID_ARGUMENT when the source cannot be opened or has no video.
    """
    try:
        container = av.open(source, format=input_format, timeout=30.0)
    except (av.error.FFmpegError, OSError) as exc:
        raise ClientError(INVALID_ARGUMENT, f"cannot open {source}: {exc}") from None
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        container.close()
        raise ClientError(INVALID_ARGUMENT, f"{source} has no video stream")
    stream = streams[0]
    codec = stream.codec_context.name
    if transcode and codec not in STREAM_CODECS:
        return _transcoded(container, stream)
    time_base = stream.time_base or Fraction(1, 90_000)
    return Source(
        codec=codec,
        extradata=bytes(stream.codec_context.extradata or b""),
        time_base=time_base,
        packets=_remuxed(container, stream, time_base),
        closer=container.close,
    )


def _remuxed(container, stream, time_base: Fraction) -> Iterator[Packet]:
    """The source's own packets, timestamped (a packet without one gets the frame rate's)."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    first = None
    for count, packet in enumerate(container.demux(stream)):
        if not packet.size:
            continue
        clock = packet.dts if packet.dts is not None else packet.pts
        if clock is None:
            clock = int(count / rate / time_base)
        first = clock if first is None else first
        pts = packet.pts if packet.pts is not None else clock
        yield Packet(bytes(packet), int(pts), float((clock - first) * time_base))


def _transcoded(container, stream) -> Source:
    """Re-encodes a source the server cannot decode (raw camera frames, MJPEG, MPEG-4 part 2) to H.264."""
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    encoder = av.CodecContext.create(TRANSCODE_CODEC, "w")
    encoder.width, encoder.height = stream.codec_context.width, stream.codec_context.height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1) / rate
    encoder.framerate = rate
    # Low latency: no B-frames, no look-ahead; a key frame every two seconds.
    encoder.options = {"preset": "veryfast", "tune": "zerolatency"}
    encoder.gop_size = int(2 * rate)
    encoder.open()
    time_base = encoder.time_base

    def packets() -> Iterator[Packet]:
        for index, frame in enumerate(container.decode(stream)):
            picture = frame.reformat(format="yuv420p")
            picture.pts = index
            picture.time_base = time_base
            for packet in encoder.encode(picture):
                yield Packet(bytes(packet), int(packet.pts), float(packet.pts * time_base))
        for packet in encoder.encode(None):
            yield Packet(bytes(packet), int(packet.pts), float(packet.pts * time_base))

    return Source(
        codec="h264",
        extradata=bytes(encoder.extradata or b""),
        time_base=time_base,
        packets=packets(),
        closer=container.close,
    )


def label_of(prob_fake: float) -> tuple[str, float]:
    """FAKE or REAL and the confidence in percent, as ``client score`` gives them (argmax of the two classes)."""
    label = LABEL_FAKE if prob_fake >= 0.5 else LABEL_REAL
    return label, round(max(prob_fake, 1.0 - prob_fake) * PERCENT, 1)


def _value(result, name: str):
    array = result.as_numpy(name)
    return None if array is None else array[0]


def parse_event(result, time_base: Fraction) -> dict | None:
    """One response as the JSON object ``--json`` prints (None for the empty final response)."""
    kind = _value(result, "EVENT")
    if kind is None:
        return None
    kind = kind[0].decode() if isinstance(kind[0], bytes) else str(kind[0])
    if kind == "frame":
        pts = int(_value(result, "FRAME_PTS")[0])
        return {
            "type": "frame",
            "frame": int(_value(result, "FRAME_INDEX")[0]),
            "pts": pts,
            "time_s": float(pts * time_base),
            "frame_prob_fake": float(_value(result, "FRAME_PROB_FAKE")[0]),
            "face_box": [float(v) for v in _value(result, "FACE_BOXES")[0]],
            "face_found": bool(_value(result, "FACE_FOUND")[0]),
        }
    if kind == "window":
        prob = float(_value(result, "PROB_FAKE")[0])
        label, confidence = label_of(prob)
        pts = int(_value(result, "FRAME_PTS")[0])
        return {
            "type": "window",
            "start_frame": int(_value(result, "WINDOW_START")[0]),
            "end_frame": int(_value(result, "FRAME_INDEX")[0]),
            "pts": pts,
            "time_s": float(pts * time_base),
            "prob_fake": prob,
            "frame_prob_fake_mean": float(_value(result, "WINDOW_PROB_FAKE_MEAN")[0]),
            "frames_scored": int(_value(result, "FRAMES_SCORED")[0]),
            "label": label,
            "confidence": confidence,
            **_version_facts(result),
        }
    if kind == "skipped":
        return {"type": "skipped", "frames": [int(v) for v in _value(result, "SKIPPED_FRAMES")]}
    if kind == "summary":
        counts = [name for name in STREAM_EVENTS["summary"] if name not in VERSION_OUTPUTS]
        return {
            "type": "summary",
            **{name.lower(): int(_value(result, name)[0]) for name in counts},
            **_version_facts(result),
        }
    raise ClientError(INTERNAL, f"the server sent an event of unknown type {kind!r}")


def _version_facts(result) -> dict:
    """Which classifier version scored the stream and the sha256 of its checkpoint (the answer facts)."""
    sha = _value(result, "CHECKPOINT_SHA256")[0]
    return {
        MODEL_VERSION_KEY: int(_value(result, "CLASSIFIER_VERSION")[0]),
        CHECKPOINT_SHA256_KEY: sha.decode() if isinstance(sha, bytes) else str(sha),
    }


class StreamSession:
    """One live stream: one gRPC stream, one correlation id, requests and their events.

    Args:
        connection: The server: a :class:`client.Connection` (TLS, headers), or its gRPC address ``host:port``
            (its ``timeout_s`` is not used: ``timeout_s`` bounds each answer).
        settings: The ``STREAM`` declaration (codec, time_base, frames, hop, score_every).
        extradata: The codec's global header.
        timeout_s: Longest wait for a request's final answer.
        correlation_id: The stream's id (default: random, so that clients do not collide).
    """

    def __init__(
        self,
        connection: Connection | str,
        settings: dict,
        extradata: bytes = b"",
        *,
        timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S,
        correlation_id: int | None = None,
    ) -> None:
        self.connection = Connection.of(connection)
        self.url = self.connection.url
        self.settings = dict(settings)
        self.time_base = Fraction(*settings["time_base"])
        self.extradata = extradata
        self.timeout_s = timeout_s
        self.correlation_id = correlation_id if correlation_id is not None else secrets.randbits(63) or 1
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._client = self._new_client()
        self._client.start_stream(
            callback=lambda result, error: self._answers.put((result, error)), headers=self.connection.metadata
        )
        self._count = 0
        self._pending: dict[str, float] = {}
        self.started = False
        self.ended = False
        self.failed: ClientError | None = None

    def send(self, packets: list[Packet], end: bool = False) -> str:
        """Sends packets (the first call opens the stream, ``end`` closes it); returns the request's id."""
        if self.failed is not None:
            raise self.failed
        inputs = _packet_inputs(packets)
        start = not self.started
        if start:
            inputs.append(_input("STREAM", np.array([[json.dumps(self.settings).encode()]], dtype=np.object_)))
            if self.extradata:
                inputs.append(_input("EXTRADATA", np.frombuffer(self.extradata, np.uint8)[None]))
        self._count += 1
        request_id = f"{self.correlation_id}-{self._count}"
        try:
            self._client.async_stream_infer(
                STREAM_MODEL,
                inputs,
                request_id=request_id,
                sequence_id=self.correlation_id,
                sequence_start=start,
                sequence_end=end,
                enable_empty_final_response=True,
                outputs=[grpcclient.InferRequestedOutput(n) for n in STREAM_OUTPUTS],
            )
        except InferenceServerException as exc:
            # A stream that broke says why through its callback; tritonclient's own message only says it broke.
            self.events(wait_s=0.0)
            self.failed = ClientError.from_triton(exc)
            raise self.failed from None
        self.started = True
        self.ended = self.ended or end
        self._pending[request_id] = time.monotonic()
        return request_id

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered in full."""
        return len(self._pending)

    def events(self, wait_s: float | None = 0.0) -> list[dict]:
        """The events received so far (waiting up to ``wait_s`` for the first; None: until one arrives).

        Raises:
            ClientError: The server answered with an error (the stream is over), or a request has waited
                longer than ``timeout_s``.
        """
        events: list[dict] = []
        progress = False  # an event or a final answer came: take what else is queued, wait no more
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            if self.failed is not None:
                raise self.failed
            try:
                if progress:
                    result, error = self._answers.get_nowait()
                else:
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                    result, error = self._answers.get(timeout=timeout)
            except queue.Empty:
                self._check_overdue()
                return events
            if error is not None:
                self.failed = stream_error(error)
                self._pending.clear()
                raise self.failed
            response = result.get_response()
            event = parse_event(result, self.time_base)
            if event is not None:
                event["received_at"] = time.monotonic()
                events.append(event)
            progress = True
            final = response.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                self._pending.pop(response.id, None)

    def _check_overdue(self) -> None:
        if self._pending:
            oldest = min(self._pending.values())
            if time.monotonic() - oldest > self.timeout_s:
                self.failed = ClientError(
                    DEADLINE_EXCEEDED,
                    f"the server has not answered a request of stream {self.correlation_id} for {self.timeout_s:g} s",
                )
                raise self.failed

    def drain(self, until_in_flight: int = 0) -> list[dict]:
        """Waits until at most ``until_in_flight`` requests are unanswered; the events meanwhile."""
        events: list[dict] = []
        while self.in_flight > until_in_flight:
            events += self.events(wait_s=min(1.0, self.timeout_s))
        return events

    def release(self) -> None:
        """After a failure: ends the correlation id on a fresh gRPC stream, so that the server's slot is
        free at once instead of after its idle timeout. Best effort: a server that cannot be reached
        frees the slot by itself."""
        if not self.started or self.ended:
            return
        self.ended = True
        done = threading.Event()
        releaser = self._new_client()
        try:
            releaser.start_stream(callback=lambda result, error: done.set(), headers=self.connection.metadata)
            releaser.async_stream_infer(
                STREAM_MODEL,
                _packet_inputs([]),
                sequence_id=self.correlation_id,
                sequence_end=True,
                enable_empty_final_response=True,
            )
            done.wait(RELEASE_TIMEOUT_S)
        except InferenceServerException:
            pass  # the idle timeout frees the slot; the stream's own error was already reported
        finally:
            releaser.stop_stream(cancel_requests=True)
            releaser.close()

    def _new_client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.url, **self.connection.client_options())

    def close(self) -> None:
        """Closes the gRPC stream (a stream left without END is freed by the server's idle timeout)."""
        self._client.stop_stream(cancel_requests=True)
        self._client.close()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def stream_error(error: InferenceServerException) -> ClientError:
    """A stream's error with its status: from the stream model's message, or Triton's wording."""
    client_error = ClientError.from_triton(error)
    match = STATUS_PREFIX.match(client_error.message)
    if match is not None:
        return ClientError(match[1], client_error.message[match.end() :])
    if client_error.status == UNKNOWN_STATUS and SEQUENCE_REFUSAL.search(client_error.message):
        return ClientError(INVALID_ARGUMENT, client_error.message)
    if client_error.status == UNKNOWN_STATUS and DEAD_STUB_MESSAGE.search(client_error.message):
        return ClientError(INTERNAL, client_error.message)
    return client_error


def _input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    """One input of a stream request, of the contract's wire type (``array`` holds one stream's batch of 1)."""
    tensor = grpcclient.InferInput(name, list(array.shape), TENSORS[name].datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _packet_inputs(packets: list[Packet]) -> list:
    payload = b"".join(p.data for p in packets)
    sizes = np.array([[len(p.data) for p in packets]], dtype=np.int32).reshape(1, -1)
    pts = np.array([[p.pts for p in packets]], dtype=np.int64).reshape(1, -1)
    return [
        _input("PACKETS", np.frombuffer(payload, np.uint8).reshape(1, -1)),
        _input("PACKET_SIZES", sizes),
        _input("PACKET_PTS", pts),
    ]


@dataclass
class StreamOutcome:
    """What a stream came to: its summary (None when it did not end), and whether it was interrupted."""

    summary: dict | None
    interrupted: bool = False
    events: int = 0


def play(
    session: StreamSession,
    packets: Iterator[Packet],
    realtime: bool,
    on_event: Callable[[dict], None],
    stop: threading.Event | None = None,
) -> StreamOutcome:
    """Sends ``packets`` through ``session`` and hands every event to ``on_event`` as it arrives.

    With ``realtime`` each packet is sent when it is due (the source's own rate), else as fast as the
    server takes them (:data:`IN_FLIGHT` requests of :data:`CHUNK_PACKETS` packets). Ctrl-C (or
    ``stop``) ends the stream cleanly: END is sent and the summary awaited.

    Raises:
        ClientError: The server refused the stream or a request (the stream is over; its slot released).
    """
    sent_at: dict[int, float] = {}
    count = 0

    def deliver(events: list[dict]) -> None:
        nonlocal count
        for event in events:
            if event["type"] == "frame" and event["pts"] in sent_at:
                event["latency_ms"] = (event["received_at"] - sent_at.pop(event["pts"])) * 1000.0
            event.pop("received_at", None)
            count += 1
            on_event(event)

    interrupted = False
    try:
        started = time.monotonic()
        chunk: list[Packet] = []
        for packet in packets:
            if stop is not None and stop.is_set():
                interrupted = True
                break
            if realtime:
                wait = started + packet.due_s - time.monotonic()
                while wait > 0:
                    deliver(session.events(wait_s=wait))
                    wait = started + packet.due_s - time.monotonic()
                chunk = [packet]
            else:
                chunk.append(packet)
                if len(chunk) < CHUNK_PACKETS:
                    continue
            sent_at.update((p.pts, time.monotonic()) for p in chunk)
            session.send(chunk)
            chunk = []
            deliver(session.events())
            deliver(session.drain(REALTIME_IN_FLIGHT if realtime else IN_FLIGHT - 1))
        if chunk:
            sent_at.update((p.pts, time.monotonic()) for p in chunk)
            session.send(chunk)
    except KeyboardInterrupt:
        interrupted = True
    except ClientError:
        session.release()
        raise
    summary: dict | None = None
    try:
        session.send([], end=True)
        for event in session.drain(0):
            if event["type"] == "summary":
                summary = event
            deliver([event])
    except ClientError:
        session.release()
        raise
    return StreamOutcome(summary=summary, interrupted=interrupted, events=count)


def settings_for(
    source: Source, frames: int, hop: int | None, score_every: int, model_version: int | None = None
) -> dict:
    """The ``STREAM`` declaration for a source (``model_version`` only when one is chosen: else the latest)."""
    settings = {
        "codec": source.codec,
        "time_base": [source.time_base.numerator, source.time_base.denominator],
        "frames": frames,
        "hop": hop if hop is not None else frames,
        "score_every": score_every,
    }
    if model_version is not None:
        settings["model_version"] = model_version
    return settings


def window_line(event: dict, frames: int) -> str:
    """The one line per window of the plain output."""
    start = event["start_frame"]
    return (
        f"frames {start}-{start + frames - 1}: {event['label']} {event['confidence']:.1f}% "
        f"(prob_fake {event['prob_fake']:.4f} of frame {event['end_frame']} at {event['time_s']:.2f} s; "
        f"mean of {event['frames_scored']} scored frames {event['frame_prob_fake_mean']:.4f})"
    )


def summary_line(summary: dict) -> str:
    return (
        f"stream ended: {summary['frames_received']} frames received, {summary['frames_decoded']} decoded, "
        f"{summary['frames_scored']} scored, {summary['frames_skipped']} skipped; classifier version "
        f"{summary[MODEL_VERSION_KEY]} (checkpoint {summary[CHECKPOINT_SHA256_KEY][:12]})"
    )
