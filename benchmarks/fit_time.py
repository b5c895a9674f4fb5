"""Default CalMRLTransformer fit on Multiple Features (rate .5) for one or more checkouts of the library, side by side.

Each fit runs in a fresh Python process that imports the package from the given checkout; the checkouts alternate,
so a change of machine load hits them alike. Prints one JSON line per fit (total seconds, closed-form part
``fit_time_em_``, gradient part ``fit_time_gradient_``, load average before the fit) and a Markdown summary.

    git worktree add /tmp/calmrl-old 30b9657
    python benchmarks/fit_time.py --repo old=/tmp/calmrl-old --repo new=. --repeats 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, warnings
sys.path.insert(0, sys.argv[1])
from sklearn_calmrl import CalMRLTransformer
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features
data = load_multiple_features()
X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
warnings.simplefilter("ignore")
start = time.perf_counter()
est = CalMRLTransformer(data.modalities, random_state=0).fit(X)
total = time.perf_counter() - start
print(json.dumps(dict(total=total, em=est.fit_time_em_, gradient=est.fit_time_gradient_)))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", required=True, metavar="LABEL=PATH", help="a checkout to time")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repos = dict(item.split("=", 1) for item in args.repo)
    runs = {label: [] for label in repos}
    for _ in range(args.repeats):
        for label, path in repos.items():
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-c", CHILD, str(Path(path).resolve())], capture_output=True, text=True,
                                 check=True, cwd="/")
            result = dict(json.loads(out.stdout.strip().splitlines()[-1]), label=label, load=round(load, 2))
            runs[label].append(result)
            print(json.dumps(result), flush=True)
    print("\n| checkout | fit (s), median | closed-form part (s) | closed-form share | runs |\n|---|---|---|---|---|")
    for label, results in runs.items():
        total = statistics.median(r["total"] for r in results)
        em = statistics.median(r["em"] for r in results)
        print(f"| {label} | {total:.2f} | {em:.2f} | {em / total:.0%} | {len(results)} |")


if __name__ == "__main__":
    main()
