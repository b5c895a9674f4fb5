"""Screenshots of the built documentation in headless Chromium, to look at the pages as a reader sees them.

    CALMRL_QUICK=1 sphinx-build -W -b html doc doc/_build/html
    python doc/screenshots.py doc/_build/html --out doc/_build/screenshots

Writes one PNG per page (home page, the quickstart example, the API page, and a class page by default) at a
laptop-sized window. Needs a Chromium (Debian: ``apt-get install chromium``); exits with a message otherwise.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

PAGES = ["index.html", "auto_examples/plot_quickstart.html", "api.html", "generated/sklearn_calmrl.CalMRLTransformer.html"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", help="the built site (sphinx-build's output folder)")
    parser.add_argument("--out", default="doc/_build/screenshots")
    parser.add_argument("--pages", nargs="+", default=PAGES)
    parser.add_argument("--size", default="1366,900", help="window width,height in pixels")
    args = parser.parse_args(argv)
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        print("no Chromium found: install one (apt-get install chromium)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for page in args.pages:
        path = Path(args.html, page).resolve()
        if not path.exists():
            print(f"missing page {path}", file=sys.stderr)
            return 1
        png = out / (page.replace("/", "_").replace(".html", ".png"))
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={args.size}",
             f"--screenshot={png.resolve()}", path.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
