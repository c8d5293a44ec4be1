#!/usr/bin/env python3
"""Keeps the pass reference in docs/manifest.md equal to `qforge list passes --markdown`.

  docs_reference.py QFORGE DOC           rewrite the block between the markers
  docs_reference.py QFORGE DOC --check   exit 1, showing the first difference, when they differ
"""
import subprocess
import sys

BEGIN = "<!-- BEGIN pass reference (generated: make docs) -->"
END = "<!-- END pass reference -->"


def main():
    qforge, doc = sys.argv[1], sys.argv[2]
    check = "--check" in sys.argv[3:]
    generated = subprocess.run([qforge, "list", "passes", "--markdown"], check=True,
                               capture_output=True, text=True).stdout
    text = open(doc, encoding="utf-8").read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{doc}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    want = "\n" + generated
    if check:
        if current == want:
            print(f"{doc}: the pass reference agrees with `qforge list passes --markdown`")
            return
        a, b = current.splitlines(), want.splitlines()
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else "(end)"
            y = b[i] if i < len(b) else "(end)"
            if x != y:
                print(f"{doc}: the pass reference differs from `qforge list passes --markdown` "
                      f"at line {i + 1} of the block:\n  doc:    {x}\n  binary: {y}\nrun `make docs`")
                break
        sys.exit(1)
    open(doc, "w", encoding="utf-8").write(head + BEGIN + want + END + tail)


if __name__ == "__main__":
    main()
