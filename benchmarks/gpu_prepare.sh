#!/usr/bin/env bash
# Fills wheels/ and gpu_data/ (both git-ignored through .git/info/exclude) with what
# benchmarks/gpu_rows.sh needs on the lent GPU machine, which has Python 3.12, JAX with
# CUDA and PyTorch, but no TensorFlow, no Keras and no network:
#   wheels/    keras, namex, optree (the Keras requirements that machine lacks; the others,
#              absl-py, h5py, ml-dtypes, numpy, packaging, rich, are there) and
#              spikingjelly + loguru (SpikingJelly's ann2snn needs no more beside torch);
#              the versions installed here, built for CPython 3.12 on x86-64 Linux;
#   gpu_data/  the data files the third-party benchmarks read (../shared/data does not travel),
#              and the first 96 images of the ImageNet sample, decoded to the stored 256 x 256
#              (the JPEG shards, 2 x 54 MB, do not fit), for the ResNet-34 timing; and the
#              original JPEG bytes of its first 64 images (imagenet_jpegs.npz), from which
#              benchmarks/imagenet_folder.py builds its ImageNet folder there.
# Then checks that what the device tool sends (tracked and untracked-not-ignored files
# plus the two carried folders) stays under its 64 MiB.
#
# Usage (from anywhere in the checkout):  bash benchmarks/gpu_prepare.sh
# then, with the device tool: run(carry=["wheels", "gpu_data"], command="bash benchmarks/gpu_rows.sh")
set -euo pipefail
cd "$(dirname "$0")/.."

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for folder in /wheels/ /gpu_data/; do
    grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >>"$exclude"
done

version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf wheels && mkdir wheels
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels \
    "keras==$(version keras)" "namex==$(version namex)" "optree==$(version optree)" \
    "spikingjelly==2.0.0" "loguru>=0.7,<1"

data_dir="${BSNN_DATA_DIR:-}"
if [[ -z "$data_dir" ]]; then
    for candidate in ../shared/data; do
        [[ -f "$candidate/cifar10_test_lossless.npz" ]] && data_dir="$candidate" && break
    done
fi
[[ -n "$data_dir" ]] || { echo "no shared data folder found; set BSNN_DATA_DIR" >&2; exit 1; }
rm -rf gpu_data && mkdir gpu_data
# ResNet-20: the lossless test subset and the (JPEG) training split it calibrates on;
# LeNet-5: the MNIST test and training splits.
for name in cifar10_test_lossless cifar10_train mnist_test mnist_train; do
    cp "$data_dir/$name.npz" gpu_data/
done
python - "$data_dir" gpu_data/imagenet_sample_0.npz <<'PYTHON'
import sys
import numpy as np
from bsnn_tf import data
images = data.find("imagenet", "test", data_dir=sys.argv[1])
count = 96
np.savez_compressed(sys.argv[2], x_test=images.pixels(range(count)),
                    y_test=np.asarray(images.labels[:count], np.int16))
shard = np.load(f"{sys.argv[1]}/imagenet_sample_0.npz")
jpegs, end = 64, int(shard["test_offsets"][64])
np.savez(sys.argv[2].replace("imagenet_sample_0", "imagenet_jpegs"),
         test_jpeg=shard["test_jpeg"][:end], test_offsets=shard["test_offsets"][:jpegs + 1],
         test_wnids=shard["test_wnids"][:jpegs])
PYTHON

sent=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null \
          | tail -1 | cut -f1; du -sb wheels gpu_data | cut -f1; } | paste -sd+ | bc)
echo "wheels: $(ls wheels | tr '\n' ' ')"
echo "sent to the device: $((sent / 1024 / 1024)) MiB of 64 (wheels $(du -sh wheels | cut -f1)," \
     "gpu_data $(du -sh gpu_data | cut -f1))"
if (( sent >= 64 * 1024 * 1024 )); then
    echo "over the device tool's 64 MiB" >&2
    exit 1
fi
