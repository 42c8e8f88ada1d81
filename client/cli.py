"""Command line: ``python -m client score|health|explain|web|evaluate|stream``.

Exit status: 0 success; 1 some video could not be scored, a model is not
ready, or explain failed; 2 bad arguments or an unusable results file;
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from .api import (
    DEFAULT_FRAMES,
    DEFAULT_HEALTH_FRAMES,
    DEFAULT_URL,
    EXPLAIN_MODEL_TEMPLATE,
    ClientError,
    DeepfakeClient,
    demo_warning,
    score_request,
)
from .batch import (
    ALL_FACES_JSON_KEYS,
    DEFAULT_RETRIES,
    MODEL_KEY,
    Outcome,
    ResultsFile,
    backoff_delays,
    call_with_retries,
    other_models,
    read_results,
    run_batch,
    unique_videos,
    video_key,
)
from .explain import PillowMissingError, require_pillow, write_explanation
from .progress import Console
from .stream_command import add_stream_parser, stream_command

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_CONCURRENCY = 1
#: Fewer videos than this finish too fast for a progress bar to help.
PROGRESS_MIN_VIDEOS = 2


def _int_at_least(minimum: int, wording: str):
    """An argparse type accepting integers >= ``minimum``; ``wording`` names them in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{key}{equals}...'")
    return key, value


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--url", default=DEFAULT_URL, help="gRPC address host:port (default: %(default)s)"
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="S",
        help="deadline of each request in seconds (default: none)",
    )
    group.add_argument("--ssl", action="store_true", help="connect with TLS")
    group.add_argument("--root-cert", metavar="F", help="PEM file of the CA certificates (TLS)")
    group.add_argument(
        "--client-cert", metavar="F", help="PEM file of the client certificate (mutual TLS)"
    )
    group.add_argument("--client-key", metavar="F", help="PEM file of the client key (mutual TLS)")
    group.add_argument(
        "--header",
        dest="headers",
        type=_header,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gRPC metadata sent with every call (repeatable), e.g. the key of a restricted "
        "protocol: triton-grpc-protocol-<key>=<value>",
    )
    return parent


def _frames_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frames",
        type=_positive_int,
        default=DEFAULT_FRAMES,
        metavar="N",
        help="sequence length N of the served model (default: %(default)s)",
    )


def _retries_option(parser: argparse.ArgumentParser) -> None:
    delays = ", ".join(f"{d:g}" for d in backoff_delays(DEFAULT_RETRIES))
    parser.add_argument(
        "--retries",
        type=_non_negative_int,
        default=DEFAULT_RETRIES,
        metavar="R",
        help="retries of a request that failed with UNAVAILABLE or DEADLINE_EXCEEDED, "
        f"with exponential backoff (default: %(default)s, waiting up to {delays} s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m client``."""
    connection = _connection_options()
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description="Score videos with the deepfake detector served by Triton (gRPC).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    score = commands.add_parser(
        "score",
        parents=[connection],
        help="score videos",
        description="Score videos. Exit 0 when every video was scored, 1 otherwise "
        "(videos skipped from --output count by their recorded outcome).",
    )
    score.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    _frames_option(score)
    score.add_argument("--json", action="store_true", help="print one JSON object per video")
    score.add_argument(
        "--verdict-only",
        action="store_true",
        help="ask for the clip's score alone (verdict_<N>): no per-frame scores "
        "(frame_prob_fake_mean is null), about half the server's work per video on CPU",
    )
    score.add_argument(
        "--all-faces",
        action="store_true",
        help="score every face the server follows (faces_<N>, up to its max_faces): the --json line "
        "gains face_tracks (one object per face), max_prob_fake (is any face fake) and faces_seen; "
        "the other keys keep describing the main face",
    )
    score.add_argument(
        "--original",
        action="store_true",
        help="the original app's answer (original_<N>): its frames, dlib's face detector and tight "
        "crops, the first face dlib returns; slower (about 0.7 s of one core per 1080p frame)",
    )
    score.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="K",
        help="requests in flight at once (default: %(default)s)",
    )
    score.add_argument(
        "--output",
        metavar="FILE",
        help="append one JSON line per finished video to FILE; videos already in FILE "
        "are skipped, so the same command resumes an interrupted batch",
    )
    _retries_option(score)

    health = commands.add_parser(
        "health",
        parents=[connection],
        help="server and model readiness",
        description="Show server liveness, readiness and each model's readiness. "
        "Exit 0 only when the server and every model are ready.",
    )
    health.add_argument("--json", action="store_true", help="print the report as JSON")
    health.add_argument(
        "--frames",
        type=_positive_int,
        nargs="+",
        default=list(DEFAULT_HEALTH_FRAMES),
        metavar="N",
        help="sequence lengths whose models are checked by name when the server restricts "
        "its repository index (default: %(default)s)",
    )

    explain = commands.add_parser(
        "explain",
        parents=[connection],
        help="write face crops and heatmaps of one video",
        description="Write each frame's face crop and its heatmap overlay as PNG files, "
        "plus summary.json. Needs pillow.",
    )
    explain.add_argument("video", metavar="VIDEO", help="video file")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for the files")
    _frames_option(explain)
    _retries_option(explain)
    _web_parser(commands, connection)
    _evaluate_parser(commands, connection)
    add_stream_parser(commands, connection)
    return parser


def _web_parser(commands, connection: argparse.ArgumentParser) -> None:
    # The defaults live in client.web.settings, which is imported only when the command runs
    # (FastAPI is an optional extra); the help states them.
    web = commands.add_parser(
        "web",
        parents=[connection],
        help="serve the web page (upload a video, see the verdict) against this Triton",
        description="Serve the web page and its JSON API, talking to Triton at --url over gRPC. "
        "Needs the web extra: pip install '.[web]'. Binds to 127.0.0.1 unless --host says "
        "otherwise; set DEEPFAKE_WEB_TOKEN (or --token-file) before opening it to a network.",
    )
    web.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1)")
    web.add_argument("--port", type=_non_negative_int, default=None, help="port of the page (default: 8080; 0: any free port)")
    web.add_argument(
        "--frames",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="N",
        help="sequence lengths offered when the server has them ready (default: 10 20 30 40 60 80 100)",
    )
    web.add_argument(
        "--max-upload-mib",
        type=_positive_float,
        default=None,
        metavar="MIB",
        help="largest upload accepted, in MiB (default: 256, the server's max_bytes)",
    )
    web.add_argument(
        "--token-file",
        metavar="F",
        help="file holding the access token callers must send as 'Authorization: Bearer <token>' "
        "(default: the DEEPFAKE_WEB_TOKEN environment variable; none: no access control)",
    )
    web.add_argument(
        "--max-concurrent",
        type=_positive_int,
        default=None,
        metavar="K",
        help="uploads held in memory at once; more get 503 (default: 4)",
    )


def _check_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [
        flag
        for flag, value in (
            ("--root-cert", args.root_cert),
            ("--client-cert", args.client_cert),
            ("--client-key", args.client_key),
        )
        if value is not None
    ]
    if given and not args.ssl:
        parser.error(f"{', '.join(given)} need --ssl")
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key must be given together")


def _make_client(args: argparse.Namespace) -> DeepfakeClient:
    return DeepfakeClient(
        args.url,
        ssl=args.ssl,
        root_certificates=args.root_cert,
        private_key=args.client_key,
        certificate_chain=args.client_cert,
        timeout_s=args.timeout,
        headers=dict(args.headers),
    )


def warn_if_demo(client: DeepfakeClient, err: TextIO) -> None:
    """Prints the demo-checkpoint warning on ``err`` when ``model_info`` says so.

    On stderr, so that ``--json`` lines stay as they are. A server without ``model_info`` (or
    one that cannot be asked now) gets no warning: the request that follows reports the trouble.
    """
    try:
        info = client.model_info()
    except ClientError:
        return
    warning = demo_warning(info)
    if warning is not None:
        print(warning, file=err)


def format_result_line(record: dict, frames: int) -> str:
    """The human-readable line of a scored video's JSON record."""
    frame_mean = record["frame_prob_fake_mean"]
    return (
        f"{record['video']}: prob_fake {record['prob_fake']:.4f}  "
        + ("" if frame_mean is None else f"frame mean {frame_mean:.4f}  ")
        + f"{record['label']} {record['confidence']:.1f}%  "
        f"faces {record['faces_found']}/{frames}  "
        f"frames decoded {record['frames_decoded']}  "
        f"{record['latency_ms']:.0f} ms"
        + ("" if record.get("face_tracks") is None else
           f"\n  any face fake {record['max_prob_fake']:.4f}  faces scored {len(record['face_tracks'])} "
           f"of {record['faces_seen']} seen: "
           + ", ".join(f"#{i + 1} {track['prob_fake']:.4f}" for i, track in enumerate(record["face_tracks"])))
    )


def _print_outcome(console: Console, outcome: Outcome, args: argparse.Namespace) -> None:
    if args.json:
        console.result(json.dumps(outcome.record))
    elif outcome.ok:
        console.result(format_result_line(outcome.record, args.frames))
    else:
        console.note(f"{outcome.video}: error {outcome.status}: {outcome.record['error']}")


@dataclass
class _BatchTally:
    """Counts of one ``score`` run."""

    planned: int
    finished: int = 0
    failed: int = 0
    unrecorded: int = 0
    server_gone: bool = False

    @property
    def not_attempted(self) -> int:
        return self.planned - self.finished


def _run_score_batch(
    client: DeepfakeClient,
    todo: list[str],
    args: argparse.Namespace,
    console: Console,
    results: ResultsFile | None,
) -> _BatchTally:
    tally = _BatchTally(planned=len(todo))

    def on_retry(video: str, error: ClientError, attempt: int, wait_s: float) -> None:
        console.note(
            f"{video}: {error.status}: {error.message}; retry {attempt}/{args.retries} "
            f"in {wait_s:.1f} s"
        )

    console.draw()
    for outcome in run_batch(
        lambda video: client.score(video, args.frames, frame_scores=not args.verdict_only, all_faces=args.all_faces,
                                   original=args.original),
        todo,
        concurrency=args.concurrency,
        delays=backoff_delays(args.retries),
        rng=random.Random(),
        on_retry=on_retry,
    ):
        if args.all_faces:
            # A refused video's line has the --all-faces keys too, null.
            outcome.record.update({key: None for key in ALL_FACES_JSON_KEYS if key not in outcome.record})
        if results is not None and outcome.final:
            # The file's lines also name the model, so that a resumed run cannot mix two modes.
            results.append({**outcome.record, MODEL_KEY: score_model(args)})
        tally.finished += 1
        tally.failed += not outcome.ok
        tally.unrecorded += not outcome.final
        _print_outcome(console, outcome, args)
        console.advance(failed=not outcome.ok)
        if outcome.server_gone:
            # Every further video would wait through the same retries.
            tally.server_gone = True
            break
    return tally


def _summarise(console: Console, tally: _BatchTally, args: argparse.Namespace) -> None:
    if tally.server_gone and tally.not_attempted:
        console.note(
            f"stopped: the server at {args.url} stayed unreachable through {args.retries} "
            f"retries; {tally.not_attempted} video(s) not attempted"
        )
    if tally.planned == 0:
        console.note("nothing left to score")
    elif tally.planned >= PROGRESS_MIN_VIDEOS:
        summary = f"scored {tally.finished - tally.failed} of {tally.planned} video(s)"
        if tally.failed:
            summary += f", {tally.failed} failed"
        missing = tally.unrecorded + tally.not_attempted
        if args.output is not None and missing:
            summary += f"; {missing} not in {args.output}, rerun the same command to score them"
        console.note(summary)


def score_model(args: argparse.Namespace) -> str:
    """The model a ``score`` run asks, by its options (see :func:`client.api.score_request`)."""
    template, _, _ = score_request(not args.verdict_only, args.all_faces, args.original)
    return template.format(frames=args.frames)


def check_results_model(done: dict[str, dict], model: str) -> None:
    """Refuses to resume a results file written for another model (another mode or length).

    Raises:
        ValueError: a line was scored by another model, or names none (the message says which).
    """
    others = other_models(done, model)
    if others:
        written = f"by {others[0]}" if others[0] is not None else "without the model's name"
        raise ValueError(f"lines of it were written {written}, this run asks {model}; "
                         "resume with the same options (--frames, --original, --all-faces, --verdict-only) "
                         "or write to another file")


def _score_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    if args.all_faces and args.verdict_only:
        parser.error("--all-faces scores every frame of every face; it cannot be combined with --verdict-only")
    if args.original and (args.all_faces or args.verdict_only):
        parser.error("--original gives the original app's answer (its first face, every frame scored); "
                     "it cannot be combined with --all-faces or --verdict-only")
    videos = unique_videos(args.videos)
    done: dict[str, dict] = {}
    results = None
    if args.output is not None:
        try:
            done = read_results(args.output)
            check_results_model(done, score_model(args))
            results = ResultsFile(args.output)
        except (OSError, ValueError) as error:
            print(f"error: cannot use --output {args.output}: {error}", file=err)
            return EXIT_USAGE
    todo = [video for video in videos if video_key(video) not in done]
    skipped = [done[video_key(video)] for video in videos if video_key(video) in done]
    earlier_failures = sum(record.get("error") is not None for record in skipped)
    try:
        client = _make_client(args)
    except ValueError as error:
        if results is not None:
            results.close()
        parser.error(str(error))

    show_bar = len(todo) >= PROGRESS_MIN_VIDEOS and err.isatty()
    console = Console(out, err, total=len(todo), show_bar=show_bar)
    if results is not None and results.cut_bytes:
        console.note(
            f"removed an incomplete last line ({results.cut_bytes} bytes) from {args.output}"
        )
    if skipped:
        console.note(
            f"skipping {len(skipped)} video(s) already in {args.output}"
            + (f" ({earlier_failures} recorded as failed)" if earlier_failures else "")
        )
    try:
        with client:
            if todo:
                warn_if_demo(client, err)
            tally = _run_score_batch(client, todo, args, console, results)
    except KeyboardInterrupt:
        console.close()
        console.note("interrupted; rerun the same command to score the remaining videos")
        return EXIT_INTERRUPTED
    finally:
        console.close()
        if results is not None:
            results.close()
    _summarise(console, tally, args)
    all_scored = tally.not_attempted == 0 and tally.failed == 0 and earlier_failures == 0
    return EXIT_OK if all_scored else EXIT_FAILED


def format_health(report: dict) -> list[str]:
    """Human-readable lines of a health report."""
    yes_no = {True: "yes", False: "no"}
    lines = [
        f"server {report['url']}: live {yes_no[report['live']]}, ready {yes_no[report['ready']]}"
    ]
    if report["error"] is not None:
        lines.append(f"  unreachable: {report['error']}")
    elif report["models_from"] == "names":
        lines.append("  (repository index restricted: models checked by name)")
    for name in sorted(report["models"]):
        model = report["models"][name]
        states = ", ".join(
            f"v{version} {state}" if version else state or "UNKNOWN"
            for version, state in sorted(model["versions"].items())
        )
        line = f"  {name:<24} {'ready' if model['ready'] else 'NOT READY':<10} {states}"
        if model["reason"]:
            line += f" ({model['reason']})"
        lines.append(line.rstrip())
    if report["error"] is None and not report["models"]:
        lines.append("  no models found")
    return lines


def all_ready(report: dict) -> bool:
    """True when the server is live and ready and every model is ready."""
    return (
        report["live"]
        and report["ready"]
        and bool(report["models"])
        and all(model["ready"] for model in report["models"].values())
    )


def _health_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    try:
        client = _make_client(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        with client:
            report = client.health(args.frames)
    except ClientError as error:
        print(f"error: {error.status}: {error.message}", file=err)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(report), file=out)
    else:
        print("\n".join(format_health(report)), file=out)
    return EXIT_OK if all_ready(report) else EXIT_FAILED


def _explain_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    try:
        require_pillow()
    except PillowMissingError as error:
        print(f"error: {error}", file=err)
        return EXIT_USAGE
    try:
        client = _make_client(args)
    except ValueError as error:
        parser.error(str(error))

    def on_retry(error: ClientError, attempt: int, wait_s: float) -> None:
        print(
            f"{args.video}: {error.status}: {error.message}; retry {attempt}/{args.retries} "
            f"in {wait_s:.1f} s",
            file=err,
        )

    try:
        with client:
            warn_if_demo(client, err)
            result = call_with_retries(
                lambda: client.explain(args.video, args.frames),
                backoff_delays(args.retries),
                rng=random.Random(),
                on_retry=on_retry,
            )
    except ClientError as error:
        print(f"{args.video}: error {error.status}: {error.message}", file=err)
        return EXIT_FAILED
    model = EXPLAIN_MODEL_TEMPLATE.format(frames=args.frames)
    try:
        write_explanation(result, args.out, model)
    except OSError as error:
        print(f"error: cannot write to '{args.out}': {error}", file=err)
        return EXIT_FAILED
    frames = len(result.frame_prob_fake)
    print(
        f"{result.video}: {result.label} {result.confidence:.1f}% "
        f"(prob_fake {result.prob_fake:.4f}, frame mean {result.frame_prob_fake_mean:.4f}); "
        f"wrote {2 * frames} PNG files and summary.json to {args.out}",
        file=out,
    )
    return EXIT_OK


def _web_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    try:
        from .web.server import run_from_args
    except ImportError as error:
        print(f"error: the web page needs the web extra ({error}); install it with "
              "pip install '.[web]'", file=err)
        return EXIT_USAGE
    return run_from_args(parser, args, out, err)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got '{text}'") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction strictly between 0 and 1, got {text}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a score between 0 and 1, got '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a score between 0 and 1, got {text}")
    return value


def _evaluate_parser(commands, connection: argparse.ArgumentParser) -> None:
    # The layouts are named here; client.evaluate and its scikit-learn/matplotlib report are
    # imported only when the command runs.
    evaluate = commands.add_parser(
        "evaluate",
        parents=[connection],
        help="score a labelled set of videos and report AUC, log-loss, accuracy, EER per group",
        description="Score a labelled set through the server and write report.md, report.json, "
        "scores.jsonl and PNG plots into --out. DATASET is a folder (real/ + fake/, FaceForensics++, "
        "a DFDC part with metadata.json, Celeb-DF) or a list file (CSV path,label[,group] with "
        "1/fake or 0/real; DFDC metadata.json; Celeb-DF List_of_testing_videos.txt, where 1 means "
        "real). Running the same command again continues an interrupted run. Needs the eval "
        "extra: pip install '.[eval]'. Exit 0 when every video was scored or refused, 1 when some "
        "are left for a rerun, 2 on bad arguments, an unreadable set or a results file of "
        "another model.",
    )
    evaluate.add_argument("dataset", metavar="DATASET", help="the labelled set: a folder or a list file")
    evaluate.add_argument("--out", required=True, metavar="DIR", help="folder of the report and of scores.jsonl")
    evaluate.add_argument(
        "--layout",
        choices=("auto", "folders", "csv", "dfdc", "ffpp", "celebdf"),
        default="auto",
        help="how DATASET is laid out (default: %(default)s, from its files)",
    )
    evaluate.add_argument(
        "--compression",
        metavar="C",
        help="FaceForensics++: the compression folder to read (c23, c40, raw) when there are several",
    )
    evaluate.add_argument(
        "--split",
        metavar="FILE",
        help="FaceForensics++: keep only the videos of an official split file (splits/test.json "
        "of the FaceForensics repository: 140 originals and 140 fakes per method)",
    )
    _frames_option(evaluate)
    evaluate.add_argument(
        "--all-faces",
        action="store_true",
        help="score every face (faces_<N>): adds the mean-of-per-frame-max-over-faces aggregation",
    )
    evaluate.add_argument(
        "--threshold",
        type=_probability,
        default=0.5,
        metavar="T",
        help="a score at or above T counts as FAKE (default: %(default)s, the original app's rule)",
    )
    evaluate.add_argument(
        "--val-fraction",
        type=_fraction,
        default=None,
        metavar="F",
        help="choose each threshold on a seeded share F of the videos (best balanced accuracy) "
        "and report the metrics of the rest (default: use --threshold on every video)",
    )
    evaluate.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="seed of the validation split (default: %(default)s)")
    evaluate.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="K",
        help="requests in flight at once (default: %(default)s)",
    )
    _retries_option(evaluate)


def _evaluate_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    from .evaluate.command import run_evaluate

    def client_factory() -> DeepfakeClient:
        try:
            return _make_client(args)
        except ValueError as error:
            parser.error(str(error))

    return run_evaluate(client_factory, args, out, err)


_COMMANDS = {"score": _score_command, "health": _health_command, "explain": _explain_command, "web": _web_command, "evaluate": _evaluate_command,
             "stream": stream_command}


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Runs the command line; returns the exit status.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        out: stream for results (default: stdout).
        err: stream for notes, errors and the progress bar (default: stderr).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_tls(parser, args)
    try:
        return _COMMANDS[args.command](parser, args, out, err)
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED
