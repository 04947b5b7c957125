# Images for the compose and Kubernetes placements (docs/deploy.md). The orchestrator image also
# serves asr and prosody, and the web app (on Kubernetes there is no nginx to serve frontend/dist).
FROM node:22-bookworm-slim AS frontend
WORKDIR /frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci
COPY frontend/ ./
RUN npm run build

FROM python:3.11-slim-bookworm AS base
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng ffmpeg libsndfile1 curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir torch==2.13.0 && \
    pip install --no-cache-dir -r requirements/lock.txt -c requirements/constraints.txt
COPY services/ services/
COPY backend/ backend/
COPY models/manifest.json models/manifest.json
COPY config/ config/
COPY db/ db/
RUN pip install --no-cache-dir --no-deps -e services/common -e services/asr -e services/tts \
    -e services/prosody -e backend

FROM base AS orchestrator
# where Settings.server.frontend_dist points (REPO_ROOT/frontend/dist); the app serves it at /
COPY --from=frontend /frontend/dist frontend/dist
EXPOSE 8000 8004 8005
CMD ["avatar", "serve", "orchestrator", "--host", "0.0.0.0"]

FROM base AS gpu-services
# F5-TTS and CosyVoice with their CUDA stacks; their weights are mounted under /models.
RUN pip install --no-cache-dir "f5-tts" && pip install --no-cache-dir "cosyvoice" || true
EXPOSE 8002 8003
