#!/usr/bin/env bash
# Every GPU path of fastnas, once, in under 10 minutes on one GPU; one JSON and one log.
#
#   train_bf16  torchrun (1 rank per visible GPU, NCCL) supernet steps in bf16, data through DALI's
#               mixed (GPU) decode in its uint8 path; over two epochs, so the pipeline is reused
#   train_fp16  the same in fp16 with GradScaler: DALI's normalising path
#   search      one generation of the search on the bf16 supernet: DALI's evaluation decode, BN
#               recalibration and scoring on the GPU
#   data, train, eval, mfg   bench_data / bench_train / bench_eval / bench_mfg --quick, GPU forms
#   cuda_tests  the tests that skip without a GPU (CUDA latency table, NVML telemetry of the device in use)
# Telemetry (the progress line's GPU utilisation and memory, from NVML) is collected from the
# training logs. Only the repository is needed (the bundled sample), never ../shared.
#
#   bash bench/gpu_check.sh [--out runs/gpu_check.json] [--allow-cpu] [--dry-run]
#
# --allow-cpu  runs the same steps without a GPU (gloo ranks, CPU DALI): plumbing, not GPU numbers.
# --dry-run    --allow-cpu with every step shrunk to seconds (CI runs it: tests/test_gpu_check.py).
# The log is the JSON's path with .log. Put the printed table in bench/RESULTS.md with the card and date.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT="runs/gpu_check.json"
ALLOW_CPU=0
DRY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="${2:?--out needs a path}"; shift 2 ;;
        --allow-cpu) ALLOW_CPU=1; shift ;;
        --dry-run) ALLOW_CPU=1; DRY=1; shift ;;
        -h|--help) sed -n '2,30p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (allowed: --out PATH, --allow-cpu, --dry-run)" >&2; exit 2 ;;
    esac
done
LOG="${OUT%.json}.log"
set -f          # the commands below are word lists with brackets (space.channels=[16,24]): no globbing

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
if [[ "$GPUS" -eq 0 ]]; then
    if [[ $ALLOW_CPU -eq 0 ]]; then
        echo "gpu_check: error: no CUDA GPU visible to PyTorch ($PY: torch.cuda.is_available() is False);" \
             "this script checks the GPU paths. Use --allow-cpu (or --dry-run) to run the same steps on CPU." >&2
        exit 2
    fi
    echo "gpu_check: no GPU: running on CPU because of --allow-cpu (the numbers are CPU numbers)"
    RANKS=2
else
    RANKS=$GPUS
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Sizes: a GPU gets ImageNet's resolution; a dry run the test suite's tiny space at 32 px.
DATA="data.path=data/imagenette-sample data.backend=dali data.workers=4"
if [[ $DRY -eq 1 ]]; then
    MODEL="space.resolution=32 space.channels=[16,24] space.depths=[2,2] space.strides=[2,2] space.head_channels=64"
    TRAIN="$MODEL train.batch_size=8 train.max_steps=3 data.workers=1"
    SEARCH="search.generations=1 search.population=3 search.elites=1 data.calib_images=16 data.val_images=16 eval.calib_batch=8"
    BENCH_TRAIN="--batch 4 --res 64 --iters 1 --warmup 1"
    BENCH_EVAL="--generations 1 --population 2 --tau-archs 3"
    BENCH_DATA="--rounds 1 --batches 1 --warmup 1 --batch-size 8 --resolution 64"
    BENCH_MFG="--sizes 50 --repeats 1"
else
    # 500 sample images: at least 3 steps an epoch whatever the number of GPUs (7 of 64 on one)
    BATCH=$(( 500 / (RANKS * 3) )); (( BATCH > 64 )) && BATCH=64
    TRAIN="space.resolution=224 train.batch_size=$BATCH train.max_steps=16"
    SEARCH="search.generations=1 search.population=8"
    BENCH_TRAIN="" BENCH_EVAL="" BENCH_DATA="" BENCH_MFG=""
fi
RUN="train.log_every=1 train.ckpt_every=1000 train.deterministic=false"
TRAINER="-m torch.distributed.run --standalone --nproc_per_node=$RANKS -m fastnas.train --config configs/quickstart_imagenette.yaml"

# name | seconds allowed | python arguments (the budgets sum to 9.25 minutes)
STEPS=(
    "train_bf16|90|$TRAINER $DATA $TRAIN $RUN train.precision=bf16 train.run_dir=$WORK/train_bf16"
    "train_fp16|90|$TRAINER $DATA $TRAIN $RUN train.precision=fp16 train.run_dir=$WORK/train_fp16"
    "search|75|-m fastnas.search --config configs/quickstart_imagenette.yaml --checkpoint $WORK/train_bf16/checkpoint.pt --out $WORK/search --eval-batch 1024 $DATA ${MODEL:-} $SEARCH"
    "data|60|bench/bench_data.py --quick $BENCH_DATA --json $WORK/data.json"
    "train|90|bench/bench_train.py --quick $BENCH_TRAIN --json $WORK/train.json"
    "eval|75|bench/bench_eval.py --quick --eval-batch 1024 --checkpoint $WORK/train_bf16/checkpoint.pt $BENCH_EVAL --json $WORK/eval.json"
    "mfg|30|bench/bench_mfg.py --quick $BENCH_MFG --json $WORK/mfg.json"
    "cuda_tests|45|-m pytest -q -p no:cacheprovider tests/test_latency.py tests/test_telemetry.py"
)
mkdir -p "$(dirname "$LOG")" && : > "$LOG"
for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<< "$step"
    echo "gpu_check: $name: $PY $cmd (limit ${limit}s)" | tee -a "$LOG"
    start=$(date +%s%N)
    # shellcheck disable=SC2086  # cmd is our own word list
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} timeout --kill-after=5 "$limit" "$PY" $cmd > "$WORK/$name.out" 2> "$WORK/$name.err"
    rc=$?
    echo "$rc $(( ($(date +%s%N) - start) / 1000000 )) $limit" > "$WORK/$name.status"
    { cat "$WORK/$name.out" "$WORK/$name.err"; echo "gpu_check: $name: exit $rc"; echo; } >> "$LOG"
done

"$PY" - "$WORK" "$OUT" "$LOG" "$RANKS" "$DRY" "${STEPS[@]}" <<'EOF'
"""Merge the steps' JSON files, summaries and telemetry lines into one table and one JSON file."""
import json, os, platform, re, sys, time
from pathlib import Path

sys.path.insert(0, os.getcwd())
from fastnas.atomic import write_json_atomic

work, out, log, ranks, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
steps = [s.split("|")[0] for s in sys.argv[6:]]
try:
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
except Exception:
    device = "unknown"


def lines_of(path):
    return [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()] if path.exists() else []


def last_line(path):
    lines = lines_of(path)
    return lines[-1] if lines else ""


def training(name):
    """From a training log: the last progress line's images/s, and the telemetry (gpu) lines."""
    progress = [l for l in lines_of(work / f"{name}.out") if l.startswith("step ")]
    speed = [float(m.group(1)) for l in progress for m in [re.search(r"([\d.]+) img/s", l)] if m]
    return {"steps_logged": len(progress), "img_per_s": speed[-1] if speed else None,
            "telemetry": [l for l in progress if " gpu " in l][-3:]}


merged = {"device": device, "ranks": ranks, "dry_run": dry, "date": time.strftime("%Y-%m-%d %H:%M"),
          "host": platform.node(), "log": log, "benches": {}}
failed = 0
for name in steps:
    rc, ms, limit = map(int, (work / f"{name}.status").read_text().split())
    entry = {"status": "ok" if rc == 0 else {124: "timeout", 137: "timeout"}.get(rc, f"failed (exit {rc})"),
             "seconds": round(ms / 1000, 1), "summary": last_line(work / f"{name}.out")}
    if rc != 0:
        failed += 1
        errors = [l for l in lines_of(work / f"{name}.err") if "error" in l.lower()]
        entry["error"] = (f"stopped at its {limit} s limit" if entry["status"] == "timeout" else "") \
            or (errors[-1] if errors else last_line(work / f"{name}.err"))
    if name.startswith("train_"):
        entry.update(training(name))
        if device.startswith("CPU") is False and not entry["telemetry"]:
            entry["telemetry_missing"] = "no progress line carried NVML's gpu utilisation and memory"
    if (work / f"{name}.json").exists():
        try:
            entry["result"] = json.loads((work / f"{name}.json").read_text())
        except json.JSONDecodeError as e:
            entry["error"] = f"unreadable JSON: {e}"
    merged["benches"][name] = entry

write_json_atomic(out, merged)
print(f"\n## GPU check: {device} x {ranks}{' (dry run)' if dry else ''}, {merged['date']}\n")
print("| step | status | s | summary |")
print("|---|---|---|---|")
for name, e in merged["benches"].items():
    text = e["summary"] if e["status"] == "ok" else e.get("error", "")
    if e.get("telemetry"):
        text += f" [telemetry: {e['telemetry'][-1].split('  gpu ')[-1]}]"
    print(f"| {name} | {e['status']} | {e['seconds']} | {text.replace('|', '/')} |")
print(f"\ngpu_check: {len(steps) - failed}/{len(steps)} steps ok; JSON: {out}; log: {log}")
sys.exit(1 if failed else 0)
EOF
