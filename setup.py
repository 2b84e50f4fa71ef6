"""bsnn_tf: Keras 3 ANN-to-SNN conversion with bistable spiking neurons (BSNN)."""

from setuptools import find_packages, setup

setup(
    name="bsnn_tf",
    version="0.1.0",
    description="Convert Keras image classifiers into bistable spiking neural networks "
                "and simulate them fast (Li, Zhao & Zeng 2022).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bsnn_tf", "bsnn_tf.*"]),
    package_data={"bsnn_tf": ["demo/*.npz", "demo/*.keras", "demo/*.json", "demo/*.md"]},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets",
        # tensorflow-datasets imports it to download, but declares it only for Python < 3.9.
        "importlib_resources",
        "numpy",
        "absl-py",
        # tf.summary needs it: TensorFlow no longer installs TensorBoard itself.
        "tensorboard",
        "matplotlib",  # accuracy-vs-T and firing-rate plots
        "pillow",  # decodes the JPEG datasets
        "h5py",  # reads Keras 2 HDF5 checkpoints
    ],
    extras_require={
        "dev": [
            "pytest",
            # Runs the tests on both cores (a file's tests stay on one worker, so its
            # module fixtures are built once): the suite is mostly single-threaded Python.
            "pytest-xdist",
            "hypothesis",
            # The torchvision weight import is tested against torch (CPU build; pinned so
            # pip does not pull a multi-GB CUDA build).
            "torch==2.13.0",
            "jax[cpu]",
        ],
        "jax": ["jax"],
    },
    scripts=["train.py", "convert.py"],
)
