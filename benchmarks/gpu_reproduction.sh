#!/usr/bin/env bash
# GPU reproduction (issue 8, item 3), sized for one 10-minute call on one H100/H200:
# ResNet-18 (CIFAR stem) on CIFAR-10-LT (ratio 100) pretrained with mv_simclr K=2, mv_simclr K=4
# and mttv for the same number of steps, fed by the DALI GPU loader (nvJPEG + GPU augmentation),
# bf16-mixed, channels_last; then the linear probe and kNN on the GPU; prints one table
# (benchmarks/k_views_proxy.py does the work; its CPU defaults are swapped for GPU ones here).
#
#   bash benchmarks/gpu_reproduction.sh [DATA (ImageFolder CIFAR-10 JPEGs)] [OUT]
set -euo pipefail
DATA=${1:-../shared/data/cifar10}
OUT=${2:-benchmarks/results/gpu}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')"
python benchmarks/k_views_proxy.py --data "$DATA" --out "$OUT" --seeds 0 \
    --runs simclr_k2 simclr_k4 mttv --backbone resnet18 --crop 32 --batch 512 --steps 600 \
    --precision bf16-mixed --accelerator gpu --dali-device gpu --eval-device cuda --workers 8
