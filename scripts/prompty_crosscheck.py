#!/usr/bin/env python3
"""Renders every .prompty file of a folder with Prompty's own runtime
(`prompty.prepare`) and with `promptbook render`, and prints OK or the
difference for each.

    python3 -m venv .venv && .venv/bin/pip install prompty
    OPENAI_API_KEY=x .venv/bin/python scripts/prompty_crosscheck.py tests/prompty/spec-fixtures ['{"input": "value"}']

Known differences: Prompty's Python runtime renders values with stock
Jinja2 (`True`, `1.0`, `None`) where its Jinja-subset conformance corpus,
which promptbook follows, says `true`, `1` and ``; multimodal inputs.
"""
import json
import os
import subprocess
import sys

import prompty

PROMPTBOOK = os.environ.get("PROMPTBOOK", "target/debug/promptbook")


def main() -> int:
    root = sys.argv[1]
    inputs = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    differ = 0
    for f in sorted(os.listdir(root)):
        if not f.endswith(".prompty"):
            continue
        name = f[: -len(".prompty")]
        try:
            msgs = prompty.prepare(prompty.load(os.path.join(root, f)), inputs)
            theirs = [(m.role, m.text if isinstance(m.text, str) else m.to_text_content()) for m in msgs]
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            theirs = f"ERROR {type(e).__name__}: {e}"
        out = subprocess.run(
            [PROMPTBOOK, "render", name, "--dir", root, "--json", "--input", "-"],
            input=json.dumps(inputs), capture_output=True, text=True,
        )
        if out.returncode == 0:
            ours = [(m["role"], m["content"]) for m in json.loads(out.stdout)["messages"]]
        else:
            ours = "ERROR " + out.stderr.strip()
        if ours == theirs:
            print("OK  ", name)
        else:
            differ += 1
            print("DIFF", name)
            print("   prompty:   ", repr(theirs)[:500])
            print("   promptbook:", repr(ours)[:500])
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
