"""``python -m client stream SOURCE``: the command's arguments and its run.

PyAV (the stream extra) is imported only when the command runs, with :mod:`client.stream_client`.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import TextIO

from contract import MAX_SCORE_EVERY, Exit

from ..errors import ClientError
from .args import add_frames_option, add_model_version_option, connection_from_args, int_between, positive_int


def add_parser(commands, connection: argparse.ArgumentParser) -> None:
    stream = commands.add_parser(
        "stream",
        parents=[connection],
        help="score a live stream (or a file played as one) while it plays",
        description="Send SOURCE's encoded video over one gRPC stream to the server's stream model and print "
        "one line per window of N frames as the scores come. SOURCE is a file or anything FFmpeg opens on this "
        "machine (rtsp://, an HLS URL, a device with --input-format). Codecs H.264, HEVC, VP8, VP9 are sent as "
        "they are; others need --transcode. Needs the stream extra: pip install '.[stream]'. Ctrl-C ends the "
        "stream cleanly. Exit 0 when the stream ended, 1 when the server refused it, 130 when interrupted.",
    )
    stream.add_argument("source", metavar="SOURCE", help="file, URL or device")
    add_frames_option(stream, wording="window length N, the served model whose weights score the frames")
    stream.add_argument(
        "--hop",
        type=positive_int,
        default=None,
        metavar="H",
        help="a window ends every H frames (default: N, windows side by side)",
    )
    stream.add_argument(
        "--realtime",
        action="store_true",
        help="send a file at its own frame rate (live sources always are); default: as fast as the server takes it",
    )
    stream.add_argument(
        "--score-every",
        type=int_between(0, MAX_SCORE_EVERY),
        default=0,
        metavar="K",
        help="score every K-th frame; 0 lets the server choose K to keep up (default: %(default)s)",
    )
    add_model_version_option(stream)
    stream.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: every frame, window, skipped list and the summary",
    )
    stream.add_argument(
        "--transcode",
        action="store_true",
        help="re-encode to H.264 on this machine when SOURCE's codec is not one the server decodes",
    )
    stream.add_argument(
        "--input-format",
        default=None,
        metavar="F",
        help="FFmpeg input format of SOURCE (e.g. v4l2 for a camera; default: guessed)",
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        from .. import stream_client as live
    except ImportError as error:
        print(
            f"error: client stream needs the stream extra ({error}); install it with pip install '.[stream]'", file=err
        )
        return Exit.USAGE
    try:
        source = live.open_source(args.source, transcode=args.transcode, input_format=args.input_format)
    except ClientError as error:
        print(f"error: {error.status}: {error.message}", file=err)
        return Exit.FAILED
    settings = live.settings_for(source, args.frames, args.hop, args.score_every, args.model_version)
    timeout = args.timeout if args.timeout is not None else live.DEFAULT_ANSWER_TIMEOUT_S

    def on_event(event: dict) -> None:
        if args.json:
            print(json.dumps(event), file=out, flush=True)
        elif event["type"] == "window":
            print(live.window_line(event, args.frames), file=out, flush=True)
        elif event["type"] == "summary":
            print(live.summary_line(event), file=out, flush=True)

    stop = threading.Event()
    # Ctrl-C sets the flag; the stream then ends with END and its summary instead of being cut off.
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with live.StreamSession(connection_from_args(args), settings, source.extradata, timeout_s=timeout) as session:
            outcome = live.play(session, source.packets, realtime=args.realtime, on_event=on_event, stop=stop)
    except ValueError as error:
        parser.error(str(error))
    except ClientError as error:
        print(f"error: {error.status}: {error.message}", file=err)
        return Exit.FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
        source.closer()
    if outcome.interrupted:
        print("interrupted: the stream was ended", file=err)
        return Exit.INTERRUPTED
    return Exit.OK
