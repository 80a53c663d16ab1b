FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY migrations ./migrations
COPY config ./config
# local: rembg + onnxruntime for worker-local; ops: Flower
RUN pip install --no-cache-dir -e '.[local,ops]'
# rembg imports pymatting, whose numba functions compile on first import (~35 s) into an
# on-disk cache (cache=True): compile them into the image, not into a worker's first job.
RUN python -c "import rembg"
RUN useradd --create-home orchestrator
USER orchestrator
ENTRYPOINT ["orchestrator"]
