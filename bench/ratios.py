"""Reads bench logs and prints every ratio they report (a number followed by `x`) with its
median and range over the rounds. A ratio's name is its bench, its section (`== backend: X ==`)
and the text before the number. Used by bench/all.sh; `python3 bench/ratios.py LOG...`."""
import re
import statistics
import sys
from collections import defaultdict

ratios = defaultdict(list)
for path in sys.argv[1:]:
    bench = path.rsplit("/", 1)[-1].split(".", 1)[0]
    section = ""
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        m = re.match(r"== backend: (\S+) ==", line)
        if m:
            section = m.group(1)
            continue
        m = re.search(r"^(.*?)(\d+\.\d+)x\b", line)
        if not m or "target" in m.group(1):
            continue
        name = re.sub(r"\s*\d+\s*msg/s", "", m.group(1))
        name = re.sub(r"[\s:(]+$", "", name).strip()
        key = " / ".join(p for p in (bench, section, name) if p)
        ratios[key].append(float(m.group(2)))

if not ratios:
    sys.exit("no ratios found in the logs")
width = max(len(k) for k in ratios)
print(f"{'ratio':<{width}}  {'median':>7}  {'range':>13}  rounds")
for key, values in ratios.items():
    print(f"{key:<{width}}  {statistics.median(values):>6.2f}x  "
          f"{min(values):>5.2f}-{max(values):.2f}x  {len(values)}")
