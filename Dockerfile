# The Onceflow image that docker-compose.yml's `migrate` and `consumer` run.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The library first, so that editing the example does not reinstall it.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY consumers ./consumers
COPY migrations ./migrations
RUN pip install .

# `onceflow run examples.orders.app:app` imports the app from the working directory.
COPY examples ./examples

RUN useradd --system --no-create-home onceflow
USER onceflow

CMD ["onceflow", "--help"]
