"""Reads bench logs and prints every ratio they report (a number followed by `x`) with its
median and range over the rounds. A ratio's name is its bench, its section (`== backend: X ==`)
and the text before the number. Lines `WHAT RSS: LABEL N.N MB, LABEL N.N MB` are memory figures,
printed the same way in MB. Used by bench/all.sh; `python3 bench/ratios.py LOG...`."""
import re
import statistics
import sys
from collections import defaultdict

ratios = defaultdict(list)
memory = defaultdict(list)
for path in sys.argv[1:]:
    bench = path.rsplit("/", 1)[-1].split(".", 1)[0]
    section = ""
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        m = re.match(r"== backend: (\S+) ==", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^(.*\bRSS):(.*)$", line)
        if m:
            for label, value in re.findall(r"([a-z][a-z0-9 ]*?)\s+(\d+\.\d+) MB", m.group(2).split("(")[0]):
                label = re.sub(r"\s*\d+\s*", " ", label).strip()
                memory[f"{bench} / {m.group(1)} {label}"].append(float(value))
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
if memory:
    width = max(len(k) for k in memory)
    print(f"\n{'resident memory':<{width}}  {'median':>8}  {'range':>13}  rounds")
    for key, values in memory.items():
        print(f"{key:<{width}}  {statistics.median(values):>5.1f} MB  "
              f"{min(values):>4.1f}-{max(values):.1f} MB  {len(values)}")
