"""The tritonserver bundled with nvidia-pytriton: where its files are and how to run it.

The pip wheel ships one python-backend stub per Python version, outside the backend folder.
Triton looks for the stub next to ``libtriton_python.so``, so the server gets a backend folder
of its own that holds the backend library, its Python utilities and the stub built for the
interpreter running this code.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from serve.errors import ServeError, TritonNotFoundError

PYTRITON_PACKAGE = "pytriton"
PYTRITON_PIN = "nvidia-pytriton==0.7.0"
BACKEND_NAME = "python"
BACKEND_LIBRARY = "libtriton_python.so"
BACKEND_UTILS = "triton_python_backend_utils.py"
STUB_NAME = "triton_python_backend_stub"
# Shared libraries of the wheel: next to the package when installed, inside it when editable.
WHEEL_LIBS_DIR = "nvidia_pytriton.libs"
EDITABLE_LIBS_DIR = "external_libs"
BACKEND_DIR_PREFIX = "serve-backends-"

# Where the code of this project lives: model.py files import `preprocessing` from here.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def python_version_tag() -> str:
    """The ``X.Y`` version of the running interpreter, as the stub folders are named."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonDistribution:
    """Files of the tritonserver that nvidia-pytriton installs.

    Attributes:
        binary: the ``tritonserver`` executable.
        python_backend: folder holding ``libtriton_python.so`` and its Python utilities.
        stub: the python-backend stub built for the running interpreter.
        library_dirs: folders of the shared libraries the binary, backend and stub link.
        caches: folder of the response cache implementations (``local/libtritoncache_local.so``).
    """

    binary: Path
    python_backend: Path
    stub: Path
    library_dirs: tuple[Path, ...]
    caches: Path | None = None

    @classmethod
    def locate(cls) -> TritonDistribution:
        """Finds the installed distribution without importing pytriton.

        Raises:
            TritonNotFoundError: nvidia-pytriton is not installed, a file is missing, or it has
                no stub for this Python version.
        """
        spec = importlib.util.find_spec(PYTRITON_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotFoundError(
                f"the '{PYTRITON_PACKAGE}' package is not installed in {sys.prefix}; "
                f"tritonserver comes from {PYTRITON_PIN} (pip install -e '.[server]')"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        server_dir = package_dir / "tritonserver"
        binary = server_dir / "bin" / "tritonserver"
        python_backend = server_dir / "backends" / BACKEND_NAME
        stubs = server_dir / "python_backend_stubs"
        stub = stubs / python_version_tag() / STUB_NAME
        for required in (binary, python_backend / BACKEND_LIBRARY, python_backend / BACKEND_UTILS):
            if not required.is_file():
                raise TritonNotFoundError(f"{required} is missing: reinstall {PYTRITON_PIN}")
        if not stub.is_file():
            available = sorted(path.parent.name for path in stubs.glob(f"*/{STUB_NAME}"))
            raise TritonNotFoundError(
                f"{PYTRITON_PIN} has no python-backend stub for Python {python_version_tag()} "
                f"(it has: {', '.join(available) or 'none'}); run the server with one of those"
            )
        candidates = (package_dir.parent / WHEEL_LIBS_DIR, server_dir / EDITABLE_LIBS_DIR)
        library_dirs = tuple(path for path in candidates if path.is_dir())
        caches = server_dir / "caches"
        return cls(
            binary=binary,
            python_backend=python_backend,
            stub=stub,
            library_dirs=library_dirs,
            caches=caches if (caches / "local").is_dir() else None,
        )

    def build_backend_directory(self, parent: Path | None = None) -> Path:
        """Creates a fresh backend folder (``<new dir>/python/...``) for ``--backend-directory``.

        The files are copied, not linked: the backend library finds the stub by its own folder.

        Args:
            parent: where to create the folder; the system's temporary folder when None.

        Returns:
            The new folder, which the caller removes when the server is gone.
        """
        root = Path(tempfile.mkdtemp(prefix=BACKEND_DIR_PREFIX, dir=parent))
        target = root / BACKEND_NAME
        target.mkdir()
        shutil.copy2(self.python_backend / BACKEND_LIBRARY, target / BACKEND_LIBRARY)
        shutil.copy2(self.python_backend / BACKEND_UTILS, target / BACKEND_UTILS)
        shutil.copy2(self.stub, target / STUB_NAME)
        return root


def _site_packages() -> list[Path]:
    """Import folders of the running environment (a venv's site-packages), in sys.path order."""
    folders = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    return [Path(entry) for entry in sys.path if entry in folders]


def _joined(front: Iterable[Path | str], existing: str | None) -> str:
    """Joins path entries, ours first, keeping what was already set and dropping repeats."""
    entries: list[str] = []
    for entry in [*map(str, front), *(existing.split(os.pathsep) if existing else [])]:
        if entry and entry not in entries:
            entries.append(entry)
    return os.pathsep.join(entries)


#: Chooses the server's memory allocator: "jemalloc" (the default; used when installed) or "system".
ALLOCATOR_VARIABLE = "DEEPFAKE_ALLOCATOR"
ALLOCATORS = ("jemalloc", "system")
#: jemalloc's settings when the environment gives none: back its memory with transparent huge pages
#: (where the kernel allows them), fewer page faults on 6 MB frames and MTCNN's buffers.
JEMALLOC_CONF = "thp:always"
#: Where Debian's and Ubuntu's ``libjemalloc2`` package puts the library.
JEMALLOC_PATHS = tuple(Path(f"/usr/lib/{arch}-linux-gnu/libjemalloc.so.2") for arch in ("x86_64", "aarch64"))


def find_jemalloc() -> Path | None:
    """The installed jemalloc library, or None."""
    return next((path for path in JEMALLOC_PATHS if path.is_file()), None)


def allocator_of(env: Mapping[str, str]) -> str:
    """Which allocator an environment made by :func:`server_environment` gives the server, in words."""
    preloaded = [entry for entry in env.get("LD_PRELOAD", "").split(os.pathsep) if "jemalloc" in Path(entry).name]
    if preloaded:
        settings = f", MALLOC_CONF={env['MALLOC_CONF']}" if env.get("MALLOC_CONF") else ""
        return f"jemalloc ({preloaded[0]}{settings})"
    if env.get(ALLOCATOR_VARIABLE) == "system":
        return f"the system malloc ({ALLOCATOR_VARIABLE}=system)"
    return "the system malloc (libjemalloc2 is not installed: the stubs' memory swings more under load)"


def server_environment(
    distribution: TritonDistribution,
    overrides: Mapping[str, str] | None = None,
    python_path: Sequence[Path] = (),
) -> dict[str, str]:
    """The environment of the tritonserver process.

    The stub embeds the interpreter through ``libpython`` found on ``LD_LIBRARY_PATH`` and
    imports model code through ``PYTHONPATH``: the project root (``import preprocessing``),
    extra folders, then this environment's site-packages (torch, onnxruntime, av, ...).

    Args:
        distribution: the located tritonserver.
        overrides: variables set on top of this process's environment; a ``PYTHONPATH`` or
            ``LD_LIBRARY_PATH`` given here is kept after the entries the server needs.
        python_path: extra import folders, after the project root.

    jemalloc is preloaded when installed, unless ``DEEPFAKE_ALLOCATOR=system`` (in this process's
    environment or ``overrides``) asks for the system malloc; it runs with :data:`JEMALLOC_CONF`
    unless ``MALLOC_CONF`` is already set.

    Raises:
        ServeError: ``DEEPFAKE_ALLOCATOR`` names no known allocator.

    Returns:
        A complete environment for ``subprocess``.
    """
    env = dict(os.environ)
    env.update(overrides or {})
    allocator = env.get(ALLOCATOR_VARIABLE, "jemalloc")
    if allocator not in ALLOCATORS:
        raise ServeError(f"{ALLOCATOR_VARIABLE} must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    jemalloc = find_jemalloc() if allocator == "jemalloc" else None
    if jemalloc is not None:
        # Preloaded into tritonserver and, through the environment, every python stub. Over 200
        # requests at concurrency 2 the server's total stayed within 1.6 % with jemalloc; with
        # glibc's malloc it wandered by up to 6 % and sat 250 MiB higher (README, The embedded server).
        env["LD_PRELOAD"] = _joined([jemalloc], env.get("LD_PRELOAD"))
        # Huge pages: at concurrency 2 on the 1080p sample, 0.977 instead of 0.937 videos/s, with the
        # memory as flat (+1.6 % over 200 requests) at 2150 instead of 1975 MiB.
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    libdir = sysconfig.get_config_var("LIBDIR")
    env["LD_LIBRARY_PATH"] = _joined(
        [*([libdir] if libdir else []), *distribution.library_dirs], env.get("LD_LIBRARY_PATH")
    )
    env["PYTHONPATH"] = _joined([PROJECT_ROOT, *python_path, *_site_packages()], env.get("PYTHONPATH"))
    env["PATH"] = _joined([Path(sys.executable).parent], env.get("PATH"))
    return env
