#!/usr/bin/env python3
"""Record what prompty==2.1.0 (`prompty.prepare`) makes of
tests/prompty/spec-fixtures/multimodal.prompty for several inputs.

    python3 -m venv .venv && .venv/bin/pip install "prompty[jinja2]==2.1.0"   # jinja2 is an extra
    PYTHONHASHSEED=<n> .venv/bin/python scripts/record_prompty_multimodal.py [fixture] [--variants]

Its recorded output is in tests/prompty/ours/multimodal-runtime-*.json, and
the rule read from the runtime's source in tests/prompty/ours/multimodal.md;
tests/test_prompty.rs says where promptbook follows it.

NOTE: the output depends on PYTHONHASHSEED (set iteration order of the rich
input names decides which marker is split out first); run with several seeds.
"""
import json
import sys

import prompty
from prompty.core.types import _part_to_dict
from prompty.providers.openai.executor import _message_to_wire

_ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = _ARGS[0] if _ARGS else str(ROOT / "tests/prompty/spec-fixtures/multimodal.prompty")

CASES = {
    "a_url_and_data_url_audio": {"photo": "https://example.com/cat.png",
                                 "recording": "data:audio/wav;base64,UklGRg=="},
    "b_data_url_photo": {"photo": "data:image/png;base64,iVBORw0KGgo=",
                         "recording": "data:audio/wav;base64,UklGRg=="},
    "c1_photo_omitted": {"recording": "data:audio/wav;base64,UklGRg=="},
    "c2_recording_omitted": {"photo": "https://example.com/cat.png"},
    "c3_both_omitted": {},
    "d1_dict_photo": {"photo": {"url": "https://example.com/cat.png", "detail": "high"},
                      "recording": "UklGRg=="},
    "d2_local_path_photo": {"photo": "cat.png", "recording": "rec.wav"},
    "d3_empty_string_photo": {"photo": "", "recording": "data:audio/wav;base64,UklGRg=="},
    "d4_number_photo": {"photo": 42, "recording": "data:audio/wav;base64,UklGRg=="},
    "e_question_given": {"photo": "https://example.com/cat.png",
                         "recording": "data:audio/wav;base64,UklGRg==",
                         "question": "Describe it."},
}


def dump(messages):
    return [{"role": m.role,
             "parts": [_part_to_dict(p) for p in m.parts],
             "metadata": m.metadata} for m in messages]


def main():
    agent = prompty.load(FIXTURE)
    out = {"runtime": f"prompty {prompty.VERSION}", "cases": {}}
    for name, inputs in CASES.items():
        try:
            msgs = prompty.prepare(agent, dict(inputs))
            rec = {"inputs": inputs, "messages": dump(msgs),
                   "openai_wire": [_message_to_wire(m) for m in msgs]}
        except Exception as e:  # noqa: BLE001
            rec = {"inputs": inputs, "error": type(e).__name__, "message": str(e)}
        # also the raw rendered text (before parse) for reference
        out["cases"][name] = rec
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__" and "--variants" not in sys.argv:
    main()


# ---------------------------------------------------------------------------
# Variants (not the spec fixture): one rich input per message, to show the
# splitting rule without the hash-order ambiguity.
# ---------------------------------------------------------------------------
VARIANT_HEAD = """---
name: v
model:
  id: gpt-4o
inputs:
  - name: photo
    kind: image
  - name: recording
    kind: audio
  - name: doc
    kind: file
---
"""
VARIANTS = {
    "v1_image_alone_in_system": "system:\nBefore text.\n\n{{photo}}\n\nAfter text.\n\nuser:\nQ",
    "v2_image_in_user_with_text": "system:\nS\n\nuser:\n  Look at this:\n\n  {{photo}}\n\n  What is it?  \n",
    "v3_image_inline_in_line": "user:\nLook: {{photo}} please",
    "v4_image_first_in_user": "user:\n{{photo}}\nWhat is it?",
    "v5_image_then_audio_separate_roles": "user:\n{{photo}}\nassistant:\nok\nuser:\n{{recording}}",
    "v6_file": "user:\nRead {{doc}}",
    "v7_image_only_message_after_user": "user:\nhello\nuser:\n{{photo}}",
    "v8_marker_in_conditional": "user:\n{% if photo %}{{photo}}{% endif %}\nQ",
}
VARIANT_INPUTS = {"photo": "https://example.com/cat.png",
                  "recording": "data:audio/wav;base64,UklGRg==",
                  "doc": "https://example.com/a.pdf"}


def variants():
    import os
    import tempfile
    res = {}
    for name, body in VARIANTS.items():
        with tempfile.NamedTemporaryFile("w", suffix=".prompty", delete=False) as f:
            f.write(VARIANT_HEAD + body)
        try:
            agent = prompty.load(f.name)
            msgs = prompty.prepare(agent, dict(VARIANT_INPUTS))
            res[name] = {"template": body, "messages": dump(msgs),
                         "openai_wire": [_message_to_wire(m) for m in msgs]}
        except Exception as e:  # noqa: BLE001
            res[name] = {"template": body, "error": type(e).__name__, "message": str(e)}
        finally:
            os.unlink(f.name)
    return res


if __name__ == "__main__" and "--variants" in sys.argv:
    print(json.dumps({"inputs": VARIANT_INPUTS, "variants": variants()}, indent=1, ensure_ascii=False))
