import numpy as np

from fastnas.config import SpaceConfig
from fastnas.report import draw_architecture, pareto_front, plot_pareto
from fastnas.spaces.mbconv import MBConvSpace


def test_pareto_front_is_the_non_dominated_set():
    rng = np.random.default_rng(0)
    macs, top1 = rng.uniform(1, 50, 200), rng.normal(size=200)          # no ties
    front = set(pareto_front(macs, top1).tolist())
    for i in range(200):
        dominated = np.any((macs < macs[i]) & (top1 > top1[i]))
        assert (i in front) == (not dominated)


def test_pictures_are_written(tmp_path):
    space = MBConvSpace(SpaceConfig())
    arch = space.sample(np.random.default_rng(0))
    draw_architecture(space, arch, tmp_path / "arch.png")
    plot_pareto([3e8, 2e8, 4e8], [70.0, 65.0, 72.0], tmp_path / "pareto.png", best=2)
    for name in ("arch.png", "pareto.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
