"""Live streams: encoded packets in, one face crop per scored frame out, online.

A plain library (no Triton imports) behind the ``stream`` model (``triton_models/live_stream.py``).
One :class:`LiveStream` per stream holds everything that stream needs and nothing another one
does: its own decoder (:class:`StreamDecoder`, built from the codec parameters the client sends
at the start; the server never opens a container, a file or a URL), its own face tracker
(:class:`OnlineFaceFollower`), its pace (:class:`Pace`, which frames to score) and its recent
frame scores (:class:`Windows`).

What makes a stream cheap for the published weights: a frame's score never depends on the frames
before it (one LSTM step from a zero state per frame), so each scored frame costs one trunk pass,
and a window's faithful score is the score of the last scored frame in it.

Online face following differs from the offline path of ``preprocess_<N>`` in what it cannot know:

* no look-ahead: every scored frame is searched (windows around the followed faces, the whole
  frame on key frames); the offline path skips frames and interpolates between two searched
  ones, and always searches the clip's last frame whole;
* the followed face is the most prominent face *so far*, so it can change during a stream; the
  offline path chooses once, over the whole clip;
* a frame where the followed face is not found reuses its last box (an earlier frame's, as the
  training data preparation did); offline the nearest frame's box may be a later one;
* a scored frame while no face is being followed is searched whole (offline: only key frames);
  until a first face is found a frame is scored whole, as the original app did.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np

from contract import MAX_SCORE_EVERY, STREAM_CODECS, STREAM_SETTINGS_KEYS
from preprocessing.crop import crop_faces
from preprocessing.decode import DEFAULT_MAX_PIXELS, frame_to_rgb
from preprocessing.detect import FaceDetector, followed_tracks
from preprocessing.errors import ConfigError, InputError, LimitError
from preprocessing.track import FaceTracker

#: Packets in a row that may give no picture before the stream is refused as undecodable. Above
#: the decoders' reordering delay (H.264 and HEVC hold at most 16 frames).
MAX_PACKETS_WITHOUT_PICTURE = 32
#: The adaptive pace scores fewer frames when a frame is processed this late (seconds behind the
#: stream's own clock), and more again below the lower mark.
LAG_HIGH_S = 0.4
LAG_LOW_S = 0.15
#: Frames processed later than this are decoded but not scored until the stream has caught up:
#: the backlog stays bounded by the decoding cost alone.
LAG_DROP_S = 2.0
#: Searched frames in a row a face may be missed in before its track is forgotten (bounded memory).
FORGET_AFTER = 100
#: Boxes kept per track (its motion needs the last two).
KEPT_BOXES = 2
#: Largest time base denominator and numerator accepted.
_MAX_TIME_BASE = 1 << 31
_SETTINGS_KEYS = frozenset(STREAM_SETTINGS_KEYS)


@dataclass(frozen=True)
class StreamSettings:
    """What a client declares at the start of a stream (the ``STREAM`` input, one JSON object).

    Attributes:
        codec: FFmpeg decoder name, one of :data:`STREAM_CODECS`.
        time_base: Seconds per unit of the packets' timestamps.
        frames: N: the window length and the served classifier (``resnext_frame_<N>``) to score with.
        hop: A window ends every ``hop`` frames.
        score_every: Score every k-th frame; 0: adapt k to keep up (see :class:`Pace`).
        model_version: The classifier version to score with; 0: the latest served when the stream
            starts (a stream keeps the version it started with).
    """

    codec: str
    time_base: Fraction
    frames: int
    hop: int
    score_every: int = 0
    model_version: int = 0

    @classmethod
    def from_json(cls, text: str | bytes, served: Iterable[int]) -> StreamSettings:
        """Parses and checks the client's settings.

        Raises:
            InputError: Not a JSON object, an unknown or missing key, a bad value, an unserved N or a
                refused codec (the message names it).
        """
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"STREAM must be a JSON object: {exc}") from None
        if not isinstance(raw, dict):
            raise InputError(f"STREAM must be a JSON object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - _SETTINGS_KEYS)
        if unknown:
            raise InputError(f"STREAM has unknown keys {unknown}; known: {sorted(_SETTINGS_KEYS)}")
        for key in ("codec", "time_base", "frames"):
            if key not in raw:
                raise InputError(f"STREAM lacks {key!r}")
        codec = raw["codec"]
        if codec not in STREAM_CODECS:
            raise InputError(f"codec {codec!r} is not accepted for streams; accepted: {', '.join(STREAM_CODECS)}")
        time_base = raw["time_base"]
        if (
            not isinstance(time_base, list)
            or len(time_base) != 2
            or not all(_is_int(v) and 0 < v < _MAX_TIME_BASE for v in time_base)
        ):
            raise InputError(f"time_base must be [numerator, denominator], two positive integers, got {time_base!r}")
        frames = _positive(raw, "frames")
        lengths = sorted(served)
        if frames not in lengths:
            raise InputError(f"frames={frames} is not served; served lengths: {', '.join(map(str, lengths))}")
        hop = _positive(raw, "hop", default=frames)
        score_every = raw.get("score_every", 0)
        if not _is_int(score_every) or not 0 <= score_every <= MAX_SCORE_EVERY:
            raise InputError(
                f"score_every must be an integer from 0 (adaptive) to {MAX_SCORE_EVERY}, got {score_every!r}"
            )
        model_version = _positive(raw, "model_version") if "model_version" in raw else 0
        return cls(
            codec=codec,
            time_base=Fraction(*time_base),
            frames=frames,
            hop=hop,
            score_every=score_every,
            model_version=model_version,
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(raw: dict, key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if not _is_int(value) or value < 1:
        raise InputError(f"{key} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class StreamFrame:
    """One decoded frame of a stream.

    Attributes:
        index: Its place in display order, from 0.
        pts: Its timestamp in the stream's time base (the packet's, reordered by the decoder).
        rgb: Upright RGB ``uint8`` (height, width, 3), converted as the offline decoder does (BT.601).
    """

    index: int
    pts: int
    rgb: np.ndarray


class StreamDecoder:
    """One stream's decoder, fed the packets its client sends.

    Args:
        codec: One of :data:`STREAM_CODECS`.
        extradata: The codec's global header (H.264 avcC, HEVC hvcC; empty for in-band parameters).
        max_pixels: Largest frame area accepted.

    Raises:
        InputError: A refused codec or extradata the decoder cannot open.
    """

    def __init__(self, codec: str, extradata: bytes = b"", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if codec not in STREAM_CODECS:
            raise InputError(f"codec {codec!r} is not accepted for streams; accepted: {', '.join(STREAM_CODECS)}")
        self.codec = codec
        self.max_pixels = max_pixels
        self._context = av.CodecContext.create(codec, "r")
        # One thread: frame threading would add its delay to every frame's latency.
        self._context.thread_count = 1
        if extradata:
            self._context.extradata = bytes(extradata)
        try:
            self._context.open()
        except av.error.FFmpegError as exc:
            raise InputError(
                f"cannot open the {codec} decoder with the stream's extradata: {exc.strerror or exc}"
            ) from None
        self.packets = 0
        self.frames = 0
        self._without_picture = 0

    def decode(self, packets: Sequence[tuple[bytes, int]]) -> list[StreamFrame]:
        """Decodes ``(payload, pts)`` packets in decoding order; returns the frames they completed.

        Raises:
            InputError: :data:`MAX_PACKETS_WITHOUT_PICTURE` packets in a row gave no picture (not this
                codec, or garbage).
            LimitError: A frame larger than ``max_pixels``.
        """
        frames: list[StreamFrame] = []
        for payload, pts in packets:
            self.packets += 1
            packet = av.Packet(payload)
            packet.pts = pts
            packet.dts = None
            try:
                decoded = self._context.decode(packet)
            except av.error.FFmpegError:
                decoded = []
            frames.extend(self._take(decoded))
            self._without_picture = 0 if decoded else self._without_picture + 1
            if self._without_picture >= MAX_PACKETS_WITHOUT_PICTURE:
                raise InputError(
                    f"{self._without_picture} packets in a row gave no picture: the data is not a "
                    f"decodable {self.codec} stream"
                )
        return frames

    def flush(self) -> list[StreamFrame]:
        """The frames the decoder still holds (at the end of the stream)."""
        try:
            decoded = self._context.decode(None)
        except av.error.FFmpegError:
            return []
        return self._take(decoded)

    def _take(self, decoded: Iterable[av.VideoFrame]) -> list[StreamFrame]:
        frames = []
        for frame in decoded:
            if frame.width * frame.height > self.max_pixels:
                raise LimitError(
                    "max_pixels", frame.width * frame.height, self.max_pixels, f"frame of {frame.width}x{frame.height}"
                )
            pts = frame.pts if frame.pts is not None else self.frames
            frames.append(StreamFrame(index=self.frames, pts=int(pts), rgb=frame_to_rgb(frame, 1)))
            self.frames += 1
        return frames

    def close(self) -> None:
        self._context = None


class OnlineFaceFollower:
    """The main face of a stream, frame by frame, with no look-ahead (see the module's notes).

    Args:
        detector: The model's MTCNN (shared by every stream; it holds no per-stream state).
        detect_every: A whole-frame search every this many searched frames (1: every one).
        max_followed: Faces searched in windows at a time (0: every face).
        min_prob: Least confidence that starts a track.
        iou_threshold: The tracker's matching threshold.
    """

    def __init__(
        self, detector: FaceDetector, detect_every: int, max_followed: int, min_prob: float, iou_threshold: float
    ) -> None:
        self.detector = detector
        self.detect_every = detect_every
        self.max_followed = max_followed
        self.tracker = FaceTracker(min_prob, iou_threshold)
        self.searched = 0

    def follow(self, index: int, frame: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """Searches frame ``index`` (frames in increasing order, any may be left out).

        Returns:
            ``(box, found)``: the followed face's box (``float32 [4]``; its last one when it was not
            found here), or None while no face has been seen; whether it was found in this frame.
        """
        searched = followed_tracks(self.tracker, self.max_followed)
        whole = self.searched % self.detect_every == 0 or not searched
        self.detector.search_frame(self.tracker, index, frame, searched, whole=whole)
        self.searched += 1
        self._prune()
        if not self.tracker.tracks:
            return None, False
        main = self.tracker.ranked()[0]
        found = main.last == index
        return main.box.astype(np.float32), found

    def _prune(self) -> None:
        """Keeps memory flat over a long stream: old boxes and long-lost faces are dropped."""
        self.tracker.tracks = [t for t in self.tracker.tracks if t.misses <= FORGET_AFTER]
        for track in self.tracker.tracks:
            if len(track.boxes) > KEPT_BOXES:
                for frame in sorted(track.boxes)[:-KEPT_BOXES]:
                    del track.boxes[frame]
                    del track.probs[frame]


class Pace:
    """Which frames of a stream are scored: every k-th, k configured or adapted to the lag.

    The lag of a frame is how late it is processed against the stream's own clock: the wall time
    since the stream's first frame was processed minus the media time between the two frames. A
    client that sends faster than real time gives a negative lag; a server that falls behind a
    live stream sees it grow. The adaptive pace doubles k above :data:`LAG_HIGH_S` (up to
    :data:`MAX_SCORE_EVERY`), steps it down below :data:`LAG_LOW_S`, and scores nothing past
    :data:`LAG_DROP_S` until the stream has caught up.

    Args:
        score_every: k; 0 adapts it.
        time_base: Seconds per timestamp unit.
    """

    def __init__(self, score_every: int, time_base: Fraction) -> None:
        self.adaptive = score_every == 0
        self.every = max(1, score_every)
        self.time_base = time_base
        self.last_scored: int | None = None
        self._origin: tuple[float, int] | None = None
        self.lag_s = 0.0

    def observe(self, frame: StreamFrame, now: float | None = None) -> None:
        """Notes when ``frame`` is being processed; adapts k when adaptive."""
        now = time.monotonic() if now is None else now
        if self._origin is None:
            self._origin = (now, frame.pts)
        wall0, pts0 = self._origin
        self.lag_s = (now - wall0) - float((frame.pts - pts0) * self.time_base)
        if not self.adaptive:
            return
        if self.lag_s > LAG_HIGH_S:
            self.every = min(self.every * 2, MAX_SCORE_EVERY)
        elif self.lag_s < LAG_LOW_S:
            self.every = max(self.every - 1, 1)

    def due(self, index: int) -> bool:
        """Whether frame ``index`` is scored (call in frame order, after :meth:`observe`)."""
        if self.adaptive and self.lag_s > LAG_DROP_S:
            return False
        if self.last_scored is None or index - self.last_scored >= self.every:
            self.last_scored = index
            return True
        return False


@dataclass(frozen=True)
class Window:
    """N frames of a stream, scored.

    Attributes:
        start: Its first frame.
        stop: Its last frame (``start + N - 1``).
        end_frame: The last scored frame in it: the one the faithful score comes from.
        end_pts: Its timestamp.
        prob_fake: The faithful score: ``end_frame``'s.
        mean: Mean of the scores of its scored frames.
        scored: How many of its frames were scored.
    """

    start: int
    stop: int
    end_frame: int
    end_pts: int
    prob_fake: float
    mean: float
    scored: int


class Windows:
    """Windows of ``frames`` frames, one ending every ``hop`` frames, from the scores as they come."""

    def __init__(self, frames: int, hop: int) -> None:
        self.frames = frames
        self.hop = hop
        # Only the last N frames' scores are kept: a window never looks further back.
        self._scores: deque[tuple[int, int, float]] = deque()

    def add(self, index: int, pts: int, score: float | None) -> Window | None:
        """Frame ``index`` (in order) with its score, or None when skipped; the window it ends, if any.

        A window with no scored frame is not reported.
        """
        if score is not None:
            self._scores.append((index, pts, float(score)))
        start = index - self.frames + 1
        while self._scores and self._scores[0][0] < start:
            self._scores.popleft()
        if start < 0 or start % self.hop != 0 or not self._scores:
            return None
        scores = np.array([s for _, _, s in self._scores], np.float32)
        end_frame, end_pts, prob_fake = self._scores[-1]
        return Window(
            start=start,
            stop=index,
            end_frame=end_frame,
            end_pts=end_pts,
            prob_fake=prob_fake,
            mean=float(np.mean(scores, dtype=np.float64)),
            scored=len(scores),
        )


@dataclass(frozen=True)
class ScoredFrame:
    """A frame waiting for its score: its crop, the classifier's N, and what the client is told about it."""

    frame: StreamFrame
    length: int
    version: int
    faces: np.ndarray  # float32 [1, 3, 112, 112]
    box: np.ndarray  # float32 [4]: the region cropped
    found: bool


@dataclass(frozen=True)
class CropSettings:
    """How the face region is cropped (``preprocessing.crop``)."""

    margin: float
    square: bool
    shift_y: float


class LiveStream:
    """Everything one stream holds: decoder, face tracker, pace, recent scores and counters.

    Args:
        settings: The client's declaration.
        extradata: The codec's global header.
        follower: Its own face follower.
        crop: Crop geometry.
        max_pixels: Largest frame area accepted.
    """

    def __init__(
        self,
        settings: StreamSettings,
        extradata: bytes,
        follower: OnlineFaceFollower,
        crop: CropSettings,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.settings = settings
        self.decoder = StreamDecoder(settings.codec, extradata, max_pixels)
        self.follower = follower
        self.crop = crop
        self.pace = Pace(settings.score_every, settings.time_base)
        self.windows = Windows(settings.frames, settings.hop)
        # The classifier version that scores this stream, and its checkpoint's sha256: set by the
        # server when the stream starts (the one asked for, or the latest served then).
        self.version = settings.model_version
        self.checkpoint_sha256 = ""
        self.received = 0
        self.scored = 0
        self.skipped = 0
        self.last_active = time.monotonic()

    def prepare(
        self, packets: Sequence[tuple[bytes, int]], end: bool
    ) -> tuple[list[StreamFrame], list[ScoredFrame | None]]:
        """Decodes packets (and flushes at the end); crops the frames due for scoring.

        Returns:
            ``(frames, prepared)``: every frame decoded now, and for each either its crop or None
            (skipped).

        Raises:
            InputError: Undecodable data or a frame over the limits.
        """
        self.received += sum(1 for payload, _ in packets if payload)
        frames = self.decoder.decode(packets)
        if end:
            frames += self.decoder.flush()
        prepared: list[ScoredFrame | None] = []
        for frame in frames:
            self.pace.observe(frame)
            prepared.append(self._crop(frame) if self.pace.due(frame.index) else None)
        return frames, prepared

    def _crop(self, frame: StreamFrame) -> ScoredFrame:
        box, found = self.follower.follow(frame.index, frame.rgb)
        height, width = frame.rgb.shape[:2]
        if box is None:
            # No face seen yet: the whole frame, as the original app scored a frame without a face.
            faces, cropped = crop_faces(
                [frame.rgb], np.array([[0.0, 0.0, width, height]]), margin=0.0, square=False, shift_y=0.0
            )
        else:
            faces, cropped = crop_faces(
                [frame.rgb], box[None], margin=self.crop.margin, square=self.crop.square, shift_y=self.crop.shift_y
            )
        return ScoredFrame(
            frame=frame, length=self.settings.frames, version=self.version, faces=faces, box=cropped[0], found=found
        )

    def record(self, frame: StreamFrame, score: float | None) -> Window | None:
        """Counts a processed frame; the window it ends, if any."""
        if score is None:
            self.skipped += 1
        else:
            self.scored += 1
        return self.windows.add(frame.index, frame.pts, score)

    def close(self) -> None:
        self.decoder.close()


def check_limits(max_streams: int, slots: int, idle_s: float) -> None:
    """The model's own stream cap must stay below Triton's slots, and streams must time out.

    Raises:
        ConfigError: ``max_streams`` not below ``slots``, or no idle timeout.
    """
    if not 1 <= max_streams < slots:
        raise ConfigError(
            f"max_streams must be at least 1 and below the sequence batcher's {slots} slots "
            f"(streams past the slots wait where the model cannot refuse them), got {max_streams}"
        )
    if not (idle_s > 0 and math.isfinite(idle_s)):
        raise ConfigError(f"max_sequence_idle_microseconds must be set and positive, got {idle_s * 1e6:g}")
