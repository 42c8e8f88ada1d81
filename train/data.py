"""The labelled set: read through ``evaluate``'s layout readers, hashed, split, described.

**The split.** Videos are joined into connected groups: two videos are connected when they share a
key of their ``source`` (a FaceForensics++ fake and its original, a DFDC fake and its ``original``,
a CSV's ``source`` column, see :mod:`client.evaluate.layouts`) or have the same bytes. A group is
never cut: it goes whole to train, validation or test. The groups are shuffled with the seed, and
the three parts are filled towards their fractions of each stratum (a class, and within it a
reporting group: real videos, and each kind of fake): largest groups first, each to the part that
still lacks most of what it holds. Each part first receives one real and one fake video (the
smallest groups that give them), because AUC needs both classes in validation and test: a set
whose groups cannot give that is refused, with the numbers it would need.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.evaluate.layouts import AUTO, FAKE, REAL, LabelledVideo, LayoutError, read_layout
from export.checkpoints import sha256_of

from .errors import TrainError
from .files import canonical_json, sha256_text

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
#: The split name a refused video has in the data manifest.
REFUSED = "refused"
CLASS_NAMES = {REAL: "real", FAKE: "fake"}
#: Prefix of the key that connects videos with the same bytes.
CONTENT_KEY = "sha256:"


@dataclass(frozen=True)
class Video:
    """A video of the set with the sha256 of its bytes (the key of its crops in the cache)."""

    labelled: LabelledVideo
    sha256: str

    @property
    def path(self) -> str:
        return self.labelled.path

    @property
    def truth(self) -> int:
        return self.labelled.truth

    @property
    def group(self) -> str:
        return self.labelled.group

    @property
    def source(self) -> str:
        return self.labelled.source


def read_set(
    source: str, layout: str = AUTO, *, compression: str | None = None, ffpp_split: str | None = None
) -> list[LabelledVideo]:
    """The labelled videos of ``source``, refused when empty or of one class.

    Raises:
        TrainError: the set cannot be read, is empty or has only one class.
    """
    try:
        videos = read_layout(source, layout, compression=compression, split=ffpp_split)
    except LayoutError as error:
        raise TrainError(str(error)) from None
    check_classes(videos, f"{source}")
    return videos


def check_classes(videos: Sequence[LabelledVideo], where: str) -> None:
    """Refuses a set without videos or without one of the classes."""
    if not videos:
        raise TrainError(f"{where}: no video to train on")
    present = {video.truth for video in videos}
    if len(present) == 1:
        only = CLASS_NAMES[present.pop()]
        other = CLASS_NAMES[REAL if only == "fake" else FAKE]
        raise TrainError(
            f"{where}: all {len(videos)} videos are {only}: training needs {other} videos too (one class only)"
        )


def hash_videos(videos: Sequence[LabelledVideo]) -> tuple[list[Video], list[tuple[LabelledVideo, str]]]:
    """``(readable videos with their sha256, [(unreadable video, reason)])``."""
    readable, unreadable = [], []
    for video in videos:
        try:
            readable.append(Video(video, sha256_of(Path(video.path))))
        except OSError as error:
            unreadable.append((video, f"cannot read the file: {error.strerror or error}"))
    by_content: dict[str, Video] = {}
    for video in readable:
        earlier = by_content.setdefault(video.sha256, video)
        if earlier.truth != video.truth:
            raise TrainError(
                f"{earlier.path} and {video.path} hold the same bytes but one is labelled real and the other fake"
            )
    return readable, unreadable


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def connected_groups(videos: Sequence[Video]) -> list[int]:
    """For each video, the index of the first video of its connected group (shared source key or bytes)."""
    groups = _UnionFind(len(videos))
    first_with_key: dict[str, int] = {}
    for index, video in enumerate(videos):
        for key in (*video.labelled.source_keys, CONTENT_KEY + video.sha256):
            groups.union(first_with_key.setdefault(key, index), index)
    return [groups.find(index) for index in range(len(videos))]


def _class_counts(members: Sequence[int], truth: Sequence[int]) -> tuple[int, int]:
    fakes = sum(truth[i] for i in members)
    return len(members) - fakes, fakes


def check_splittable(truth: Sequence[int], groups: Sequence[int], where: str) -> None:
    """Refuses a set whose connected groups cannot give each split a real and a fake video.

    A group with both classes can cover a split alone; the others pair a real-only group with a
    fake-only one. Both kinds together that is possible exactly when at least three groups hold a
    real video and at least three hold a fake one.
    """
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    counts = [_class_counts(indices, truth) for indices in members.values()]
    with_real = sum(1 for real, _ in counts if real)
    with_fake = sum(1 for _, fake in counts if fake)
    needed = len(SPLITS)
    if with_real < needed or with_fake < needed:
        n_fake = sum(truth)
        raise TrainError(
            f"{where}: too small for a train/validation/test split: each part needs a real and a fake video of "
            f"its own sources, so at least {needed} real and {needed} fake videos whose sources are not connected; "
            f"found {len(truth) - n_fake} real and {n_fake} fake videos in {len(members)} connected source "
            f"group(s), {with_real} with a real video and {with_fake} with a fake one"
        )


def _targets(total: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Videos of one class per split: at least one each, the rest by largest remainder, train gets the leftover."""
    exact = {split: total * fractions[split] for split in SPLITS}
    targets = {split: max(1, int(exact[split])) for split in SPLITS}
    leftover = total - sum(targets.values())
    for split in sorted(SPLITS, key=lambda s: (-(exact[s] - int(exact[s])), SPLITS.index(s))):
        if leftover <= 0:
            break
        targets[split] += 1
        leftover -= 1
    return targets


def split_videos(
    truth: Sequence[int],
    groups: Sequence[int],
    fractions: Mapping[str, float],
    seed: int,
    strata: Sequence[str] | None = None,
) -> list[str]:
    """The split (``train``, ``validation`` or ``test``) of each video; see the module's docstring.

    Args:
        truth: 1 fake, 0 real, per video.
        groups: the connected group of each video (:func:`connected_groups`).
        fractions: share of each split; they sum to 1.
        seed: the shuffle's seed.
        strata: what each split should hold its share of, per video (default: the class).

    Raises:
        TrainError: the groups cannot give each split both classes.
    """
    check_splittable(truth, groups, "the set")
    strata = [str(value) for value in truth] if strata is None else list(strata)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    order = list(members)
    random.Random(seed).shuffle(order)
    counts = {group: _class_counts(members[group], truth) for group in order}
    names = sorted(set(strata))
    holds = {group: {name: sum(1 for i in members[group] if strata[i] == name) for name in names} for group in order}
    targets = {name: _targets(strata.count(name), fractions) for name in names}
    assigned: dict[str, dict[str, int]] = {split: dict.fromkeys(names, 0) for split in SPLITS}
    placed: dict[int, str] = {}

    def place(group: int, split: str) -> None:
        placed[group] = split
        for name in names:
            assigned[split][name] += holds[group][name]

    by_size = sorted(order, key=lambda group: len(members[group]))
    mixed = [group for group in by_size if all(counts[group])]
    real_only = [group for group in by_size if counts[group][FAKE] == 0]
    fake_only = [group for group in by_size if counts[group][REAL] == 0]
    # Each split first gets both classes: the smallest mixed group, else the smallest pair.
    for split in (TEST, VALIDATION, TRAIN):
        if mixed:
            place(mixed.pop(0), split)
        else:
            place(real_only.pop(0), split)
            place(fake_only.pop(0), split)

    def need(group: int, split: str) -> int:
        lacking = {name: max(0, targets[name][split] - assigned[split][name]) for name in names}
        return sum(min(count, lacking[name]) for name, count in holds[group].items())

    def overshoot(group: int, split: str) -> float:
        return max(
            (assigned[split][name] + count) / targets[name][split] for name, count in holds[group].items() if count
        )

    for group in sorted((g for g in order if g not in placed), key=lambda g: -len(members[g])):
        best = max(SPLITS, key=lambda split: (need(group, split), -overshoot(group, split), -SPLITS.index(split)))
        place(group, best)
    return [placed[group] for group in groups]


def manifest(videos: Sequence[Video], splits: Sequence[str], refused: Sequence[Video] = ()) -> dict:
    """The data manifest: its sha256 and counts per split and group.

    The hash is of the sorted ``[content sha256, truth, group, source, split]`` rows as canonical
    JSON (refused videos with split ``refused``): it names the data and its split, whatever the
    paths; a moved or renamed set hashes the same.
    """
    rows = [[video.sha256, video.truth, video.group, video.source, split] for video, split in zip(videos, splits)]
    rows += [[video.sha256, video.truth, video.group, video.source, REFUSED] for video in refused]
    rows.sort()
    counts: dict[str, dict[str, dict[str, int]]] = {split: {} for split in (*SPLITS, REFUSED)}
    for _, truth, group, _, split in rows:
        entry = counts[split].setdefault(group, {"real": 0, "fake": 0})
        entry[CLASS_NAMES[truth]] += 1
    return {
        "manifest_sha256": sha256_text(canonical_json(rows)),
        "n_videos": len(rows),
        "n_sources": len(set(connected_groups(videos))) if videos else 0,
        "splits": {split: sum(1 for row in rows if row[4] == split) for split in (*SPLITS, REFUSED)},
        "counts": counts,
    }
