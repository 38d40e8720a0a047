#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The last line of make test, from what tests/run-all.sh left in DIR:

    make test: 180 passed, 0 failed, 2 skipped (integration/suite/name: reason; ...)

DIR/checks.tsv holds one "STATUS<TAB>NAME<TAB>REASON" line per script check,
DIR/SUITE.json each Criterion runner's --json report, DIR/exit-codes the
runners that exited non-zero. A test without a reason of its own ("The test
was skipped.") was left out by a --filter: counted apart, as not selected.
Failed tests are named too. Exits 1 when anything failed."""
import re
import os
import sys

FILTERED = "The test was skipped."


# Criterion's --json writes messages unescaped (quotes, newlines and all), so
# the report is read by its fixed layout, not as JSON.
SUITE = re.compile(r'\{\s*"name": "([^"]*)",\s*"passed": \d+,')
TEST = re.compile(r'\{\s*"name": "([^"]*)",\s*"assertions": \d+,\s*"status": "([A-Z]+)"'
                  r'(?:,\s*"messages": \[(.*?)\])?\s*\}(?=\s*[,\]])', re.S)


def criterion_tests(text):
    """[(suite, test, status, first line of the messages)] of one report."""
    starts = [(m.start(), m.group(1)) for m in SUITE.finditer(text)]
    out = []
    for i, (pos, suite) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        for m in TEST.finditer(text, pos, end):
            msg = (m.group(3) or "").strip()
            if msg.startswith('"') and msg.endswith('"'):
                msg = msg[1:-1]
            msg = msg.strip().split("\n")[0].strip()
            out.append((suite, m.group(1), m.group(2), msg))
    return out


def main(d):
    passed, failed, skipped, unselected = 0, [], [], 0
    with open(os.path.join(d, "checks.tsv")) as f:
        for line in f:
            status, name, reason = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            if status == "PASSED":
                passed += 1
            elif status == "SKIPPED":
                skipped.append((name, reason))
            else:
                failed.append((name, reason))
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".json"):
            continue
        runner = fn[:-5]
        try:
            with open(os.path.join(d, fn), errors="replace") as f:
                tests = criterion_tests(f.read())
        except OSError as e:
            failed.append((runner, "unreadable report: %s" % e))
            continue
        if not tests:
            failed.append((runner, "no test in its report"))
        for suite, test, status, msg in tests:
            name = "%s/%s/%s" % (runner, suite, test)
            if status == "PASSED":
                passed += 1
            elif status == "SKIPPED":
                if msg in ("", FILTERED):
                    unselected += 1
                else:
                    skipped.append((name, msg))
            else:
                failed.append((name, status.lower()))
    codes = os.path.join(d, "exit-codes")
    if os.path.exists(codes) and not failed:
        # a runner failed without a failed test to show for it (a crash at exit)
        with open(codes) as f:
            for line in f:
                runner, rc = line.split()
                failed.append((runner, "the runner exited %s" % rc))
    line = "make test: %d passed, %d failed, %d skipped" % (passed, len(failed), len(skipped))
    if skipped:
        line += " (%s)" % "; ".join("%s: %s" % s for s in sorted(skipped))
    if unselected:
        line += "; %d not selected by the filter" % unselected
    if failed:
        line += "; failed: %s" % "; ".join(n + (" (%s)" % r if r else "") for n, r in failed)
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
