"""The whole job on the bundled sample: supernet training -> evolutionary search -> export.

    python -m fastnas.quickstart [--config configs/quickstart.yaml] [--nproc 2] [--fresh]

Each step is the real command a user would type (2-process torchrun for training), run one after
another; a step that finds its outputs already complete resumes or returns at once, so a second
run is quick. `--fresh` deletes the quickstart's run folder first.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fastnas.config import REPO_ROOT, load_config
from fastnas.errors import UserError, cli_entry


def _run(title: str, cmd: list[str], env: dict | None = None) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise UserError(f"step '{title}' failed with exit code {result.returncode} (command above)")
    print(f"=== {title}: done in {time.perf_counter() - start:.0f} s", flush=True)


def _export_dir(cfg) -> Path:
    return Path(cfg.search.out_dir).parent / "export"


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnas.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--nproc", type=int, default=2, help="training processes (torchrun --nproc_per_node)")
    p.add_argument("--fresh", action="store_true", help="delete earlier quickstart outputs first")
    args = p.parse_args(argv)

    cfg = load_config(args.config)
    if args.fresh:                       # only the folders this job writes, never their parents
        for folder in (cfg.train.run_dir, cfg.search.out_dir, _export_dir(cfg)):
            shutil.rmtree(REPO_ROOT / folder, ignore_errors=True)
    py = sys.executable
    export_dir = _export_dir(cfg)
    best = Path(cfg.search.out_dir) / "best.json"
    start = time.perf_counter()
    # The training processes share the cores: an equal share of threads each, no oversubscription.
    threads = str(max(1, (os.cpu_count() or 2) // args.nproc))
    _run("1/3 train the supernet", [py, "-m", "torch.distributed.run", "--standalone",
                                     f"--nproc_per_node={args.nproc}", "-m", "fastnas.train", "--config", args.config],
         env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)})
    _run("2/3 search", [py, "-m", "fastnas.search", "--config", args.config])
    _run("3/3 export", [py, "-m", "fastnas.export", "--arch", str(best), "--supernet", cfg.eval.checkpoint,
                        "--out", str(export_dir)])
    search_dir = Path(cfg.search.out_dir)
    print(f"\nquickstart finished in {time.perf_counter() - start:.0f} s. Outputs:")
    for label, path in [("supernet checkpoint", cfg.eval.checkpoint),
                        ("best architecture", best),
                        ("every candidate", search_dir / "history.csv"),
                        ("Pareto front", search_dir / "pareto.png"),
                        ("architecture picture", search_dir / "best_arch.png"),
                        ("exported model", export_dir)]:
        print(f"  {label:22s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
