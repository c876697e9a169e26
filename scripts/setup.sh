#!/usr/bin/env bash
# Idempotent machine set-up for boxd: installs what is missing (node modules,
# redis-server, docker.io, debootstrap, busybox-static from Debian's packages),
# then starts Redis and dockerd when they are not already answering.
# Fast when everything is already there. Must run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

REDIS_PORT="${REDIS_PORT:-6379}"
STATE_DIR="${BOXD_STATE_DIR:-$PWD/.boxd}"
mkdir -p "$STATE_DIR"

# --- Debian packages ---------------------------------------------------------
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v iptables >/dev/null || need+=(iptables)
# ip and bridge pin each box's link-layer entries (host/bridge-pins.ts); nsenter enters its netns.
command -v bridge >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v tmux >/dev/null || need+=(tmux)   # test/pty.test.ts drives `boxd shell` in it
# Per-box disk quotas: a loop-mounted ext4 per box (mkfs.ext4 -d needs e2fsprogs >= 1.43).
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
# The Python SDK's tests (test/python-sdk.test.ts) run on Debian's python3 with its httpx and pytest.
/usr/bin/python3 -c 'import httpx' 2>/dev/null || need+=(python3-httpx)
/usr/bin/python3 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need+=(python3-websockets)   # box.pty()
if [ "${BOXD_SETUP_BENCH:-0}" = 1 ]; then
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v wrk >/dev/null || need+=(wrk)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing ${need[*]} and not root: install them first"; exit 1; fi
  log "installing ${need[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- kernel limits for a thousand boxes ------------------------------------------
# Raised when lower, never lowered; skipped when not root (or in a container without the right).
# - neigh gc_thresh1/2/3 (default 128/512/1024): the host keeps one neighbour (ARP) entry per box
#   it talks to on the bridge; past gc_thresh3 the kernel logs "neighbour table overflow" and
#   drops packets, i.e. previews of some boxes fail around 1,000 boxes.
# - kernel.pid_max (32768 on many kernels) counts threads: each box's containerd shim has ~11,
#   its own processes 2-3 more, so 1,000 boxes take ~15,000 on top of everything else.
# - fs.inotify.max_user_instances (128): dockerd, containerd and tools watching files share it.
raise_sysctl() {
  local cur
  cur="$(sysctl -n "$1" 2>/dev/null)" || return 0
  [ "$cur" -ge "$2" ] 2>/dev/null && return 0
  sysctl -qw "$1=$2" 2>/dev/null || log "could not raise $1 to $2 (it is $cur)"
}
if [ "$(id -u)" = 0 ]; then
  raise_sysctl net.ipv4.neigh.default.gc_thresh1 4096
  raise_sysctl net.ipv4.neigh.default.gc_thresh2 8192
  raise_sysctl net.ipv4.neigh.default.gc_thresh3 16384
  raise_sysctl kernel.pid_max 4194304
  raise_sysctl fs.inotify.max_user_instances 8192
fi

# --- node modules --------------------------------------------------------------
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing node modules (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# --- Redis ---------------------------------------------------------------------
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  # BullMQ needs noeviction; fix it on a server we did not start too.
  redis-cli -p "$REDIS_PORT" config set maxmemory-policy noeviction >/dev/null || true
else
  log "starting redis-server on 127.0.0.1:$REDIS_PORT (AOF on, noeviction)"
  mkdir -p "$STATE_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --appendonly yes --maxmemory-policy noeviction \
    --dir "$STATE_DIR/redis" --logfile "$STATE_DIR/redis/redis.log" \
    --pidfile "$STATE_DIR/redis/redis.pid"
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null || { log "redis did not start: $STATE_DIR/redis/redis.log"; exit 1; }
fi

# --- Docker Engine ---------------------------------------------------------------
# Every box's shim and processes take pids from one kernel-wide space: Debian's default of 32768
# runs out near a thousand boxes, and dockerd cannot start threads then. Raise it (never lower).
if [ "$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 0)" -lt 4194304 ]; then
  sysctl -qw kernel.pid_max=4194304 2>/dev/null || log "note: could not raise kernel.pid_max"
fi
docker_ok() { curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }
if ! docker_ok; then
  # A stopped session leaves a stale pid file behind (and its pid may since belong to another
  # process); dockerd refuses to start while it exists. Only a live dockerd keeps it.
  pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    log "dockerd (pid $pid) is starting; waiting for it"
  else
    rm -f /var/run/docker.pid /var/run/docker.sock
    # The same holds for the containerd that dockerd supervises: a stale pid makes dockerd wait
    # for a containerd that is not there.
    cpid="$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)"
    if [ -n "$cpid" ] && [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" != containerd ]; then
      rm -f /var/run/docker/containerd/containerd.pid /var/run/docker/containerd/containerd.sock
    fi
    # Without the userland proxy a published port is an iptables rule instead of one docker-proxy
    # process (~3.5 MB) per port: what lets one host keep a thousand suspended boxes.
    # It is off by default; BOXD_USERLAND_PROXY=true turns docker-proxy back on. Only applies
    # when this script starts dockerd.
    proxy_flag="--userland-proxy=false"
    [ "${BOXD_USERLAND_PROXY:-false}" = true ] && proxy_flag="--userland-proxy=true"
    log "starting dockerd $proxy_flag (log: $STATE_DIR/dockerd.log)"
    # In a session of its own (setsid): Ctrl-C on `npm start` signals npm's whole process group,
    # and dockerd is a system service that must outlive it, or every box dies with the gateway.
    setsid nohup dockerd "$proxy_flag" >"$STATE_DIR/dockerd.log" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 150); do docker_ok && break; sleep 0.2; done
  docker_ok || { log "dockerd did not start; last lines of $STATE_DIR/dockerd.log:"; tail -20 "$STATE_DIR/dockerd.log" >&2; exit 1; }
fi
if pgrep -x docker-proxy >/dev/null 2>&1; then
  log "note: the running dockerd uses docker-proxy (one process per published port); boxd leaves it as it is"
fi
log "redis and docker are up"
