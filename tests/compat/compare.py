# SPDX-License-Identifier: MIT
"""Compares two JUnit XML files written by CPython's regrtest (--junit-xml):
the run without the library and a run under it. Prints every test case that
passed (or was skipped) without the library and failed, erred or went
missing under it, one per line, and exits 1 when there is any.

    compare.py BARE.xml RUN.xml LABEL
"""
import sys
import xml.etree.ElementTree as ET


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
    worse = []
    for name, outcome in sorted(bare.items()):
        got = run.get(name, "missing")
        if outcome in ("ok", "skipped") and got in ("failure", "error", "missing"):
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
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
