#!/usr/bin/env bash
# The GPU rows of docs/RESULTS.md in one call on a lent GPU machine (NVIDIA H200, JAX backend),
# in under 10 minutes:
#   1. sim_speed: VGG16-CIFAR, K = 8, T = 256, batch 512: ANN, period and step mode in one
#      run, and peak GPU memory at T = 256 and 1024;
#   2. peer_compare: the full grid (bsnn, phase, rate, SpikingJelly 99.99% and Max; all
#      images; T = 8 ... 1024), ResNet-20, then LeNet-5;
#   3. time_to_accuracy: every method at its own T*, read from step 2's results;
#   4. imagenet_timing: ResNet-34 (random weights) on 96 images of the ImageNet sample
#      (gpu_prepare.sh stores them decoded, to fit the carry): conversion, then s/image
#      at T = (D + 1) K, the first readout, and 2 (D + 1) K, with the CLI's simulation;
#   5. finetune_resnet20 (only when named, or in --smoke): finetune_study, akamaster's
#      ResNet-20 fine-tuned at K = 4 and 3 with the defaults (issue 22's GPU timing);
#   6. imagenet_folder (only when named, or in --smoke): the mission's command, ResNet-34,
#      on an ImageNet folder of 4,000 images built from the carried JPEGs, streamed; its
#      wall time and peak RSS, and from them the 50,000-image estimate.
# Each step merges its JSON into $OUT (sim_speed.json, peer_compare.json,
# time_to_accuracy.json, imagenet_timing.json, finetune_study.json, starting from the
# repository's own files, so they can replace benchmarks/results/*.json as they are), with
# the log gpu_rows.log. Back here:
#   cp <files_at>/*.json benchmarks/results/ && python benchmarks/<script>.py --report
# A step that fails or runs past its time limit does not stop the others (what it stored
# stays); the script then exits non-zero, naming it. Each step has a time limit, and all
# end by 9 min 25 s after the start; naming steps runs only those (a second call for what
# a first one missed, after copying its JSON into benchmarks/results/ here).
#
# On the GPU machine (Python 3.12 with JAX+CUDA and PyTorch; no TensorFlow, no Keras, no
# network), it installs the carried wheels and reads the carried data. First, here:
#   bash benchmarks/gpu_prepare.sh
# then the device tool's run with carry ["wheels", "gpu_data"] and the command
#   bash benchmarks/gpu_rows.sh
# and, in calls of their own, bash benchmarks/gpu_rows.sh finetune_resnet20 and
# bash benchmarks/gpu_rows.sh imagenet_folder.
#
# --smoke: the same steps on the CPU with JAX, tiny (a few images, T <= 16, batch 2),
# with `import tensorflow` made to fail as on the GPU machine; JSON into a temporary
# folder. CI runs it (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
steps=()
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=true ;;
        sim_speed|peer_compare_resnet20|peer_compare_lenet5|time_to_accuracy|imagenet_timing|\
        finetune_resnet20|imagenet_folder)
            steps+=("$arg") ;;
        *) echo "usage: bash benchmarks/gpu_rows.sh [--smoke] [STEP...]; steps: sim_speed" \
                "peer_compare_resnet20 peer_compare_lenet5 time_to_accuracy imagenet_timing" \
                "finetune_resnet20 imagenet_folder" >&2
           exit 2 ;;
    esac
done
if ((${#steps[@]} == 0)); then
    steps=(sim_speed peer_compare_resnet20 peer_compare_lenet5 time_to_accuracy imagenet_timing)
    # on the GPU a call of its own (the others take the whole call), in the smoke run all
    if $smoke; then steps+=(finetune_resnet20 imagenet_folder); fi
fi
python="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch (SpikingJelly) share the GPU
export BSNN_PLOTS_DIR="$scratch/plots"      # --report redraws docs/ plots here, not in docs/
# Compiled programs are kept on disk, so later processes (memory probes, the second and
# third benchmark on the same models) skip compilations already done; timings exclude
# compilation anyway (every benchmark warms up first).
export JAX_COMPILATION_CACHE_DIR="$scratch/jax_cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

if $smoke; then
    out="$scratch/out"
    mkdir -p "$out" "$scratch/no_tensorflow"
    # As on the GPU machine: TensorFlow (and tensorflow-datasets) cannot be imported.
    printf 'import sys\nsys.modules["tensorflow"] = None\nsys.modules["tensorflow_datasets"] = None\n' \
        >"$scratch/no_tensorflow/sitecustomize.py"
    export PYTHONPATH="$scratch/no_tensorflow${PYTHONPATH:+:$PYTHONPATH}"
    if [[ -z "${BSNN_DATA_DIR:-}" ]]; then
        for candidate in gpu_data ../shared/data; do
            if [[ -f "$candidate/cifar10_test_lossless.npz" ]]; then
                export BSNN_DATA_DIR="$PWD/$candidate"
                break
            fi
        done
    fi
    # tiny: VGG16 at batch 2, T 16 (memory probes at 8 and 16); 4 LeNet-5 and ResNet-20
    # images, T <= 8, 32 calibration images; on ResNet-20 one method of each library
    # (its torch copy and its bsnn_tf conversion), the time-to-accuracy logic on LeNet-5
    sim_args=(--smoke --phases 8)
    peer_args=(--limit 4 --max_timesteps 8 --calibration_size 32)
    resnet20_methods=(bsnn spikingjelly:Max)
    tta_args=(--smoke --models lenet5)
    imagenet_args=(--smoke)
    # K = 3 alone, 300 training images (the fewest fine-tuning takes; 32 for the percentile), 2
    # epochs, 16 test images, one period
    finetune_args=(--phases 3 --images 300 --epochs 2 --calibration_size 32 --limit 16 --periods 1
                   --statistics_images 4 --tag " smoke")
    folder_args=(--smoke)
    limits=(900 900 900 900 900 900 900)  # guards against a hang only: CI may share its cores
    deadline=$((SECONDS + 3000))
else
    out="${OUT:?gpu_rows.sh writes its results under \$OUT (set by the device tool)}"
    [[ -d wheels && -d gpu_data ]] || {
        echo "wheels/ or gpu_data/ missing: run benchmarks/gpu_prepare.sh here and carry both" >&2
        exit 1
    }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$scratch/site" wheels/*.whl
    export PYTHONPATH="$scratch/site${PYTHONPATH:+:$PYTHONPATH}"
    export BSNN_DATA_DIR="$PWD/gpu_data"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$python" -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())'
    sim_args=(--batch 512 --timesteps 256 --phases 8 --memory_timesteps 256 1024)
    peer_args=()
    tta_args=()
    imagenet_args=(--images 64 --calibration_size 32 --batch 32 --multiples 1 2)
    finetune_args=(--phases 4 3 --tag " lr1e-4 150k 20k rate30 mse2048-start gpu")
    # seconds per step, cut to what is left before the deadline; the first H200 run
    # (2026-11-30) took 60, 220 (SpikingJelly's two modes 165 of it), 75, 96 and 37 s
    # (ImageNet at T = (D + 1) K alone)
    # finetune_resnet20 (run alone, by name): not yet timed on a GPU; the issue's GPU runs
    # took 25-35 s per fine-tune, and the calibration statistics run in numpy
    # imagenet_folder (alone, by name): the H200's 0.07 s/image at T = 136, batch 32
    # (2026-11-30) makes 4,000 images about 5 min
    folder_args=(--images 4000 --timesteps 136 --batch_size 128)
    limits=(80 235 85 105 60 540 540)
    deadline=$((SECONDS + 565))  # the setup above took seconds; the whole call < 10 min
fi
export BSNN_RESULTS_DIR="$out"
log="$out/gpu_rows.log"
for name in sim_speed peer_compare time_to_accuracy imagenet_timing finetune_study imagenet_folder; do
    if [[ -f "benchmarks/results/$name.json" ]]; then
        cp "benchmarks/results/$name.json" "$out/"
    fi
done

# the open rows first (bsnn_tf's step-mode baselines on all images), SpikingJelly last
methods=(rate phase bsnn spikingjelly:99.99% spikingjelly:Max)
if ! "$python" -c "import spikingjelly.activation_based.ann2snn" 2>/dev/null; then
    $smoke || { echo "spikingjelly is not importable: carry its wheel (gpu_prepare.sh)" >&2; exit 1; }
    echo "spikingjelly is not importable here: the smoke run leaves out its methods" | tee -a "$log"
    methods=(rate phase bsnn)
    resnet20_methods=(bsnn)
fi
$smoke || resnet20_methods=("${methods[@]}")

failed=()
step() {  # step NAME SECONDS COMMAND...: runs COMMAND if NAME was asked for, logs it, notes a failure
    local name="$1" seconds="$2" start=$SECONDS status=0
    shift 2
    [[ " ${steps[*]} " == *" $name "* ]] || return 0
    if ((deadline - SECONDS < seconds)); then seconds=$((deadline - SECONDS)); fi
    if ((seconds < 10)); then
        echo "== $name: skipped, no time left" | tee -a "$log"
        failed+=("$name (no time left)")
        return 0
    fi
    echo "== $name (limit ${seconds} s): $*" | tee -a "$log"
    timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$log" || status=$?
    echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$log"
    if ((status)); then failed+=("$name (exit $status)"); fi
}

# sim_speed at the backend's default precision (TF32 convolutions on the GPU), ANN and SNN
# alike; the accuracy benchmarks in exact float32 (JAX and torch), since they check the
# Keras ANN and its torch copy against the published accuracy image for image.
step sim_speed "${limits[0]}" "$python" benchmarks/sim_speed.py "${sim_args[@]}"
exact=(env JAX_DEFAULT_MATMUL_PRECISION=highest "$python")
step peer_compare_resnet20 "${limits[1]}" "${exact[@]}" benchmarks/peer_compare.py \
    --models resnet20 --methods "${resnet20_methods[@]}" "${peer_args[@]}"
step peer_compare_lenet5 "${limits[2]}" "${exact[@]}" benchmarks/peer_compare.py \
    --models lenet5 --methods "${methods[@]}" "${peer_args[@]}"
step time_to_accuracy "${limits[3]}" "${exact[@]}" benchmarks/time_to_accuracy.py \
    --methods "${methods[@]:0:4}" "${tta_args[@]}"
step imagenet_timing "${limits[4]}" "$python" benchmarks/imagenet_timing.py "${imagenet_args[@]}"
step finetune_resnet20 "${limits[5]}" "$python" benchmarks/finetune_study.py \
    --models akamaster20 "${finetune_args[@]}"
step imagenet_folder "${limits[6]}" "$python" benchmarks/imagenet_folder.py "${folder_args[@]}"

rm -f "$out"/*.lock "$out"/*.json.tmp
echo "results in $out: $(ls "$out" | tr '\n' ' ')"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" | tee -a "$log" >&2
    exit 1
fi
echo "all steps passed" | tee -a "$log"
