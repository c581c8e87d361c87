#!/usr/bin/env bash
# GPU check: the full-size AVSyncD recipe on one GPU, in one command (about 3-5 min on one H100/H200; it
# stops itself after GPU_CHECK_TIMEOUT_S, default 480 s, keeping what it measured). Never run in CI, never
# a test. What it runs (bench/gpu_check.py's module doc has the details):
#
#   * train            full-size AVSyncD training steps through Ray Train's TorchTrainer, DeepSpeed ZeRO-2,
#                      bf16, 1 GPU, synthetic latents of the paper's geometry (12x32x32 latents, 229 audio
#                      tokens, 77 text tokens; micro-batch 4 x 2 accumulation): samples/s, achieved TFLOP/s,
#                      MFU against the GPU's bf16 peak, peak memory;
#   * train_grad_ckpt  the same with gradient checkpointing (the paper's setting);
#   * sampling         one full-size 50-step PNDM sampling with audio CFG 4 (bf16); sampling_fp32: in fp32;
#   * online_data      the online data path (decode + VAE + audio encoder) for 12 synthetic clips on the GPU.
#
# Weights are random init (no pretrained weights are available here): timings and memory are those of the
# real shapes, losses and videos mean nothing. Nothing touches S3 or MLflow; a local Ray is started.
#
#   bash bench/gpu_check.sh                       # everything; figures on stdout and in JSON
#   bash bench/gpu_check.sh --only sampling       # one section (train, train_grad_ckpt, sampling, ...)
#   bash bench/gpu_check.sh --tiny                # the same code on CPU with the tiny model (dry run)
#   bash bench/gpu_check.sh --set train.batch_size_per_worker=8   # any config override
#
# Python: .venv/bin/python when there is one, else python3. Missing packages are installed first: from
# wheels in .whl/ when that folder exists (no index, no deps: a machine without network), else
# `pip install -e .` (and torch from the default index only if `import torch` fails, so a machine's CUDA
# torch is kept). Without Ray the training sections run in-process (--no-ray: the same step function, no
# TorchTrainer) and say so. Results: $OUT/gpu_check.json (and the log $OUT/gpu_check.log) when $OUT is
# set, else bench/results/gpu_check.json. Exit status 1 if any section failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

export PYTHONUNBUFFERED=1
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
unset DS_ACCELERATOR  # gpu_check.py sets it (cuda, or cpu with --tiny)

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi

missing() {  # the packages the sections import that this Python lacks
  "$PY" - <<'EOF'
import importlib.util
need = ["torch", "ray", "deepspeed", "diffusers", "av", "soxr", "yaml", "pyarrow", "scipy", "safetensors", "psutil"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
}

miss="$(missing)"
if [ -n "$miss" ]; then
  echo "gpu_check: missing Python packages: $miss; installing"
  if compgen -G ".whl/*.whl" >/dev/null; then
    site=/tmp/asva-gpu-check-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
      || echo "gpu_check: installing the wheels in .whl/ failed"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    if [[ " $miss " == *" torch "* ]]; then
      "$PY" -m pip install -q --retries 1 --timeout 20 torch || echo "gpu_check: pip install torch failed"
    fi
    "$PY" -m pip install -q --retries 1 --timeout 20 -e . || echo "gpu_check: pip install -e . failed"
  fi
  miss="$(missing)"
fi

extra=()
if [[ " $miss " == *" torch "* ]]; then
  echo "gpu_check: torch is not importable by $PY; nothing can run" >&2
  exit 1
fi
if [[ " $miss " == *" ray "* ]]; then
  echo "gpu_check: WARNING: ray is not importable: the training sections run in-process (--no-ray), not through TorchTrainer"
  extra+=(--no-ray)
fi
[ -n "$miss" ] && echo "gpu_check: still missing: $miss (the sections that need them will fail)"

"$PY" -c 'import torch; print(f"gpu_check: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))'

cmd=(timeout -k 15 "${GPU_CHECK_TIMEOUT_S:-480}" "$PY" -m bench.gpu_check ${extra[@]+"${extra[@]}"} "$@")
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  "${cmd[@]}" 2>&1 | tee "$OUT/gpu_check.log"
else
  "${cmd[@]}"
fi
