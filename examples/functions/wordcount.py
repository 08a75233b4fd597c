"""A fork-per-request function in Python: counts lines, words and bytes of the body."""
import json
import sys

data = sys.stdin.buffer.read()
text = data.decode("utf-8", errors="replace")
json.dump({"lines": text.count("\n"), "words": len(text.split()), "bytes": len(data)}, sys.stdout)
sys.stdout.write("\n")
