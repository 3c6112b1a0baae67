from setuptools import find_packages, setup

setup(
    name="amago-sb",
    version="0.1.0",
    description="In-context reinforcement learning (AMAGO) for Gymnasium and Stable-Baselines3 users",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["amago_sb", "amago_sb.*", "wrappers", "wrappers.*", "zoo", "zoo.*"]),
    package_data={"zoo": ["hyperparams/*.yml"], "amago_sb": ["py.typed"]},
    install_requires=[
        "torch>=2.3,<=2.14.1",
        "numpy>=1.24",
        "gymnasium>=1.0",
        "stable-baselines3>=2.4",
        "sb3-contrib>=2.4",
        "popgym>=1.0.7",
        "mazelib>=0.9",  # popgym's 6 Labyrinth envs
        "crafter>=1.8",
        "numba>=0.58",  # opensimplex (crafter's world generator) JIT-compiles with it: worlds ~20x faster
        "tensorboard>=2.14",
        "tqdm",
        "rich",
        "pyyaml",
        "matplotlib>=3.7",
        "rl_zoo3>=2.4",  # zoo.train is rl_zoo3's train with AMAGO registered
        "pandas<3",  # rl_zoo3's plots and SB3's monitor reader; rliable needs arch<8, which breaks on pandas 3
        "seaborn",  # rl_zoo3's plots
        "rliable",  # IQM with bootstrap intervals (zoo.benchmark; rl_zoo3's plot_from_file)
    ],
    extras_require={
        "test": [
            "pytest>=7", "ruff>=0.5", "mypy>=1.10",
            "imageio>=2.9", "imageio-ffmpeg>=0.4",  # the GIF / MP4 writers
            "metaworld>=3,<4", "mujoco>=3,<4",  # the MuJoCo env tests
        ],
        "triton": ["triton>=3.0"],
        "zoo": ["imageio>=2.9", "imageio-ffmpeg>=0.4"],
        "mujoco": ["mujoco>=3,<4"],  # HalfCheetahVel-v0 (mujoco 4.0.0 on PyPI ships no binary)
        "metaworld": ["metaworld>=3,<4", "mujoco>=3,<4"],  # MetaWorldML1-v0
    },
)
