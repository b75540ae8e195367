"""fastnas: evolutionary one-shot NAS for ImageNet (DALI + DDP supernet, mean-field-game selection)."""
from setuptools import setup

setup(
    name="fastnas",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    # kernels/ ships inside the package as fastnas.kernels: no top-level `kernels` in site-packages.
    packages=["fastnas", "fastnas.data", "fastnas.kernels"],
    package_dir={"fastnas": "fastnas", "fastnas.kernels": "kernels"},
    install_requires=[
        "torch>=2.4",                 # autocast bf16 on CPU, fused SGD, FlopCounterMode
        "torchvision>=0.19",          # decode_jpeg / v2 transforms for the torchvision backend
        "numpy>=1.24",
        "numba>=0.59",                # compiled MFG equilibrium kernels
        "nvidia-dali-cuda130>=2.0",   # JPEG decoding pipeline (GPU mixed decode, CPU-only without GPU)
        "nvidia-ml-py>=12",           # `import pynvml`: GPU utilisation/memory telemetry
        "pyyaml>=6",                  # configs
        "matplotlib>=3.7",            # Pareto-front and architecture pictures of a search
        "pillow>=9",                  # image checks of `fastnas.data check` (CMYK, PNG-in-JPEG, truncation)
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "scipy>=1.10",            # property 2: the equilibrium equals a general optimiser's maximiser
            "onnx>=1.15",             # export test
            "onnxruntime>=1.17",      # ONNX output vs PyTorch
        ],
    },
)
