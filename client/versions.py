"""Classifier versions on the client's side: the value a caller gives, what ``model_info`` says is served.

A request names the classifier version it wants in the optional ``MODEL_VERSION`` input (absent:
the latest served); every answer says which version answered and the sha256 of its checkpoint
(:data:`contract.ANSWER_FACTS`). ``model_info``'s document lists, per section (``classifiers``,
``temporal``) and length, the latest served version's entry and every version's entry under
``versions``; the readers here also take the document of a server that predates versions (one
entry per length, no ``versions``: version 1).

A batch (``score --output``, ``evaluate``) keeps to one version, so that a results file never
mixes two: :func:`batch_version` says which, :class:`VersionKeeper` refuses an answer of another.
numpy and the contract only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from contract import (
    ANSWER_FACT_TENSORS,
    DEFAULT_VERSION,
    MODEL_INFO_SECTIONS,
    MODEL_VERSION_KEY,
    Kind,
    Mode,
    model_name,
)

from .errors import INTERNAL, INVALID_ARGUMENT, NOT_FOUND, ClientError

#: The sections of model_info's document: the classifiers every mode but one calls, the temporal models.
CLASSIFIERS_SECTION = MODEL_INFO_SECTIONS[Kind.CLASSIFIER]
TEMPORAL_SECTION = MODEL_INFO_SECTIONS[Kind.TEMPORAL_CLASSIFIER]
#: Where model_info lists each version's entry, beside the latest one's keys.
VERSIONS_KEY = "versions"
#: The entry's keys this module reads.
VERSION_FIELD = "version"
READY_FIELD = "ready"
#: MODEL_VERSION is an INT64.
MAX_VERSION = np.iinfo(np.int64).max
#: The version of an entry that names none (a server that predates versions serves version 1 alone).
UNNAMED_VERSION = int(DEFAULT_VERSION)
TEMPORAL_NOT_SERVED = (
    "no temporal model is served for {frames} frames: train one with "
    "python -m train SET --frames {frames} --out DIR --head temporal and export it"
)


def check_version(version) -> int | None:
    """``version`` as an int when it is a positive integer, None when None; else ValueError.

    Raises:
        ValueError: not a positive integer (a bool, a float, a string, 0, a negative or one past INT64).
    """
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or not 1 <= version <= MAX_VERSION:
        raise ValueError(f"model version must be a positive integer (a version the server serves), got {version!r}")
    return int(version)


def section_of(mode: Mode) -> str:
    """The section of model_info's document that lists the classifier ``mode`` calls."""
    return TEMPORAL_SECTION if mode is Mode.TEMPORAL else CLASSIFIERS_SECTION


def length_entry(info: Mapping | None, frames: int, mode: Mode = Mode.SCORE) -> Mapping | None:
    """The entry of the ``frames``-frame classifier of ``mode`` (its latest served version's), or None."""
    if not info:
        return None
    section = info.get(section_of(mode))
    entry = section.get(str(frames)) if isinstance(section, Mapping) else None
    return entry if isinstance(entry, Mapping) else None


def version_entries(info: Mapping | None, frames: int, mode: Mode = Mode.SCORE) -> dict[int, Mapping]:
    """Every version model_info lists for the length, ascending: ``{version: entry}`` (empty: none listed)."""
    entry = length_entry(info, frames, mode)
    if entry is None:
        return {}
    listed = entry.get(VERSIONS_KEY)
    if not isinstance(listed, Mapping):
        return {_version_of(entry): entry}
    entries = {}
    for key, value in listed.items():
        if isinstance(value, Mapping) and str(key).isdigit():
            entries[int(key)] = value
    return dict(sorted(entries.items()))


def served_versions(info: Mapping | None, frames: int, mode: Mode = Mode.SCORE) -> list[int]:
    """The versions of the length loaded on the server (an entry without ``ready`` counts as loaded)."""
    return [version for version, entry in version_entries(info, frames, mode).items() if entry.get(READY_FIELD, True)]


def latest_version(info: Mapping | None, frames: int, mode: Mode = Mode.SCORE) -> int | None:
    """The version a request that names none gets: the highest served, or None when model_info lists none."""
    served = served_versions(info, frames, mode)
    return served[-1] if served else None


def version_entry(info: Mapping | None, frames: int, mode: Mode = Mode.SCORE, version: int | None = None):
    """The entry of ``version`` (default: the latest served), or None when model_info does not list it."""
    if version is None:
        version = latest_version(info, frames, mode)
    return version_entries(info, frames, mode).get(version)


def check_served(info: Mapping | None, frames: int, mode: Mode, version: int | None) -> None:
    """Refuses, before any video is sent, what model_info says the server cannot answer.

    Says nothing when model_info does not know (no document, or no entry for a classifier length:
    the request's own NOT_FOUND then names the lengths served).

    Raises:
        ClientError: NOT_FOUND for a temporal model not served for the length; INVALID_ARGUMENT for
            a version not served, naming the versions that are.
    """
    if not info:
        return
    if mode is Mode.TEMPORAL and length_entry(info, frames, mode) is None:
        raise ClientError(NOT_FOUND, TEMPORAL_NOT_SERVED.format(frames=frames))
    if version is None:
        return
    entries = version_entries(info, frames, mode)
    served = served_versions(info, frames, mode)
    if not entries or version in served:
        return
    what = "temporal model" if mode is Mode.TEMPORAL else "classifier"
    state = "is listed but not loaded" if version in entries else "is not served"
    raise ClientError(
        INVALID_ARGUMENT,
        f"version {version} of the {frames}-frame {what} {state}; versions served: "
        + (", ".join(map(str, served)) or "none")
        + (f" (latest {served[-1]})" if served else ""),
    )


def no_longer_served(info: Mapping | None, frames: int, mode: Mode, version: int | None) -> bool:
    """Whether model_info says ``version`` is not served (False when it cannot say, or no version was asked).

    A batch asks this when the server refuses a video while a version was asked for: a version
    unloaded mid-run is refused with INVALID_ARGUMENT like a bad video, but the refusal is not the
    video's, and must not be written as its outcome.
    """
    if version is None or not version_entries(info, frames, mode):
        return False
    return version not in served_versions(info, frames, mode)


def check_answered(model: str, asked: int | None, tensors: Mapping[str, np.ndarray]) -> None:
    """Refuses an answer from another version than the one asked for (a server breaking the contract).

    Args:
        model: the model asked.
        asked: the version asked for (None: any).
        tensors: the answer's tensors (:func:`client.codec.unpack_outputs`).

    Raises:
        ClientError: INTERNAL naming both versions.
    """
    if asked is None:
        return
    answered = int(tensors[ANSWER_FACT_TENSORS[MODEL_VERSION_KEY]][0])
    if answered != asked:
        raise ClientError(INTERNAL, f"'{model}' was asked for classifier version {asked} and answered with {answered}")


def batch_version(
    info: Mapping | None, frames: int, mode: Mode, asked: int | None, records: Mapping[str, Mapping] | None = None
) -> int | None:
    """The version every line of a batch must come from, or None when nothing says it yet.

    The version asked for; else the latest model_info says is served; else the one version the
    results file's scored lines already hold.
    """
    if asked is not None:
        return asked
    latest = latest_version(info, frames, mode)
    if latest is not None:
        return latest
    recorded = recorded_versions(records or {})
    return recorded[0] if len(recorded) == 1 else None


def recorded_versions(records: Mapping[str, Mapping]) -> list:
    """The versions of a results file's scored lines, sorted (None for a line written before answers named one).

    A refused video's line has no version: the preprocessing that refused it is the same for every
    version, so it is kept whatever the version.
    """
    versions = {record.get(MODEL_VERSION_KEY) for record in records.values() if record.get("error") is None}
    return sorted(versions, key=lambda version: (version is not None, version or 0))


def other_versions(records: Mapping[str, Mapping], version: int | None) -> list:
    """The versions other than ``version`` that a results file's scored lines hold (none when ``version`` is None)."""
    if version is None:
        return []
    return [recorded for recorded in recorded_versions(records) if recorded != version]


def shown_version(version) -> str:
    """How a message names a recorded version (``version 2``; a line without one says so)."""
    return "no version (written before answers named their version)" if version is None else f"version {version}"


def unloaded_message(version: int, error: str) -> str:
    """Why a batch stops when the version it asks is no longer served."""
    return (
        f"classifier version {version} is no longer served ({error}); this refusal is not written and the run "
        "stops: run again once it is served, or with another --model-version into another file"
    )


class VersionKeeper:
    """Keeps a batch to one classifier version: the first answer fixes it when nothing else did.

    Args:
        version: the version the lines must come from (see :func:`batch_version`), or None.
    """

    def __init__(self, version: int | None) -> None:
        self.version = version

    def admit(self, record: Mapping) -> str | None:
        """None when a line may be written; else why not (an answer of another version)."""
        if record.get("error") is not None:
            return None
        answered = record.get(MODEL_VERSION_KEY)
        if self.version is None:
            self.version = answered
            return None
        if answered == self.version:
            return None
        return (
            f"the server answered with classifier version {answered}, but this run's lines come from version "
            f"{self.version} (a version was loaded or unloaded meanwhile); nothing more is written: run again "
            f"with --model-version {self.version} to finish with it, or write to another file"
        )


def _version_of(entry: Mapping) -> int:
    version = entry.get(VERSION_FIELD)
    return version if isinstance(version, int) and not isinstance(version, bool) else UNNAMED_VERSION


#: How many hex digits of a sha256 the human-readable lines show.
SHA256_SHOWN = 12
#: The metrics of a lineage shown in one line (evaluate's keys), in this order.
LINEAGE_METRICS = ("video_auc", "log_loss", "eer", "accuracy")
#: The classifier kind each section of model_info's document lists.
SECTION_KINDS = {CLASSIFIERS_SECTION: Kind.CLASSIFIER, TEMPORAL_SECTION: Kind.TEMPORAL_CLASSIFIER}


def describe_versions(info: Mapping | None) -> dict[str, dict[str, list[dict]]]:
    """Every classifier version model_info lists, by section and length: what ``health`` shows.

    Returns:
        ``{section: {"<N>": [{"model", "version", "checkpoint", "sha256", "demo", "ready", "latest",
        "lineage", "calibrations"}, ...]}}``, versions ascending; empty without a document.
    """
    described: dict[str, dict[str, list[dict]]] = {}
    for section, kind in SECTION_KINDS.items():
        lengths = (info or {}).get(section)
        if not isinstance(lengths, Mapping):
            continue
        mode = Mode.TEMPORAL if section == TEMPORAL_SECTION else Mode.SCORE
        for length in sorted(lengths, key=lambda key: int(key) if str(key).isdigit() else 0):
            if not str(length).isdigit():
                continue
            frames = int(length)
            latest = latest_version(info, frames, mode)
            described.setdefault(section, {})[str(frames)] = [
                {
                    "model": model_name(kind, frames),
                    "version": version,
                    "checkpoint": entry.get("checkpoint"),
                    "sha256": entry.get("sha256"),
                    "demo": bool(entry.get("demo")),
                    "ready": bool(entry.get(READY_FIELD, True)),
                    "latest": version == latest,
                    "lineage": entry.get("lineage") if isinstance(entry.get("lineage"), Mapping) else None,
                    "calibrations": entry.get("calibrations") if isinstance(entry.get("calibrations"), Mapping) else {},
                }
                for version, entry in version_entries(info, frames, mode).items()
            ]
    return described


def short_sha256(digest) -> str:
    """The first hex digits of a sha256, enough to tell checkpoints apart in a listing."""
    return str(digest)[:SHA256_SHOWN] if digest else "unknown"


def format_calibration(score: str, point: Mapping) -> str:
    """One line of the operating point a version serves for one score."""
    if point.get("error"):
        return f"{score}: calibration REFUSED ({point['error']}); decisions at 0.5 unless one was in force"
    if not point.get("calibrated"):
        return f"{score}: uncalibrated (FAKE at 0.5)"
    fpr = point.get("fpr") or [None, None, None]
    shown = "" if None in fpr else f", FPR {100 * fpr[0]:.2g} % (95 % {100 * fpr[1]:.2g}-{100 * fpr[2]:.2g} %)"
    return (
        f"{score}: FAKE at >= {point['fake_threshold']:.4g}, REAL below {point['real_threshold']:.4g}, for at most "
        f"{100 * point['target_fpr']:g} % false positives on {point['set']} (n = {point['real_videos']} real, "
        f"{point['fake_videos']} fake{shown})"
    )


def format_lineage(lineage: Mapping) -> str:
    """One line of where a trained version comes from: its parent checkpoint, its data, its test metrics."""
    parts = [f"trained from {short_sha256(lineage.get('parent_sha256'))}"]
    if lineage.get("manifest_sha256"):
        parts.append(f"data {short_sha256(lineage['manifest_sha256'])}")
    metrics = lineage.get("metrics") if isinstance(lineage.get("metrics"), Mapping) else {}
    parts += [
        f"{name} {metrics[name]:.4f}"
        for name in LINEAGE_METRICS
        if isinstance(metrics.get(name), (int, float)) and not isinstance(metrics.get(name), bool)
    ]
    if lineage.get("report"):
        parts.append(f"report {lineage['report']}")
    return ", ".join(parts)
