#!/usr/bin/env bash
# Runs the Autobahn TestSuite (through kosoku, a Python port of its fuzzing
# client) against the relay's echo service and fails unless every case of
# groups 1-10 is OK (INFORMATIONAL only where the suite gives no other
# verdict), groups 12-13 are UNIMPLEMENTED (no permessage-deflate), and no case
# is worse than in scripts/autobahn-expected.json.
#
#   bash scripts/autobahn.sh            # run, check, print the table
#   UPDATE=1 bash scripts/autobahn.sh   # also rewrite the expected file
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
work=target/autobahn
mkdir -p "$work"
if [ ! -x "$work/venv/bin/kosoku" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet "kosoku==$KOSOKU_VERSION"
fi

source scripts/lib.sh
# Group 9 sends thousands of messages and 16 MiB ones back to back: a conformance
# suite, not a flood, so flood control is off and the output bound is raised.
start_relay --echo --max-message 16777216 --max-fragments 1000000 --max-pending 67108864 --flood-messages 0

rm -rf "$work/reports"
# kosoku exits non-zero when any case is not OK (the UNIMPLEMENTED 12.* and
# 13.* included); the verdicts are judged below from its report instead.
timeout 900 "$work/venv/bin/kosoku" "$addr" -o "$work/reports" >"$work/kosoku.log" 2>&1 || true
[ -s "$work/reports/index.json" ] || { echo "autobahn: kosoku wrote no report"; tail -20 "$work/kosoku.log"; exit 1; }

python3 - "$work/reports/index.json" scripts/autobahn-expected.json "$KOSOKU_VERSION" "${UPDATE:-}" <<'PY'
import json, sys, collections
index, expected_path, version, update = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
results = next(iter(json.load(open(index)).values()))
got = {case: r["behavior"] for case, r in results.items()}
key = lambda c: tuple(int(p) for p in c.split("."))
# Cases where the suite itself gives no verdict but INFORMATIONAL.
informational_only = {"7.1.6", "7.13.1", "7.13.2"}
rank = {"OK": 0, "INFORMATIONAL": 0, "UNIMPLEMENTED": 1, "NON-STRICT": 2, "FAILED": 3}
cols = ["OK", "NON-STRICT", "FAILED", "UNIMPLEMENTED", "INFORMATIONAL"]
groups = collections.defaultdict(collections.Counter)
for case, b in got.items():
    groups[int(case.split(".")[0])][b] += 1
print(f"Autobahn TestSuite via kosoku {version}, relay in --echo mode")
print("| group | cases | " + " | ".join(cols) + " |")
print("| --- | --- | " + " | ".join("---" for _ in cols) + " |")
for g in sorted(groups):
    c = groups[g]
    print(f"| {g} | {sum(c.values())} | " + " | ".join(str(c[x]) for x in cols) + " |")
problems = []
for case in sorted(got, key=key):
    b, g = got[case], int(case.split(".")[0])
    if g <= 10 and b != "OK" and not (b == "INFORMATIONAL" and case in informational_only):
        problems.append(f"{case}: {b}")
    if g in (12, 13) and b not in ("OK", "UNIMPLEMENTED"):
        problems.append(f"{case}: {b}")
if update:
    json.dump(dict(sorted(got.items(), key=lambda kv: key(kv[0]))), open(expected_path, "w"), indent=0)
    print(f"wrote {expected_path}")
expected = json.load(open(expected_path))
for case, want in expected.items():
    if case not in got:
        problems.append(f"{case}: missing from this run (expected {want})")
    elif rank[got[case]] > rank[want]:
        problems.append(f"{case}: {got[case]}, was {want}")
for p in problems:
    print("REGRESSION " + p)
ok = sum(1 for b in got.values() if b == "OK")
print(f"{ok} passed, {len(problems)} failed")
sys.exit(1 if problems else 0)
PY
