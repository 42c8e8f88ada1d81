"""The server-side console commands, ``deepfake-serve``, ``deepfake-export`` and ``deepfake-train``.

``pip install .`` installs the client alone (numpy and tritonclient); these two commands need the
``server`` extra (torch, ONNX, ONNX Runtime, PyAV, the pip tritonserver). Installed without it, they
say which extra to install and exit with the usage status instead of a traceback from deep inside an
import. ``python -m serve`` and ``python -m export`` run the same ``main`` functions.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

from contract import Exit

#: The distribution name, for the install hint.
DISTRIBUTION = "deepfake-triton"
SERVER_EXTRA = "server"
#: Modules each command cannot start without (import names).
SERVE_NEEDS = ("pytriton", "torch", "onnxruntime", "av", "google.protobuf")
EXPORT_NEEDS = ("torch", "torchvision", "onnx", "onnxruntime")
# Training asks the server for crops (tritonclient), makes re-encoded variants (PyAV) and reports
# evaluate's metrics (scikit-learn, the eval extra).
TRAIN_NEEDS = ("torch", "torchvision", "av", "sklearn", "tritonclient.grpc")


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` that cannot be found (without importing any of them)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package of a dotted name is absent
            found = False
        if not found:
            missing.append(name)
    return missing


def _run(command: str, needs: Sequence[str], entry: str, argv: Sequence[str] | None, extras: str = SERVER_EXTRA) -> int:
    missing = missing_modules(needs)
    if missing:
        print(
            f"{command}: this command needs the '{extras}' extra (missing: {', '.join(missing)}); "
            f"install it with: pip install '{DISTRIBUTION}[{extras}]' (from a checkout: "
            f"pip install '.[{extras}]', or `make install`)",
            file=sys.stderr,
        )
        return Exit.USAGE
    module = importlib.import_module(entry)
    return module.main(list(sys.argv[1:] if argv is None else argv))


def serve(argv: Sequence[str] | None = None) -> int:
    """``deepfake-serve``: the embedded CPU Triton server in the foreground (``python -m serve``)."""
    return _run("deepfake-serve", SERVE_NEEDS, "serve.__main__", argv)


def export(argv: Sequence[str] | None = None) -> int:
    """``deepfake-export``: checkpoints to verified ONNX and TensorRT artifacts (``python -m export``)."""
    return _run("deepfake-export", EXPORT_NEEDS, "export.__main__", argv)


def train(argv: Sequence[str] | None = None) -> int:
    """``deepfake-train``: fine-tune the detector on a labelled set (``python -m train``)."""
    return _run("deepfake-train", TRAIN_NEEDS, "train.cli", argv, extras=f"{SERVER_EXTRA},eval")
