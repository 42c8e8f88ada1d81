"""`make demo`: start the embedded server, score sample videos with the client, stop.

Scores a short clip made here from a real face photo shipped inside scikit-image
(``skimage.data.astronaut()``) and, when present, the real 1080p sample in ../shared/data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from client.cli import main as client_main  # noqa: E402
from deploy.sample_video import write_clip  # noqa: E402
from serve import EmbeddedServer, ServeError, free_ports  # noqa: E402

SHARED_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "people_walking_1080p.mp4"
CLIP_FRAMES = 40


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--frames", type=int, default=20, help="sequence length to score with")
    parser.add_argument(
        "--workdir", type=Path, default=PROJECT_ROOT / "logs" / "demo", help="where the clip and server log go"
    )
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    clip = args.workdir / "astronaut.mp4"
    write_clip(clip, CLIP_FRAMES)
    videos = [str(clip)]
    if SHARED_SAMPLE.is_file():
        videos.append(str(SHARED_SAMPLE))
    else:
        print(f"(the 1080p sample {SHARED_SAMPLE} is not here; scoring the generated clip only)")

    grpc_port, http_port, metrics_port = free_ports(3)
    server = EmbeddedServer(
        args.model_repository,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        log_path=args.workdir / "tritonserver.log",
    )
    print(
        f"starting tritonserver on {args.model_repository} (log: {args.workdir / 'tritonserver.log'}) ...", flush=True
    )
    try:
        server.start()
    except ServeError as error:
        print(f"the server did not start: {error}", file=sys.stderr)
        return 1
    try:
        print(
            f"ready on grpc {server.grpc_url}; scoring with `python -m client score --frames {args.frames}`:",
            flush=True,
        )
        status = client_main(
            ["score", *videos, "--frames", str(args.frames), "--url", server.grpc_url, "--timeout", "600"]
        )
    finally:
        server.stop()
        print("server stopped")
    print(
        "\nTo see it in a browser: `make web` starts the server and the web page, then open "
        "http://127.0.0.1:8080/ and drop a video on it (Ctrl-C stops both). Against a server already "
        "running: `python -m client web --url HOST:PORT`."
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
