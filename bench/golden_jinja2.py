#!/usr/bin/env python3
"""The peer of `benches/suite.rs`: the same 1,000 prompt tests hand-rolled
in Python, as teams write them today (Jinja2 renders, role lines split by a
regular expression, assertions, tiktoken counts, golden JSON files). Run
with target/bench-venv/bin/python; prints the in-process time of the run
and of the whole process.

    target/bench-venv/bin/python bench/golden_jinja2.py
"""

import json
import os
import re
import sys
import tempfile
import time

PROCESS_START = time.perf_counter()


def offline_tiktoken_cache():
    """tiktoken downloads its BPE file; offline, give it tiktoken-rs's copy
    (the same file) through its cache (named by the SHA-1 of the URL)."""
    import glob
    import hashlib
    import shutil

    cache = os.path.join(os.path.dirname(__file__), "..", "target", "tiktoken-cache")
    os.makedirs(cache, exist_ok=True)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", cache)
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    target = os.path.join(os.environ["TIKTOKEN_CACHE_DIR"], hashlib.sha1(url.encode()).hexdigest())
    if not os.path.exists(target):
        found = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets/o200k_base.tiktoken"))
        if found:
            shutil.copy(found[0], target)


offline_tiktoken_cache()
import jinja2  # noqa: E402
import tiktoken  # noqa: E402

TEMPLATES, TESTS_EACH = 100, 10
ROLE = re.compile(r"^(system|user|assistant):\s*$", re.M)


def sources():
    partial = "Be concise, warm and concrete.\n"
    out = {"partials/tone": partial}
    for i in range(TEMPLATES):
        out[f"t/p{i:03}"] = (
            f"system:\nYou are triage assistant number {i}.\n{{% include 'partials/tone' %}}\n"
            "Classify the ticket into one of: {{ queues|join(\", \") }}.\n"
            "user:\n{{ ticket }}\n"
        )
    return out


def split(text):
    parts = ROLE.split(text)
    messages = []
    for k in range(1, len(parts), 2):
        messages.append({"role": parts[k], "content": parts[k + 1].strip("\n")})
    return messages


def main():
    enc = tiktoken.get_encoding("o200k_base")
    env = jinja2.Environment(loader=jinja2.DictLoader(sources()), keep_trailing_newline=True)
    golden = tempfile.mkdtemp()
    started = time.perf_counter()
    failures = 0
    for i in range(TEMPLATES):
        template = env.get_template(f"t/p{i:03}")
        for j in range(TESTS_EACH):
            inputs = {"ticket": f"Ticket {j}: I was charged twice for order {i}-{j}.",
                      "queues": ["billing", "technical", "other"]}
            if not isinstance(inputs["ticket"], str) or not inputs["ticket"]:
                failures += 1
            messages = split(template.render(**inputs))
            whole = "\n".join(m["content"] for m in messages)
            tokens = 3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"]))
                             for m in messages)
            ok = ([m["role"] for m in messages] == ["system", "user"]
                  and "charged twice" in whole
                  and re.search(r"order \d+-\d+", whole)
                  and "{{" not in whole
                  and tokens <= 500)
            if j == 0:
                path = os.path.join(golden, f"p{i:03}.json")
                text = json.dumps({"messages": messages, "tokens": tokens}, indent=2) + "\n"
                if os.path.exists(path):
                    ok = ok and open(path).read() == text
                else:
                    with open(path, "w") as f:
                        f.write(text)
            failures += not ok
    run = time.perf_counter() - started
    print(f"jinja2 golden tests: {TEMPLATES * TESTS_EACH} tests, {failures} failed, "
          f"run {run * 1e3:.1f} ms, process {(time.perf_counter() - PROCESS_START) * 1e3:.0f} ms")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
