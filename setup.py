"""imgcls: image classification with JAX/Flax."""

from setuptools import find_packages, setup

SERVE = ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9"]
# Optuna studies on PostgreSQL, shared by sweep launchers on several machines
# (imgcls/sweeps/study.py).
SWEEP_DB = ["psycopg[binary]>=3.2"]
# examples/quickstart.ipynb, run top to bottom by tests/test_notebook.py in a real kernel.
NOTEBOOK = ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"]

setup(
    name="imgcls",
    version="0.1.0",
    description="JAX/Flax research codebase for image classification",
    packages=find_packages(include=["imgcls", "imgcls.*"]),
    package_data={"imgcls.inference": ["serve_page.html"]},
    python_requires=">=3.11",
    install_requires=[
        "absl-py>=2.1",
        "clu>=0.0.12",
        "flax>=0.12",
        "jax>=0.10",
        "matplotlib>=3.9",
        "ml-collections>=1.0",
        "numpy>=2.0",
        "optax>=0.2.5",
        "optuna>=4.0",
        "orbax-checkpoint>=0.12",
        "pillow>=10",
        "scikit-learn>=1.5",
        "tensorboard>=2.18",
        "tensorflow-cpu>=2.18",
        "tensorflow-datasets>=4.9.7",
    ],
    extras_require={
        "serve": SERVE,
        "sweep-db": SWEEP_DB,
        # The tests cover the web app: its test client (httpx) and a real browser (selenium),
        # sweeps on a real PostgreSQL, and the notebook.
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "httpx>=0.27",
            "selenium>=4.20",
            *SERVE,
            *SWEEP_DB,
            *NOTEBOOK,
        ],
    },
)
