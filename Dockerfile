# lorapod for a GPU pod: `docker build -t <you>/lorapod .`, then run with the workspace volume at /workspace:
#   docker run --gpus all -p 8000:8000 -v /data/lorapod:/workspace -e LORAPOD_API_KEY=... <you>/lorapod
# It serves the REST API and the RunPod-compatible /v2/{endpoint_id}/... routes on port 8000.
# LORAPOD_API_KEY must be set whenever the port is reachable from outside: without it the API is open.
#
# The stages up to `app` are the same as in Dockerfile.serverless; keep the two files in step. Base image:
# nvidia/cuda runtime on Ubuntu 24.04, as ai-toolkit's own docker/Dockerfile at the pinned commit, matching
# its cu130 torch wheels (host driver >= 580). For older drivers build with
#   --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG BASE_IMAGE=nvidia/cuda:13.0.3-runtime-ubuntu24.04

# ----- runtime: Python 3.12 and the libraries ai-toolkit loads at run time (OpenCV, ffmpeg for video models)
FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates git ffmpeg libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# ----- build: compilers and headers for any requirement without a wheel; only the venvs leave this stage
FROM runtime AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3.12-dev \
    && rm -rf /var/lib/apt/lists/*

# ----- ai-toolkit at a pinned commit, in its own venv (torch first, as its README says)
FROM build AS ai-toolkit
ARG AI_TOOLKIT_COMMIT=27a03a91f23eb1b757d5ec2e80ee3e129cfcc350
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN git clone https://github.com/ostris/ai-toolkit.git /opt/ai-toolkit \
    && git -C /opt/ai-toolkit checkout --detach "${AI_TOOLKIT_COMMIT}"
# torchaudio is imported when run.py starts although requirements.txt does not list it.
RUN python3.12 -m venv /opt/ai-toolkit/venv \
    && /opt/ai-toolkit/venv/bin/pip install --upgrade pip \
    && /opt/ai-toolkit/venv/bin/pip install torch==2.13.0 torchvision==0.28.0 torchaudio==2.11.0 --index-url "${TORCH_INDEX_URL}" \
    && /opt/ai-toolkit/venv/bin/pip install -r /opt/ai-toolkit/requirements.txt \
    && /opt/ai-toolkit/venv/bin/pip install setuptools==69.5.1 \
    && /opt/ai-toolkit/venv/bin/python -c "import torch, torchaudio, diffusers, transformers, peft, safetensors, PIL, yaml; print('ai-toolkit env', torch.__version__)"

# ----- lorapod in its own small venv (no torch: trainings and generations run in ai-toolkit's venv)
FROM build AS lorapod
WORKDIR /app
COPY pyproject.toml README.md alembic.ini test_input.json ./
COPY app ./app
COPY core ./core
COPY gpu ./gpu
# Editable, so tracebacks point at /app; the migrations ship inside core/ and install either way.
RUN python3.12 -m venv /opt/lorapod \
    && /opt/lorapod/bin/pip install --upgrade pip \
    && /opt/lorapod/bin/pip install -e "/app[postgres]" \
    && /opt/lorapod/bin/python -c "import app.handler, app.main"

# ----- app: the runtime with both venvs and the source
FROM runtime AS app
COPY --from=ai-toolkit /opt/ai-toolkit /opt/ai-toolkit
COPY --from=lorapod /opt/lorapod /opt/lorapod
COPY --from=lorapod /app /app
WORKDIR /app
ENV PATH=/opt/lorapod/bin:$PATH \
    AI_TOOLKIT_DIR=/opt/ai-toolkit \
    AI_TOOLKIT_PYTHON=/opt/ai-toolkit/venv/bin/python

# ----- pod: uvicorn on 0.0.0.0:8000, the workspace at /workspace (mount a volume there)
FROM app AS pod
ENV LORAPOD_WORKSPACE=/workspace \
    LORAPOD_HOST=0.0.0.0 \
    LORAPOD_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=5)"]
CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", "8000"]
