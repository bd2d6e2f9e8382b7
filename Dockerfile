FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml setup.cfg README.md ./
COPY ordermgr ./ordermgr
COPY migrations ./migrations
RUN pip install . && groupadd --gid 10001 ordermgr && useradd --create-home --uid 10001 --gid 10001 ordermgr

# Numeric, so a kubelet enforcing runAsNonRoot can verify it (deploy/kubernetes sets the same uid).
USER 10001:10001
EXPOSE 4600
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ORDER_MANAGER_PORT', '4600'), timeout=2)"]
# Exec form, so SIGTERM reaches Python and the service drains before it exits.
CMD ["python", "-m", "ordermgr"]
