"""The session's server (``triton_server``) over the project's real model repository.

Every model folder is served, and the watchdog brings a real model back after its python stub
is killed: the heaviest stubs to start (torch and MTCNN in ``preprocess_<N>``, ONNX Runtime in
``resnext_lstm_<N>``) bound the time to recover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from serve.distribution import STUB_NAME
from tests.media import face_clip

pytestmark = pytest.mark.integration

FRAMES = 10
FACE_SHAPE = (3, 112, 112)
# The contract: service is restored well under a minute.
RECOVERY_BOUND_S = 60.0
POLL_S = 0.25
REQUEST_TIMEOUT_S = 120.0


def model_folders(repository: Path) -> set[str]:
    return {path.name for path in repository.iterdir() if path.is_dir() and not path.name.startswith(".")}


def stub_of(server_pid: int, model: str) -> int:
    """The pid of one of ``model``'s python stubs among the tritonserver's children, as ``ps`` sees them."""
    listing = subprocess.run(
        ["ps", "-ww", "-o", "pid=,stat=,args=", "--ppid", str(server_pid)], capture_output=True, text=True, check=False
    ).stdout
    for line in sorted(listing.splitlines()):
        pid, state, *argv = line.split()
        # A zombie (a stub that died and is not reaped yet) is no longer running.
        if (
            not state.startswith("Z")
            and len(argv) > 1
            and Path(argv[0]).name == STUB_NAME
            and Path(argv[1]).parent.parent.name == model
        ):
            return int(pid)
    raise LookupError(f"no python stub of '{model}' among the children of {server_pid}")


def request_preprocess(client: grpcclient.InferenceServerClient, video: bytes) -> None:
    tensor = grpcclient.InferInput("VIDEO", [1, len(video)], "UINT8")
    tensor.set_data_from_numpy(np.frombuffer(video, dtype=np.uint8)[np.newaxis, :])
    result = client.infer(f"preprocess_{FRAMES}", [tensor], client_timeout=REQUEST_TIMEOUT_S)
    assert result.as_numpy("FACES").shape == (1, FRAMES, *FACE_SHAPE)


def request_classifier(client: grpcclient.InferenceServerClient, video: bytes) -> None:
    tensor = grpcclient.InferInput("FACES", [1, FRAMES, *FACE_SHAPE], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, FRAMES, *FACE_SHAPE), dtype=np.float32))
    result = client.infer(f"resnext_lstm_{FRAMES}", [tensor], client_timeout=REQUEST_TIMEOUT_S)
    assert result.as_numpy("LOGITS").shape == (1, 2)


REQUESTS = {f"preprocess_{FRAMES}": request_preprocess, f"resnext_lstm_{FRAMES}": request_classifier}


def test_every_model_folder_is_served(triton_server):
    served = set(triton_server.models)

    assert served == model_folders(triton_server.repository)
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        assert client.is_server_ready()
        not_ready = sorted(name for name in served if not client.is_model_ready(name))
    assert not_ready == []


@pytest.mark.parametrize("model", sorted(REQUESTS))
def test_watchdog_brings_a_real_model_back_after_its_stub_is_killed(triton_server, model, capsys):
    """No request reaches the dead stub here: an instance that was sent one never finishes
    unloading, which would make every later restart of the shared server wait its exit timeout."""
    video = face_clip(frames=FRAMES + 2)
    request = REQUESTS[model]
    server_pid = triton_server.pid
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        request(client, video)
        victim = stub_of(server_pid, model)

        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        recovery = None
        while recovery is None and time.monotonic() - killed_at < RECOVERY_BOUND_S:
            time.sleep(POLL_S)
            recovery = next(
                (item for item in triton_server.recoveries if item.model == model and item.detected_at >= killed_at),
                None,
            )
        if recovery is None:
            pytest.fail(f"the watchdog did not bring '{model}' back within {RECOVERY_BOUND_S} s")
        seconds = recovery.recovered_at - killed_at
        request(client, video)

    assert triton_server.pid == server_pid, "the model, not the server, should have been restarted"
    assert stub_of(server_pid, model) != victim
    with capsys.disabled():
        print(
            f"\n[serve] killed the stub of {model}: ready again after {seconds:.2f} s "
            f"(watchdog reload: {recovery.seconds:.2f} s)"
        )
    assert seconds < RECOVERY_BOUND_S
