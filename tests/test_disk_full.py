"""A disk that fills up while features are written: `hapvr index` on a data folder in a small tmpfs.

The tmpfs is mounted in a private mount namespace (`unshare -rm`: no root needed where user namespaces
are on, nothing visible outside the test). A filler file leaves too little room for the next video's
features: the command must exit 19 (`storage_full`) with one line, leave no temporary file, keep every
video indexed before it queryable, and index normally once space is freed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from tests.clips import BIKES, CAR, ROOT, clip

SCRIPT = textwrap.dedent("""
    set -u
    mount -t tmpfs -o size=24m tmpfs "$MNT"
    hapvr() { "$PY" -m indexer.cli "$@" --data "$MNT/data"; }
    hapvr index "$FIRST" > "$OUT/first.out" 2>&1; echo "first=$?" >> "$OUT/codes"
    # leave about 40 KiB: less than the 10 s clip's features (~10 frames x 9 regions x 512 x fp16 = 90 KiB)
    free=$(df --output=avail -B1 "$MNT" | tail -1)
    fallocate -l $((free - 40 * 1024)) "$MNT/filler" || head -c $((free - 40 * 1024)) /dev/zero > "$MNT/filler"
    hapvr index "$SECOND" > "$OUT/full.out" 2>&1; echo "full=$?" >> "$OUT/codes"
    find "$MNT/data" -name '*.tmp' -o -name '.tmp-*' > "$OUT/tmpfiles"
    ls "$MNT/data/features" > "$OUT/features"
    hapvr list --json > "$OUT/list_full.out" 2>&1
    hapvr query "$FIRST" --json > "$OUT/query_full.out" 2>&1; echo "query_full=$?" >> "$OUT/codes"
    rm "$MNT/filler"
    hapvr index "$SECOND" > "$OUT/freed.out" 2>&1; echo "freed=$?" >> "$OUT/codes"
    hapvr list --json > "$OUT/list_freed.out" 2>&1
""")


def test_a_full_disk_while_writing_features_is_a_clear_error_and_the_store_stays_whole(tmp_path):
    assert shutil.which("unshare"), "util-linux's unshare is needed to mount a private tmpfs"
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    env = {"MNT": str(mnt), "OUT": str(out), "PY": sys.executable, "FIRST": str(clip(CAR)),
           "SECOND": str(clip(BIKES)), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HAPVR_LOG_LEVEL": "WARNING",
           "HOME": str(tmp_path)}
    proc = subprocess.run(["unshare", "-rm", "bash", "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    codes = dict(line.split("=") for line in (out / "codes").read_text().split())
    assert codes["first"] == "0", (out / "first.out").read_text()
    full = (out / "full.out").read_text()
    assert codes["full"] == "19", full
    assert "storage_full" in full and "Traceback" not in full, full
    assert (out / "tmpfiles").read_text() == ""  # nothing half-written left behind
    listed = [json.loads(line) for line in (out / "list_full.out").read_text().splitlines()]
    assert [v["source"] for v in listed] == [str(clip(CAR))]  # only the video indexed before
    assert (out / "features").read_text().split() == [f"{listed[0]['id']}.npy"]
    assert codes["query_full"] == "0"
    assert json.loads((out / "query_full.out").read_text())["results"][0]["id"] == listed[0]["id"]
    assert codes["freed"] == "0", (out / "freed.out").read_text()
    freed = [json.loads(line)["source"] for line in (out / "list_freed.out").read_text().splitlines()]
    assert sorted(freed) == sorted([str(clip(CAR)), str(clip(BIKES))])
