"""Names of training outputs that carry a training position: network snapshots and fakes grids.

One rule: a name carries the exact number of images seen, written as kimg with three decimals,
`{kimg:06d}.{images % 1000:03d}` (1504 images -> '000001.504'), so names are readable (kimg), sortable as
text up to 999999 kimg, and never collide whatever the snapshot interval.

Runs of older versions of the toolkit also wrote integer-kimg names (`network-snapshot-000001.pt`, kimg =
images // 1000); they still parse, with an unknown exact count, and sort by the lower bound of that count.
A neutral module: metrics, the CLIs and the training code all import it, and it imports none of them.
"""

import os
import re
from typing import Optional, Tuple

SNAPSHOT_RE = re.compile(r"network-snapshot-(\d+)(?:\.(\d{3}))?\.pt")


def kimg_label(cur_nimg: int) -> str:
    """'{kimg:06d}.{rest:03d}' of an image count: 1504 -> '000001.504', 4000 -> '000004.000'."""
    cur_nimg = int(cur_nimg)
    if cur_nimg < 0:
        raise ValueError(f"image count must be >= 0, got {cur_nimg}")
    return f"{cur_nimg // 1000:06d}.{cur_nimg % 1000:03d}"


def snapshot_name(cur_nimg: int) -> str:
    """File name of the snapshot taken after `cur_nimg` images: `network-snapshot-000001.504.pt`."""
    return f"network-snapshot-{kimg_label(cur_nimg)}.pt"


def parse_snapshot_name(name: str) -> Optional[Tuple[int, Optional[int]]]:
    """(kimg, images or None) of a snapshot file name (a path is fine), None if it is not one.

    `network-snapshot-000001.504.pt` -> (1, 1504). An old integer name `network-snapshot-000012.pt` -> (12, None):
    it only says that the count lies in [kimg * 1000, kimg * 1000 + 999].
    """
    m = SNAPSHOT_RE.fullmatch(os.path.basename(str(name)))
    if not m:
        return None
    kimg = int(m.group(1))
    return kimg, (kimg * 1000 + int(m.group(2)) if m.group(2) is not None else None)


def snapshot_sort_key(name: str) -> Tuple[int, int, str]:
    """Sort key of a snapshot name by images seen (oldest first); names that do not parse sort first.

    An old integer name counts as its lower bound kimg * 1000 and sorts before an exact name of the same
    count; the base name breaks any remaining tie, so the order never depends on file times.
    """
    info = parse_snapshot_name(name)
    base = os.path.basename(str(name))
    if info is None:
        return (-1, 0, base)
    kimg, nimg = info
    return (kimg * 1000 if nimg is None else nimg, 0 if nimg is None else 1, base)
