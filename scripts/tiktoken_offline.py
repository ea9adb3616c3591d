"""Make OpenAI's `tiktoken` work offline.

tiktoken downloads its BPE files on first use and caches them under
TIKTOKEN_CACHE_DIR, named by the SHA-1 of their URL. The `tiktoken-rs` crate
(our dev-dependency) ships the very same files (tiktoken checks their SHA-256
when it loads them), so we seed the cache from it.

    import tiktoken_offline; tiktoken_offline.seed()
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
ENCODINGS = ["cl100k_base", "o200k_base"]


def _assets() -> pathlib.Path:
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1"], cwd=ROOT, text=True
        )
    )
    for package in meta["packages"]:
        if package["name"] == "tiktoken-rs":
            return pathlib.Path(package["manifest_path"]).parent / "assets"
    raise SystemExit("tiktoken-rs is not among the dependencies (run `cargo fetch`)")


def seed() -> pathlib.Path:
    cache = ROOT / "target" / "tiktoken-cache"
    cache.mkdir(parents=True, exist_ok=True)
    assets = _assets()
    for name in ENCODINGS:
        key = hashlib.sha1(URL.format(name).encode()).hexdigest()
        target = cache / key
        if not target.exists():
            shutil.copyfile(assets / f"{name}.tiktoken", target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


if __name__ == "__main__":
    print(seed())
