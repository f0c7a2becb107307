"""Screenshot reports/index.html's first screen in headless Chromium and check that it leads with the answer.

    python benchmarks/report_screenshot.py [--page reports/index.html] [--out docs/measurements/report/index_top.png]

Needs a Chromium on the PATH (Debian: `apt-get install chromium`); nothing else is installed or downloaded.
Prints the page's first-screen facts (the scale line and the first table are above the fold, how much of the
screen is not blank) and exits non-zero if the headline is missing or the screenshot is blank.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("error: no Chromium on the PATH (Debian: apt-get install chromium)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page", default="reports/index.html")
    ap.add_argument("--out", default="docs/measurements/report/index_top.png")
    ap.add_argument("--size", default="1280,1400", help="window width,height in CSS pixels")
    a = ap.parse_args()
    page = Path(a.page).resolve()
    if not page.exists():
        sys.exit(f"error: {page}: no such page (run `dvc repro ledger` first)")
    text = page.read_text(encoding="utf-8")
    head = text[:text.index("<h2>Claims ledger")] if "<h2>Claims ledger" in text else ""
    ok = "Scale of this run" in head and "<table>" in head
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as prof:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={prof}", f"--window-size={a.size}", f"--screenshot={out.resolve()}", page.as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not out.exists():
        sys.exit(f"error: chromium failed (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    from PIL import Image

    img = Image.open(out).convert("L")
    w, h = img.size
    dark = sum(img.histogram()[:200]) / (w * h)
    print(f"screenshot: {out} ({w}x{h} px); non-blank pixels {dark:.1%}")
    print(f"headline (scale line and a results table) before the ledger and figures: {'yes' if ok else 'NO'}")
    return 0 if ok and dark > 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
