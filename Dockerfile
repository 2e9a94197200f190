# The application image: every secanalyst process (stages, gateway, ingest server, console,
# write-back, migrations, runbook load, model fetch) of docker-compose.yml and deploy/k8s.
FROM python:3.11.13-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY consumers consumers
COPY schemas schemas
COPY runbooks runbooks
# CPU torch (the embedding model runs on CPU; the LLM is vLLM's own image).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir .
# The code runs from /app, not from site-packages: it finds the runbooks beside the package
# (pipeline/analysis/runbooks.py: DEFAULT_FOLDER), and they are not in the wheel.
ENV PYTHONPATH=/app
# The embedding engine's graph (ONNX, what onnx/openvino/openvino-bf16 run), exported here
# from the packaged weights: a stage pod then starts without the 15–50 s export and needs
# no writable place for it (embedding.export_dir, pipeline/config/llm.py).
ENV SECANALYST_EMBEDDING__EXPORT_DIR=/app/embeddings
RUN HF_HUB_OFFLINE=1 secanalyst model export-embedding
# uid 1000 (as deploy/k8s runs it) owns the folders named volumes are mounted on: Docker
# copies this ownership into an empty named volume, so the non-root processes can write
# their state and the model fetch can fill /models.
RUN useradd --uid 1000 --user-group --home-dir /tmp --no-create-home secanalyst \
 && mkdir -p /var/lib/secanalyst/state /var/cache/secanalyst /models \
 && chown 1000:1000 /var/lib/secanalyst/state /var/cache/secanalyst /models
USER 1000
ENTRYPOINT []
CMD ["secanalyst", "--help"]
