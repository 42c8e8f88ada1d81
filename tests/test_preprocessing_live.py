"""Live streams without a server: settings, decoding packets, windows, pace, online following, configs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contract import STREAM_EVENTS, STREAM_IDLE_US, STREAM_OUTPUTS, Kind, model_name
from export.configs import CPU_MAX_STREAMS, CPU_STREAM_SLOTS, GPU_MAX_STREAMS, GPU_STREAM_SLOTS
from export.repository import frame_classifier_link, render_model_folder
from preprocessing import ConfigError, FaceDetector, InputError
from preprocessing.decode import decode_frames
from preprocessing.live import (
    LAG_DROP_S,
    LAG_HIGH_S,
    MAX_PACKETS_WITHOUT_PICTURE,
    MAX_SCORE_EVERY,
    OnlineFaceFollower,
    Pace,
    StreamDecoder,
    StreamFrame,
    StreamSettings,
    Windows,
    check_limits,
)
from tests import media

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
SERVED = (10, 20, 30)
CODECS = (
    ("libx264", "mp4", "h264"),
    ("libx265", "mp4", "hevc"),
    ("libvpx", "webm", "vp8"),
    ("libvpx-vp9", "webm", "vp9"),
)


def packets_of(data: bytes) -> tuple[str, bytes, Fraction, list[tuple[bytes, int]]]:
    """What a client sends: codec, extradata, time base and the packets with their timestamps."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        packets = [(bytes(p), int(p.pts)) for p in container.demux(stream) if p.size]
        return stream.codec_context.name, bytes(stream.codec_context.extradata or b""), stream.time_base, packets


def settings(**overrides) -> str:
    import json

    return json.dumps({"codec": "h264", "time_base": [1, 12800], "frames": 20, **overrides})


def test_settings_are_parsed_and_checked():
    parsed = StreamSettings.from_json(settings(hop=5, score_every=2), SERVED)
    assert (parsed.codec, parsed.time_base, parsed.frames, parsed.hop, parsed.score_every) == (
        "h264",
        Fraction(1, 12800),
        20,
        5,
        2,
    )
    assert StreamSettings.from_json(settings(), SERVED).hop == 20
    for text, words in (
        (settings(codec="mpeg4"), "'mpeg4' is not accepted"),
        (settings(frames=7), "frames=7 is not served"),
        (settings(hop=0), "hop must be a positive"),
        (settings(score_every=9), "score_every"),
        (settings(time_base=[1, 0]), "time_base"),
        (settings(colour="red"), "unknown keys"),
        ("[1, 2]", "JSON object"),
        ("{", "JSON object"),
        ('{"codec": "h264"}', "lacks 'time_base'"),
    ):
        with pytest.raises(InputError, match=words):
            StreamSettings.from_json(text, SERVED)


@pytest.mark.parametrize(("encoder", "container", "codec"), CODECS)
def test_a_stream_decodes_the_frames_the_upload_path_does(encoder, container, codec):
    data = media.face_clip(frames=12, codec=encoder, container=container)
    name, extradata, _, packets = packets_of(data)
    assert name == codec
    decoder = StreamDecoder(name, extradata)
    frames = decoder.decode(packets[:5]) + decoder.decode(packets[5:]) + decoder.flush()
    expected = decode_frames(data, 12).frames
    assert [f.index for f in frames] == list(range(12))
    assert sorted(f.pts for f in frames) == [f.pts for f in frames]
    for frame, reference in zip(frames, expected):
        np.testing.assert_array_equal(frame.rgb, reference)


def test_other_codecs_and_garbage_are_refused():
    with pytest.raises(InputError, match="'mjpeg' is not accepted"):
        StreamDecoder("mjpeg")
    decoder = StreamDecoder("h264")
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=f"{MAX_PACKETS_WITHOUT_PICTURE} packets in a row gave no picture"):
        decoder.decode([(rng.bytes(300), i) for i in range(MAX_PACKETS_WITHOUT_PICTURE + 1)])


def test_a_frame_over_the_pixel_limit_is_refused():
    _, extradata, _, packets = packets_of(media.face_clip(frames=2))
    with pytest.raises(InputError, match="max_pixels"):
        decoder = StreamDecoder("h264", extradata, max_pixels=100)
        decoder.decode(packets)
        decoder.flush()


def test_windows_report_the_last_scored_frame_and_the_mean():
    windows = Windows(frames=4, hop=2)
    scores = {0: 0.1, 1: None, 2: 0.3, 3: 0.4, 4: None, 5: None, 6: 0.7, 7: None}
    reported = [w for i, s in scores.items() if (w := windows.add(i, 100 * i, s)) is not None]
    assert [(w.start, w.stop, w.end_frame, w.end_pts, w.scored) for w in reported] == [
        (0, 3, 3, 300, 3),
        (2, 5, 3, 300, 2),
        (4, 7, 6, 600, 1),
    ]
    assert reported[0].prob_fake == pytest.approx(0.4)
    assert reported[0].mean == float(np.mean(np.array([0.1, 0.3, 0.4], np.float32), dtype=np.float64))
    assert Windows(frames=3, hop=1).add(0, 0, None) is None  # no window with no scored frame


def _frame(index: int, fps: int = 25) -> StreamFrame:
    return StreamFrame(index=index, pts=index, rgb=np.zeros((2, 2, 3), np.uint8))


def test_a_configured_pace_scores_every_kth_frame():
    pace = Pace(3, Fraction(1, 25))
    due = []
    for i in range(9):
        pace.observe(_frame(i), now=100.0 + 10.0 * i)  # far behind: a configured k does not change
        due.append(pace.due(i))
    assert due == [True, False, False, True, False, False, True, False, False]


def test_the_adaptive_pace_backs_off_behind_and_recovers():
    pace = Pace(0, Fraction(1, 25))
    pace.observe(_frame(0), now=0.0)
    assert pace.due(0) and pace.every == 1
    late = 0.04 + LAG_HIGH_S + 0.1
    pace.observe(_frame(1), now=late)
    assert pace.every == 2
    for i in range(2, 6):
        pace.observe(_frame(i), now=late + i)
    assert pace.every == MAX_SCORE_EVERY
    pace.observe(_frame(6), now=6 / 25 + LAG_DROP_S + 1.0)
    assert not pace.due(6), "past the drop mark nothing is scored"
    for i in range(7, 7 + MAX_SCORE_EVERY):
        pace.observe(_frame(i), now=i / 25)
    assert pace.every == 1 and pace.due(7 + MAX_SCORE_EVERY)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_face_size=40)


def test_online_following_finds_the_face_and_keeps_memory_flat(detector):
    follower = OnlineFaceFollower(detector, detect_every=20, max_followed=2, min_prob=0.9, iou_threshold=0.3)
    for index in range(0, 30, 2):  # every other frame, as a skipping pace leaves them
        box, found = follower.follow(index, media.face_frame(index))
        assert found and box is not None
        expected = media.face_box(index)
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        assert (
            abs(centre[0] - (expected[0] + expected[2]) / 2) < 15
            and abs(centre[1] - (expected[1] + expected[3]) / 2) < 20
        )
    assert all(len(track.boxes) <= 2 for track in follower.tracker.tracks)


def test_no_face_yet_gives_no_box(detector):
    follower = OnlineFaceFollower(detector, detect_every=20, max_followed=2, min_prob=0.9, iou_threshold=0.3)
    assert follower.follow(0, np.full((240, 320, 3), 128, np.uint8)) == (None, False)


def test_the_cap_stays_below_the_slots_and_streams_time_out():
    check_limits(CPU_MAX_STREAMS, CPU_STREAM_SLOTS, STREAM_IDLE_US / 1e6)
    check_limits(GPU_MAX_STREAMS, GPU_STREAM_SLOTS, STREAM_IDLE_US / 1e6)
    with pytest.raises(ConfigError, match="below the sequence batcher's 8 slots"):
        check_limits(8, 8, 10.0)
    with pytest.raises(ConfigError, match="idle"):
        check_limits(4, 8, 0.0)


def _parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


@pytest.mark.parametrize("relative", ["stream/config.pbtxt", "stream/configs/cpu.pbtxt"])
def test_the_stream_config_is_a_decoupled_sequence_model(relative):
    config = _parse((REPOSITORY / relative).read_text())
    assert config.model_transaction_policy.decoupled
    batching = config.sequence_batching
    assert batching.max_sequence_idle_microseconds == STREAM_IDLE_US
    assert batching.WhichOneof("strategy_choice") == "oldest"
    controls = {c.name: c.control[0].kind for c in batching.control_input}
    assert controls == {
        "START": mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START,
        "END": mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END,
        "CORRID": mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID,
    }
    cap = int(config.parameters["max_streams"].string_value)
    assert 1 <= cap < batching.oldest.max_candidate_sequences
    assert [o.name for o in config.output] == list(STREAM_OUTPUTS)
    assert {name for names in STREAM_EVENTS.values() for name in names} | {"EVENT"} == set(STREAM_OUTPUTS)
    assert {i.name for i in config.input if i.optional} == {"STREAM", "EXTRADATA"}


def test_committed_stream_folders_are_what_the_renderer_writes():
    files = dict(render_model_folder(Kind.STREAM))
    for frames in SERVED:
        files.update(render_model_folder(Kind.FRAME_CLASSIFIER, frames))
    for relative, text in files.items():
        assert (REPOSITORY / relative).read_text() == text, f"{relative} differs from the rendered template"


@pytest.mark.parametrize("frames", SERVED)
def test_each_frame_classifier_scores_one_frame_per_row_from_its_classifiers_file(frames):
    for relative in ("config.pbtxt", "configs/cpu.pbtxt"):
        config = _parse((REPOSITORY / model_name(Kind.FRAME_CLASSIFIER, frames) / relative).read_text())
        assert config.name == model_name(Kind.FRAME_CLASSIFIER, frames)
        (faces,) = config.input
        assert list(faces.dims) == [1, 3, 112, 112]
    link, target = frame_classifier_link(frames)
    path = REPOSITORY / link
    assert path.is_symlink() and os.readlink(path) == target
    assert (path.parent / target).resolve() == (REPOSITORY / f"resnext_lstm_{frames}" / "1" / "model.onnx").resolve()


def test_the_client_package_does_not_import_pyav():
    code = textwrap.dedent("""
        import sys
        import client, client.cli, client.api, client.batch
        print(sorted(m for m in sys.modules if m.split('.')[0] == 'av'))
    """)
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
