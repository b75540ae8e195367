#!/usr/bin/env bash
# One GPU check in at most 5 minutes: DALI mixed-decode images/s, training-step images/s for the four
# precision/layout variants, evaluation candidates/s at --eval-batch 1024, MFG solve time.
# Runs each bench script with --quick --json, then merges their JSON into one table and one file.
#
#   bash bench/gpu_check.sh [--out runs/gpu_check.json] [--allow-cpu]
#
# --allow-cpu runs the same steps without a GPU (to check the plumbing; the numbers are not GPU numbers).
# Put the printed table in bench/RESULTS.md with the card's name and the date.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT="runs/gpu_check.json"
ALLOW_CPU=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="${2:?--out needs a path}"; shift 2 ;;
        --allow-cpu) ALLOW_CPU=1; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (allowed: --out PATH, --allow-cpu)" >&2; exit 2 ;;
    esac
done

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    if [[ $ALLOW_CPU -eq 0 ]]; then
        echo "gpu_check: error: no CUDA GPU visible to PyTorch ($PY: torch.cuda.is_available() is False);" \
             "this script measures GPU throughput. Use --allow-cpu to run the same steps on CPU." >&2
        exit 2
    fi
    echo "gpu_check: no GPU, running on CPU because of --allow-cpu (the numbers are CPU numbers)"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Evaluation speed does not depend on trained weights: without a trained quickstart supernet, time a
# freshly initialised one (same file format as fastnas.train writes).
CKPT="runs/quickstart_imagenette/supernet/checkpoint.pt"
if [[ ! -f "$CKPT" ]]; then
    CKPT="$WORK/supernet.pt"
    "$PY" -c "
import sys
from fastnas.checkpoint import save_checkpoint
from fastnas.config import load_config
from fastnas.spaces import build_supernet
cfg = load_config('configs/quickstart_imagenette.yaml')
save_checkpoint(sys.argv[1], {'model': build_supernet(cfg.space).state_dict(), 'config': cfg.to_dict(), 'step': 0})
" "$CKPT" || echo "gpu_check: could not write a stand-in supernet checkpoint" >&2
fi

# name | seconds allowed | command (the four budgets sum to 4.5 minutes)
STEPS=(
    "data|60|bench/bench_data.py --quick --json $WORK/data.json"
    "train|90|bench/bench_train.py --quick --json $WORK/train.json"
    "eval|75|bench/bench_eval.py --quick --eval-batch 1024 --checkpoint $CKPT --json $WORK/eval.json"
    "mfg|45|bench/bench_mfg.py --quick --json $WORK/mfg.json"
)
for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<< "$step"
    script="${cmd%% *}"
    echo "gpu_check: $name: $PY $cmd (limit ${limit}s)"
    start=$(date +%s%N)
    if [[ ! -f "$script" ]]; then
        echo "missing: $script does not exist" > "$WORK/$name.err"; rc=127
    else
        # shellcheck disable=SC2086  # cmd is our own word list
        timeout --kill-after=5 "$limit" "$PY" $cmd > "$WORK/$name.out" 2> "$WORK/$name.err"; rc=$?
    fi
    echo "$rc $(( ($(date +%s%N) - start) / 1000000 )) $limit" > "$WORK/$name.status"
done

"$PY" - "$WORK" "$OUT" "${STEPS[@]}" <<'EOF'
"""Merge the benches' JSON files and one-line summaries into one table and one JSON file."""
import json, os, platform, sys, time
from pathlib import Path

work, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), [s.split("|")[0] for s in sys.argv[3:]]
try:
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
except Exception:
    device = "unknown"


def last_line(path):
    lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()] if path.exists() else []
    return lines[-1].strip() if lines else ""


def headline(result):
    """Top-level numbers of a bench's JSON (the throughputs and times it chose to put first)."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


merged = {"device": device, "date": time.strftime("%Y-%m-%d"), "host": platform.node(), "benches": {}}
failed = 0
for name in steps:
    rc, ms, limit = map(int, (work / f"{name}.status").read_text().split())
    entry = {"status": "ok" if rc == 0 else {124: "timeout", 137: "timeout", 127: "missing"}.get(rc, f"failed (exit {rc})"),
             "seconds": round(ms / 1000, 1), "summary": last_line(work / f"{name}.out")}
    if rc != 0:
        failed += 1
        entry["error"] = (f"stopped at its {limit} s limit" if entry["status"] == "timeout" else "") \
            or last_line(work / f"{name}.err")
    if (work / f"{name}.json").exists():
        try:
            entry["result"] = json.loads((work / f"{name}.json").read_text())
            entry["headline"] = headline(entry["result"]) if isinstance(entry["result"], dict) else {}
        except json.JSONDecodeError as e:
            entry["error"] = f"unreadable JSON: {e}"
    merged["benches"][name] = entry

out.parent.mkdir(parents=True, exist_ok=True)
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps(merged, indent=1))
os.replace(tmp, out)

print(f"\n## GPU check: {device}, {merged['date']}\n")
print("| bench | status | s | summary |")
print("|---|---|---|---|")
for name, e in merged["benches"].items():
    text = e["summary"] if e["status"] == "ok" else e.get("error", "")
    print(f"| {name} | {e['status']} | {e['seconds']} | {text.replace('|', '/')} |")
print(f"\ngpu_check: {len(steps) - failed}/{len(steps)} benches ok; JSON: {out}")
sys.exit(1 if failed else 0)
EOF
