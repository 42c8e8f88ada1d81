"""Labelled video sets in the layouts people have, read into one list.

Every parser returns :class:`LabelledVideo` items with ``truth`` 1 for a fake and 0 for a real
video (the convention of ``prob_fake``), whatever digits or words the layout itself uses:

========================  ===========================================================================
layout                    what is read
========================  ===========================================================================
``folders``               ``real/`` and ``fake/`` subfolders (searched recursively); a video in a
                          subfolder of either belongs to the group named after it
                          (``fake/faceswap/a.mp4``: group ``faceswap``), else to ``real``/``fake``
``csv``                   ``path,label[,group[,source]]`` rows; label ``1``/``fake`` or
                          ``0``/``real``; an optional header row; paths relative to the CSV's folder
``dfdc``                  the DFDC ``metadata.json``: ``{"name.mp4": {"label": "FAKE"|"REAL", ...}}``,
                          one per folder (a folder of ``dfdc_train_part_*`` folders works too);
                          group: the folder of the file
``ffpp``                  FaceForensics++: ``original_sequences/<source>/<compression>/videos`` are
                          real (group ``original``, or ``actors`` for the DeepFakeDetection
                          originals), ``manipulated_sequences/<method>/<compression>/videos`` fake,
                          one group per method; an official split file (``splits/test.json``)
                          keeps only its videos
``celebdf``               Celeb-DF's ``List_of_testing_videos.txt``: ``<digit> <path>`` lines where
                          **1 means real and 0 means fake** (the opposite of ``truth``); group: the
                          top folder (``Celeb-real``, ``YouTube-real``, ``Celeb-synthesis``)
========================  ===========================================================================

Every video also has a ``source``: what ties videos that must stay on the same side of a
train/test split (``python -m train``). It is one or more keys joined by ``+``; two videos sharing a
key are connected, and whatever is connected stays together:

========================  ===========================================================================
layout                    source
========================  ===========================================================================
``folders``               the file's own path (every video stands alone)
``csv``                   the optional 4th column (``+`` joins several keys); else the video's path
``dfdc``                  a fake's ``original`` (its original's file name); a real's own file name
``ffpp``                  the identities in the name: original ``000.mp4`` is ``000``, a fake
                          ``000_003.mp4`` (target 000, face of 003) is ``000+003``; the
                          DeepFakeDetection actors' ``01__scene.mp4`` and ``01_02__scene__id.mp4``
                          are ``actors/01`` and ``actors/01+actors/02``
``celebdf``               the identities: ``id0_0000.mp4`` is ``id0``, a fake ``id0_id1_0000.mp4``
                          ``id0+id1``; other names (YouTube-real) their own path
========================  ===========================================================================

Nothing here needs more than the standard library.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FAKE = 1
REAL = 0

LAYOUTS = ("folders", "csv", "dfdc", "ffpp", "celebdf")
AUTO = "auto"

#: Files a ``folders`` or FaceForensics++ tree may hold that the server accepts.
MEDIA_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".jpg", ".jpeg", ".png"})

REAL_FOLDER = "real"
FAKE_FOLDER = "fake"

DFDC_METADATA = "metadata.json"
DFDC_LABELS = {"FAKE": FAKE, "REAL": REAL}

CELEBDF_LIST = "List_of_testing_videos.txt"
#: Celeb-DF's list marks a real video with 1 and a fake one with 0.
CELEBDF_DIGITS = {"1": REAL, "0": FAKE}
#: Folders of the Celeb-DF release whose videos are all real or all fake: a list whose digit
#: contradicts its path's folder was written with the other convention, and is refused.
CELEBDF_FOLDERS = {"Celeb-real": REAL, "YouTube-real": REAL, "Celeb-synthesis": FAKE}

FFPP_ORIGINAL = "original_sequences"
FFPP_MANIPULATED = "manipulated_sequences"
FFPP_VIDEOS = "videos"
#: Compression folders of the FaceForensics++ download (``raw``/``c0``, ``c23``, ``c40``); the
#: ``masks`` folder beside them holds masks, not videos.
FFPP_COMPRESSION = re.compile(r"raw|c\d+")
FFPP_REAL_GROUPS = {"youtube": "original", "actors": "actors"}

#: Joins the keys of a video's ``source`` (a FaceForensics++ fake has two identities).
SOURCE_SEPARATOR = "+"
#: FaceForensics++ names: an original ``000``, a fake ``000_003`` (target, then the face's source); the
#: DeepFakeDetection actors ``01__walking`` and ``01_02__walking__ABCD1234``.
FFPP_YOUTUBE_NAME = re.compile(r"(?P<target>\d+)(?:_(?P<source>\d+))?")
FFPP_ACTORS_NAME = re.compile(r"(?P<target>\d+)(?:_(?P<source>\d+))?__.+")
FFPP_ACTORS_KEY = "actors/"
#: Celeb-DF names: a real ``id0_0000``, a fake ``id0_id1_0000`` (id0's video with id1's face).
CELEBDF_NAME = re.compile(r"(?P<target>id\d+)_(?:(?P<source>id\d+)_)?\d+")

CSV_LABELS = {"1": FAKE, "fake": FAKE, "0": REAL, "real": REAL}
CSV_PATH_HEADERS = frozenset({"path", "video", "file", "filename", "name"})


class LayoutError(ValueError):
    """A labelled set that cannot be read: the message names the file and the line."""


@dataclass(frozen=True)
class LabelledVideo:
    """One video of a labelled set.

    Attributes:
        path: the file (joined to the set's folder; may not exist, the server then refuses it).
        truth: 1 fake, 0 real.
        group: the group it is reported in.
        source: what ties it to other videos that must stay on its side of a split: keys joined by
            ``+`` (see the module's table); empty: the video's own path.
    """

    path: str
    truth: int
    group: str
    source: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", self.path)

    @property
    def source_keys(self) -> tuple[str, ...]:
        """The keys of ``source``: two videos sharing one are connected."""
        keys = tuple(key.strip() for key in self.source.split(SOURCE_SEPARATOR) if key.strip())
        return keys or (self.path,)


def detect_layout(source: str | os.PathLike) -> str:
    """The layout of ``source`` (a file or a folder), or LayoutError naming what was looked for."""
    path = Path(source)
    if path.is_file():
        if path.name == CELEBDF_LIST or path.suffix.lower() == ".txt":
            return "celebdf"
        if path.suffix.lower() == ".json":
            return "dfdc"
        if path.suffix.lower() == ".csv":
            return "csv"
        raise LayoutError(f"{path}: not a .csv, .json or .txt file; give --layout")
    if not path.is_dir():
        raise LayoutError(f"{path}: no such file or folder")
    if (path / FFPP_ORIGINAL).is_dir() or (path / FFPP_MANIPULATED).is_dir():
        return "ffpp"
    if (path / REAL_FOLDER).is_dir() or (path / FAKE_FOLDER).is_dir():
        return "folders"
    if (path / CELEBDF_LIST).is_file():
        return "celebdf"
    if (path / DFDC_METADATA).is_file() or any(path.glob(f"*/{DFDC_METADATA}")):
        return "dfdc"
    raise LayoutError(
        f"{path}: found none of real/ + fake/, {FFPP_ORIGINAL}/ + {FFPP_MANIPULATED}/, "
        f"{CELEBDF_LIST}, {DFDC_METADATA}; give a CSV file or --layout"
    )


def read_layout(
    source: str | os.PathLike,
    layout: str = AUTO,
    *,
    compression: str | None = None,
    split: str | os.PathLike | None = None,
) -> list[LabelledVideo]:
    """The videos of a labelled set, sorted by path, each once.

    Args:
        source: the set's folder or its list file.
        layout: one of :data:`LAYOUTS`, or ``"auto"`` (:func:`detect_layout`).
        compression: FaceForensics++ only: which compression folder (``c23``...) to read when
            the tree holds several.
        split: FaceForensics++ only: an official split file (``splits/test.json``) whose
            videos alone are kept.

    Raises:
        LayoutError: the set cannot be read, has no video, or lists a video twice with
            different labels.
    """
    layout = detect_layout(source) if layout == AUTO else layout
    readers = {
        "folders": read_folders,
        "csv": read_csv,
        "dfdc": read_dfdc,
        "ffpp": lambda s: read_ffpp(s, compression=compression, split=split),
        "celebdf": read_celebdf,
    }
    if layout not in readers:
        raise LayoutError(f"unknown layout '{layout}'; expected one of {', '.join(LAYOUTS)}")
    if (compression is not None or split is not None) and layout != "ffpp":
        raise LayoutError("--compression and --split apply to the FaceForensics++ layout only")
    videos = _unique(readers[layout](source))
    if not videos:
        raise LayoutError(f"{source}: no video found ({layout} layout)")
    return videos


def _unique(videos: Iterable[LabelledVideo]) -> list[LabelledVideo]:
    by_key: dict[str, LabelledVideo] = {}
    for video in videos:
        key = os.path.normpath(video.path)
        earlier = by_key.setdefault(key, video)
        if earlier.truth != video.truth:
            raise LayoutError(f"{video.path} is listed as both real and fake")
    return sorted(by_key.values(), key=lambda video: video.path)


def _media_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES)


def read_folders(source: str | os.PathLike) -> list[LabelledVideo]:
    """``real/`` and ``fake/`` subfolders; a further subfolder names the group."""
    root = Path(source)
    if not (root / REAL_FOLDER).is_dir() and not (root / FAKE_FOLDER).is_dir():
        raise LayoutError(f"{root}: has neither a {REAL_FOLDER}/ nor a {FAKE_FOLDER}/ folder")
    videos = []
    for folder, truth in ((REAL_FOLDER, REAL), (FAKE_FOLDER, FAKE)):
        base = root / folder
        if not base.is_dir():
            continue
        for path in _media_files(base):
            relative = path.relative_to(base)
            group = relative.parts[0] if len(relative.parts) > 1 else folder
            videos.append(LabelledVideo(str(path), truth, group))
    return videos


def _csv_label(text: str, where: str) -> int:
    label = CSV_LABELS.get(text.strip().lower())
    if label is None:
        raise LayoutError(f"{where}: label '{text}' is none of 1/fake (fake), 0/real (real)")
    return label


def read_csv(source: str | os.PathLike) -> list[LabelledVideo]:
    """``path,label[,group[,source]]`` rows (1/fake, 0/real); the default group is ``real``/``fake``,
    the default source the video's path."""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise LayoutError(f"{path}: cannot read ({error})") from None
    videos = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in CSV_PATH_HEADERS:
            continue
        where = f"{path}: line {number}"
        if len(cells) not in (2, 3, 4) or not cells[0]:
            raise LayoutError(f"{where}: expected path,label[,group[,source]], got {len(cells)} field(s)")
        truth = _csv_label(cells[1], where)
        group = cells[2] if len(cells) >= 3 and cells[2] else (FAKE_FOLDER if truth else REAL_FOLDER)
        source = cells[3] if len(cells) == 4 else ""
        videos.append(LabelledVideo(str(path.parent / cells[0]), truth, group, source))
    return videos


def _dfdc_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    files = [source / DFDC_METADATA] if (source / DFDC_METADATA).is_file() else []
    return files + sorted(source.glob(f"*/{DFDC_METADATA}"))


def read_dfdc(source: str | os.PathLike) -> list[LabelledVideo]:
    """DFDC ``metadata.json`` files: ``{"x.mp4": {"label": "FAKE"|"REAL", "original": "y.mp4", ...}}``.

    A fake's source is its ``original`` (the real video it was made from), a real's its own name.
    """
    files = _dfdc_files(Path(source))
    if not files:
        raise LayoutError(f"{source}: no {DFDC_METADATA}")
    videos = []
    for file in files:
        try:
            metadata = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise LayoutError(f"{file}: cannot read ({error})") from None
        if not isinstance(metadata, dict):
            raise LayoutError(f"{file}: expected an object of videos, got {type(metadata).__name__}")
        group = file.parent.name or "dfdc"
        for name, entry in metadata.items():
            label = entry.get("label") if isinstance(entry, dict) else None
            if label not in DFDC_LABELS:
                raise LayoutError(f"{file}: '{name}' has label {label!r}, expected FAKE or REAL")
            original = entry.get("original") if label == "FAKE" else None
            source = original if isinstance(original, str) and original else name
            videos.append(LabelledVideo(str(file.parent / name), DFDC_LABELS[label], group, source))
    return videos


def _ffpp_video_folders(root: Path, top: str) -> list[tuple[str, str, Path]]:
    """``(name, compression, folder)`` of every ``top/<name>/<compression>/videos`` folder."""
    found = []
    for named in sorted((root / top).glob(f"*/*/{FFPP_VIDEOS}")):
        compression, name = named.parent.name, named.parent.parent.name
        if named.is_dir() and FFPP_COMPRESSION.fullmatch(compression):
            found.append((name, compression, named))
    return found


def read_ffpp_split(path: str | os.PathLike) -> set[tuple[str, str]]:
    """The ``[target, source]`` pairs of a FaceForensics++ split file (``splits/test.json``)."""
    try:
        pairs = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LayoutError(f"{path}: cannot read ({error})") from None
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(item, str) for item in pair) for pair in pairs
    ):
        raise LayoutError(f"{path}: expected a list of [target, source] pairs of video numbers")
    return {(pair[0], pair[1]) for pair in pairs}


def _in_ffpp_split(path: Path, truth: int, pairs: set[tuple[str, str]]) -> bool:
    """An original ``NNN`` is in the split when a pair names it; a fake ``TTT_SSS`` when its pair is one."""
    if truth == REAL:
        return any(path.stem in pair for pair in pairs)
    target, _, source = path.stem.partition("_")
    return (target, source) in pairs or (source, target) in pairs


def ffpp_source(path: str | os.PathLike) -> str:
    """The identities a FaceForensics++ video shows, as a source (``000``, ``000+003``, ``actors/01+actors/02``).

    A name that follows neither pattern is its own source.
    """
    stem = Path(path).stem
    for pattern, prefix in ((FFPP_YOUTUBE_NAME, ""), (FFPP_ACTORS_NAME, FFPP_ACTORS_KEY)):
        match = pattern.fullmatch(stem)
        if match is not None:
            return SOURCE_SEPARATOR.join(prefix + key for key in (match["target"], match["source"]) if key)
    return str(path)


def read_ffpp(
    source: str | os.PathLike, *, compression: str | None = None, split: str | os.PathLike | None = None
) -> list[LabelledVideo]:
    """FaceForensics++: originals real, each manipulation method a group of fakes.

    With ``split``, only the videos of that official split: the originals it names and the fakes
    made from its pairs (``000_003.mp4`` from the pair ``["000", "003"]``, either order), which
    leaves out the DeepFakeDetection videos, named otherwise.
    """
    pairs = None if split is None else read_ffpp_split(split)
    root = Path(source)
    originals = _ffpp_video_folders(root, FFPP_ORIGINAL)
    manipulated = _ffpp_video_folders(root, FFPP_MANIPULATED)
    levels = sorted({level for _, level, _ in originals + manipulated})
    if not levels:
        raise LayoutError(
            f"{root}: no {FFPP_ORIGINAL}/<source>/<compression>/{FFPP_VIDEOS} or "
            f"{FFPP_MANIPULATED}/<method>/<compression>/{FFPP_VIDEOS} folder"
        )
    if compression is None:
        if len(levels) > 1:
            raise LayoutError(f"{root}: holds compressions {', '.join(levels)}; choose one with --compression")
        compression = levels[0]
    elif compression not in levels:
        raise LayoutError(f"{root}: no '{compression}' folders (found {', '.join(levels)})")
    videos = []
    for folders, truth in ((originals, REAL), (manipulated, FAKE)):
        for name, level, folder in folders:
            if level != compression:
                continue
            group = FFPP_REAL_GROUPS.get(name, f"original_{name}") if truth == REAL else name
            videos.extend(
                LabelledVideo(str(path), truth, group, ffpp_source(path))
                for path in _media_files(folder)
                if pairs is None or _in_ffpp_split(path, truth, pairs)
            )
    return videos


def celebdf_source(path: str | os.PathLike) -> str:
    """The identities a Celeb-DF video shows (``id0``, ``id0+id1``); other names are their own source."""
    match = CELEBDF_NAME.fullmatch(Path(path).stem)
    if match is None:
        return str(path)
    return SOURCE_SEPARATOR.join(key for key in (match["target"], match["source"]) if key)


def read_celebdf(source: str | os.PathLike) -> list[LabelledVideo]:
    """Celeb-DF's ``List_of_testing_videos.txt`` (1 real, 0 fake), paths relative to its folder."""
    path = Path(source)
    if path.is_dir():
        path = path / CELEBDF_LIST
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LayoutError(f"{path}: cannot read ({error})") from None
    videos = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        digit, _, relative = line.strip().partition(" ")
        relative = relative.strip().replace("\\", "/")
        if digit not in CELEBDF_DIGITS or not relative:
            raise LayoutError(f"{where}: expected '<1 real | 0 fake> <path>', got '{line.strip()}'")
        truth = CELEBDF_DIGITS[digit]
        folder = relative.split("/", 1)[0]
        expected = CELEBDF_FOLDERS.get(folder)
        if expected is not None and expected != truth:
            raise LayoutError(
                f"{where}: '{relative}' is marked {digit}, but in Celeb-DF's list 1 means real and "
                f"0 means fake, and {folder}/ holds {'fake' if expected else 'real'} videos only"
            )
        video_path = str(path.parent / relative)
        videos.append(LabelledVideo(video_path, truth, folder, celebdf_source(video_path)))
    return videos


def group_names(videos: Sequence[LabelledVideo]) -> list[str]:
    """The groups of a set, in order of first appearance."""
    return list(dict.fromkeys(video.group for video in videos))
