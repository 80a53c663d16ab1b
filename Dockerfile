FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY migrations ./migrations
COPY config ./config
# local: rembg + onnxruntime for worker-local; ops: Flower
RUN pip install --no-cache-dir -e '.[local,ops]'
RUN useradd --create-home orchestrator
USER orchestrator
ENTRYPOINT ["orchestrator"]
