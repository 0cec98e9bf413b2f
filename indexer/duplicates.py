"""Duplicate sets of a whole collection: which indexed videos are copies of each other.

The engine scans each video once (`Engine.duplicates`): its stored features search the collection like
a query, and its top `neighbours` results become scored pairs (confidence, segments), kept in the store
with the scan. That is sub-quadratic (one coarse search and a bounded re-rank per video) and
incremental: a newly indexed video is scanned on the next run, older scans stay. Grouping then runs
on the stored pairs alone, in well under a second per 10k videos, with any `min_confidence`.

Grouping is *average linkage* over the pair graph (`average_linkage`): two sets merge only while the
mean confidence over all their cross pairs reaches `min_confidence`. One strong link between two sets of
several videos does not merge them, which single linkage (connected components) would: that is what
chains unrelated videos through one ambiguous pair (twenty clips of one room, each a little like the
next). A pair no scan listed counts as confidence 0, except when it is *unknown*: both videos' scans
were saturated (every one of their `neighbours` results at or above the floor), so the pair may simply
have been crowded out; unknown pairs are left out of the mean. A group of more copies than
`neighbours` therefore still holds together.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

#: pairs below this confidence are not kept by a scan (they count as 0 in the linkage)
FLOOR = 0.01


@dataclass
class _Link:
    total: float = 0.0  # sum of the confidences of the scored cross pairs
    unknown_scored: int = 0  # scored cross pairs between two saturated videos


def average_linkage(pairs: Iterable[tuple[int, int, float]], saturated: set[int],
                    threshold: float) -> list[set[int]]:
    """Sets of two or more videos, merged while the mean confidence over their cross pairs is at least
    `threshold` (pairs (a, b, confidence); unlisted pairs count 0 unless both ends are `saturated`)."""
    members: dict[int, set[int]] = {}
    sat: dict[int, int] = {}  # saturated members per cluster
    links: dict[int, dict[int, _Link]] = defaultdict(dict)
    for a, b, confidence in pairs:
        if a == b:
            continue
        for v in (a, b):
            if v not in members:
                members[v] = {v}
                sat[v] = int(v in saturated)
        link = links[a].setdefault(b, _Link())
        links[b][a] = link
        link.total += confidence
        link.unknown_scored += int(a in saturated and b in saturated)

    def mean(a: int, b: int) -> float:
        link = links[a][b]
        unknown = sat[a] * sat[b] - link.unknown_scored  # saturated pairs that no scan listed
        known = len(members[a]) * len(members[b]) - unknown
        return link.total / known if known > 0 else 0.0

    # the mean of two clusters changes only when one of them merges, and a merge makes a new cluster id:
    # an entry is stale exactly when one of its clusters is gone
    heap = [(-mean(a, b), a, b) for a in links for b in links[a] if a < b]
    heapq.heapify(heap)
    next_id = max(members, default=0) + 1
    while heap:
        negative, a, b = heapq.heappop(heap)
        if a not in members or b not in members:
            continue
        if -negative < threshold:
            break
        merged, next_id = next_id, next_id + 1
        members[merged] = members.pop(a) | members.pop(b)
        sat[merged] = sat.pop(a) + sat.pop(b)
        for old in (a, b):
            for other, link in links.pop(old).items():
                links[other].pop(old, None)
                if other in (a, b):
                    continue
                joined = links[merged].setdefault(other, _Link())
                links[other][merged] = joined
                joined.total += link.total
                joined.unknown_scored += link.unknown_scored
        for other in links[merged]:
            heapq.heappush(heap, (-mean(merged, other), merged, other))
    return [group for group in members.values() if len(group) > 1]


def representative_key(record) -> tuple:
    """The representative of a set: the longest video, then the most pixels, then the first indexed."""
    return (-round(record.duration, 3), -(record.width * record.height), record.seq)


def oriented(scanned: int, other: int, confidence: float, segments: list[dict]) -> tuple[int, int, float, list[dict]]:
    """A scan's result as a stored pair (a < b), its segments on a's and b's timelines."""
    spans = [{"a_start": s["query_start"], "a_end": s["query_end"], "b_start": s["target_start"],
              "b_end": s["target_end"], "score": s["score"]} for s in segments]
    if scanned < other:
        return scanned, other, confidence, spans
    swapped = [{"a_start": s["b_start"], "a_end": s["b_end"], "b_start": s["a_start"], "b_end": s["a_end"],
                "score": s["score"]} for s in spans]
    return other, scanned, confidence, swapped


def describe(groups: list[set[int]], pairs: list[tuple[int, int, float, list[dict]]], records: dict,
             min_confidence: float) -> dict:
    """The JSON of `hapvr duplicates --json` and GET /duplicates: the sets, largest first, each with its
    videos, its representative and its scored pairs (every pair inside the set, best first)."""
    where = {v: i for i, group in enumerate(groups) for v in group}
    inside: dict[int, list] = defaultdict(list)
    for a, b, confidence, spans in pairs:
        if a in where and where[a] == where.get(b):
            inside[where[a]].append((a, b, confidence, spans))
    out = []
    for i, group in enumerate(groups):
        videos = sorted((records[v] for v in group if v in records), key=representative_key)
        if len(videos) < 2:
            continue
        ids = {r.seq: r.id for r in videos}
        out.append({
            "videos": [{"id": r.id, "source": r.source, "external_id": r.external_id, "duration": round(r.duration, 3),
                        "width": r.width, "height": r.height, "sha256": r.sha256} for r in videos],
            "representative": videos[0].id,
            "pairs": [{"a": ids[a], "b": ids[b], "confidence": round(c, 4), "segments": spans}
                      for a, b, c, spans in sorted(inside[i], key=lambda p: -p[2]) if a in ids and b in ids],
        })
    out.sort(key=lambda g: (-len(g["videos"]), g["representative"]))
    return {"groups": out, "min_confidence": min_confidence, "grouped": sum(len(g["videos"]) for g in out)}
