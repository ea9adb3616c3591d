#!/usr/bin/env python3
"""Records what Prompty's own Python runtime (`prompty.prepare`) makes of
our `.prompty` corpus in tests/prompty/ours/: for every file and every
input document in cases.json, the messages (role and text) or the error.
Writes tests/prompty/ours/runtime.json, which tests/test_prompty.rs
compares promptbook with.

    python3 -m venv .venv && .venv/bin/pip install prompty==2.1.0
    .venv/bin/python scripts/record_prompty_runtime.py
"""
import json
import pathlib

import prompty

HERE = pathlib.Path(__file__).resolve().parent.parent / "tests" / "prompty" / "ours"


def run(path: pathlib.Path, inputs: dict) -> dict:
    try:
        messages = prompty.prepare(prompty.load(str(path)), inputs)
    except Exception as e:  # noqa: BLE001 - recorded, not hidden
        return {"error": type(e).__name__, "message": str(e)}
    return {"messages": [[m.role, m.text if isinstance(m.text, str) else m.to_text_content()]
                         for m in messages]}


def main() -> None:
    cases = json.loads((HERE / "cases.json").read_text())
    out = {"runtime": f"prompty {prompty.VERSION}", "cases": {}}
    for name, inputs_list in cases.items():
        out["cases"][name] = [{"inputs": i, **run(HERE / f"{name}.prompty", i)} for i in inputs_list]
    (HERE / "runtime.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
