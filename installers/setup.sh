#!/usr/bin/env bash
# Set up ArtForge in ./.venv, fetch the embedded model, then start a server and stream a
# scene description from it: the whole path, on the embedded defaults.
#
#   bash installers/setup.sh             # set up and run the demo
#   bash installers/setup.sh --no-demo   # set up only (the test command uses this)
#
# PyTorch: `torch==2.13.0` by default. Set ARTFORGE_TORCH_INDEX to the wheel index PyTorch's
# install page gives for your CUDA version to get the CUDA build, or for its CPU-only build on
# machines where the default index would pull CUDA.
#
# ONNX Runtime: the CPU packages (onnxruntime, onnxruntime-genai) by default; the CUDA ones
# (onnxruntime-gpu, onnxruntime-genai-cuda) with ARTFORGE_GPU=1, or when ARTFORGE_TORCH_INDEX
# names a CUDA build. The two families install the same module, so the other one is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
[[ "${1:-}" == "--no-demo" ]] && demo=0

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "ArtForge needs Python 3.11 or newer; set PYTHON=" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first and on its own, so the project's `torch>=2.4` finds it satisfied.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  echo "installing PyTorch ${ARTFORGE_TORCH_VERSION:-2.13.0}" >&2
  "${pip[@]}" "torch==${ARTFORGE_TORCH_VERSION:-2.13.0}" ${ARTFORGE_TORCH_INDEX:+--index-url "$ARTFORGE_TORCH_INDEX"}
fi
flavour=cpu other=(onnxruntime-gpu onnxruntime-genai-cuda)
if [[ "${ARTFORGE_GPU:-0}" == 1 || "${ARTFORGE_TORCH_INDEX:-}" == */cu* ]]; then
  flavour=gpu other=(onnxruntime onnxruntime-genai)
fi
.venv/bin/python -m pip uninstall --quiet --yes "${other[@]}" 2>/dev/null || true
echo "installing ArtForge (ONNX Runtime for $flavour)" >&2
"${pip[@]}" -e ".[$flavour,bench,cluster,dev]"

echo "fetching the embedded models" >&2
.venv/bin/artforge models fetch
echo "exporting the embedded text model to ONNX (int4, once; about 20 s)" >&2
.venv/bin/artforge onnx export

[[ $demo == 1 ]] || exit 0

out=$(mktemp -d)
.venv/bin/artforge serve --port 0 >"$out/stdout" 2>"$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$out"' EXIT
echo "starting a server (the first start converts the model once, about a minute)" >&2
until grep -q '^artforge: serving on ' "$out/stdout"; do
  kill -0 $server 2>/dev/null || { echo "the server did not start:" >&2; tail -20 "$out/server.log" >&2; exit 1; }
  sleep 0.5
done
address=$(sed -n 's/^artforge: serving on //p' "$out/stdout")
echo "server ready on $address; a scene description, streamed:" >&2
echo
.venv/bin/artforge text --address "$address" --task scene_description --seed 42 --max-tokens 200 \
  "An abandoned greenhouse at dawn: broken glass panes, a rusted iron frame, ferns and a fig tree \
growing wild, a wooden workbench with clay pots, low golden sunlight through mist."
