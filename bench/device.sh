#!/usr/bin/env bash
# The device benchmark (bench/bench_device.py): icons/s at the quick and default presets, a cold
# `blocklens explain dog`, index images/s, class concepts images/s and dictionary training rows/s, each as a
# ratio to a bare forward+backward floor of the same model and batch measured in the same run; one markdown
# table at the end. Same script on a GPU machine and on a CPU:
#
#   bench/device.sh                    --device auto: cuda when torch sees a GPU (2000 images to index), else cpu
#   bench/device.sh --device cuda:1 --amp      one GPU; the icons also in bfloat16 autocast
#   bench/device.sh --device cpu --sizes cpu   the small CPU sizes (64 images, 8 + 4 icons)
#
# Python: $PYTHON, else .venv/bin/python, else python3 (torch and blocklens importable from it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/bench/bench_device.py" "$@"
