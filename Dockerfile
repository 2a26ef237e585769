# The stream worker image: `zae-limiter worker run` (usage snapshots, audit
# archive, proactive refill), with /livez, /readyz and /metrics on port 8080.
#
#   docker build -t zae-limiter-worker .
#   docker run --rm -p 8080:8080 -e AWS_REGION=eu-west-1 zae-limiter-worker \
#     --name prod --workloads aggregator,archiver --archive-bucket my-audit-archive
#
# Arguments after the image name replace CMD as a whole, so repeat
# `--workloads` when you pass any. See "Stream workers" in README.md.

ARG DENO_VERSION=2.9.6

# ---------------------------------------------------------------- build
FROM denoland/deno:debian-${DENO_VERSION} AS build
ENV DENO_DIR=/deno-dir/
WORKDIR /app

# Dependencies first, so this layer is rebuilt only when the lock changes.
# `deno.json` sets nodeModulesDir "auto": packages land in /app/node_modules.
COPY deno.json deno.lock ./
RUN deno install --frozen

# cli.ts imports only these (check with `deno info cli.ts`); a new import
# outside them fails `deno cache` below, not the container at start.
COPY cli.ts mod.ts ./
COPY cli/ cli/
COPY core/ core/
COPY infra/ infra/
COPY migrations/ migrations/
COPY workers/ workers/

# Transpile the module graph ahead of time. The npm tarball cache is dropped:
# at run time packages are read from /app/node_modules.
RUN deno cache --frozen cli.ts && rm -rf /deno-dir/npm

# ---------------------------------------------------------------- runtime
FROM denoland/deno:debian-${DENO_VERSION}
ENV DENO_DIR=/deno-dir/ \
    DENO_NO_UPDATE_CHECK=1
WORKDIR /app
# Files owned by root: the worker's user can read its code, not change it.
COPY --from=build /deno-dir/ /deno-dir/
COPY --from=build /app/ /app/
USER deno

EXPOSE 8080

# `worker run` drains on the first SIGTERM or SIGINT: in-flight batches get
# --shutdown-grace-seconds (default 20), then checkpoints are written, leases
# released and the heartbeat removed. Give the container a stop timeout above
# that: ECS and Kubernetes default to 30 s, `docker stop` to 10 s (use -t 30).
# Deno runs as PID 1 and handles the signal itself; it starts no child
# processes, so no init process is needed.
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the image has no curl, and orchestrators probe /livez and
# /readyz over HTTP themselves (see README.md).

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
#     run --cached-only --frozen --no-prompt --allow-net --allow-env \
#     --allow-read --allow-sys=hostname,osRelease --allow-write=/archive \
#     cli.ts worker run --name dev --workloads aggregator,archiver \
#     --archive-dir /archive
# --cached-only and --frozen: nothing is downloaded or re-resolved at start.
# --no-prompt: a missing permission fails at once, even with a terminal.
ENTRYPOINT ["deno", "run", "--cached-only", "--frozen", "--no-prompt", \
  "--allow-net", "--allow-env", "--allow-read", \
  "--allow-sys=hostname,osRelease", \
  "cli.ts", "worker", "run"]
CMD ["--workloads", "aggregator", "--port", "8080"]
