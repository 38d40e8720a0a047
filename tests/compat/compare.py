# SPDX-License-Identifier: MIT
"""Compares two JUnit XML files written by CPython's regrtest (--junit-xml):
the run without the library and a run under it. Prints every test case that
passed (or was skipped) without the library and failed, erred or went
missing under it, one per line, and exits 1 when there is any.

    compare.py BARE.xml RUN.xml LABEL
"""
import sys
import xml.etree.ElementTree as ET

# Differences the README's Limits give as the policy's design, by the label
# of the run: listed with their reason, not counted.
BY_DESIGN = {
    "close=defer": {
        "test.test_socket.TCPCloserTest.testClose":
            "the client waits up to 1 s for the end of the stream while it holds "
            "its end open for 1 s; defer sends the server's FIN only after the "
            "client's, so the end comes as the wait runs out and the client's "
            "close races the read (EBADF) (README, Limits: a peer that itself "
            "waits for the end)",
    },
}


def outcomes(path):
    """{test id: outcome} for every test case of the file."""
    res = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        name = "%s.%s" % (cls, name) if cls else name
        outcome = "ok"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = child.tag
                break
            if child.tag == "skipped":
                outcome = "skipped"
        res[name] = outcome
    return res


def module(name):
    """test.test_asyncio.test_sendfile.X.y -> test.test_asyncio"""
    return ".".join(name.split(".")[:2])


def main():
    bare_path, run_path, label = sys.argv[1:4]
    bare, run = outcomes(bare_path), outcomes(run_path)
    worse, designed = [], []
    allowed = BY_DESIGN.get(label, {})
    for name, outcome in sorted(bare.items()):
        got = run.get(name, "missing")
        if outcome in ("ok", "skipped") and got in ("failure", "error", "missing"):
            if name in allowed and got in ("failure", "error"):
                designed.append((name, got))
            else:
                worse.append((name, got))
    print("%s: %d test cases, %d fail under the library and not without it"
          % (label, len(run), len(worse)))
    # a module with no result at all under the library did not finish
    # (crashed, or killed at regrtest's --timeout): one line for it
    modules = {}
    for name in bare:
        modules.setdefault(module(name), []).append(name)
    unfinished = set(m for m, names in modules.items()
                     if not any(n in run for n in names))
    for m in sorted(unfinished):
        print("  did not finish: %s (%d test cases)" % (m, len(modules[m])))
    for name, got in worse:
        if module(name) not in unfinished:
            print("  %s: %s" % (got, name))
    for name, got in designed:
        print("  %s, by design: %s: %s" % (got, name, allowed[name]))
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
