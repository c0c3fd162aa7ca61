#!/usr/bin/env bash
# make run-cluster: the chat demo on two nodes sharing one Redis. Starts Debian's redis-server on
# a unix socket in a private temporary directory (no TCP port, nothing persisted), then two chat
# servers on PORT and PORT+1 with --redis pointing at it, and prints both addresses: a message
# typed on one shows on the pages of the other, and a new page on either sees the history.
# Ctrl-C (or SIGTERM) stops the three processes it started, and only those.
#
#   examples/chat/run-cluster.sh BUILD_DIR WEB_DIR [HOST] [PORT] [WORKERS]
set -euo pipefail
build=$1
web=$2
host=${3:-127.0.0.1}
port=${4:-8000}
workers=${5:-1}

dir=$(mktemp -d "${TMPDIR:-/tmp}/pulsec-cluster.XXXXXX")
pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap stop INT TERM EXIT

redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save '' \
    --appendonly no --dir "$dir" --loglevel warning > "$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [ -S "$dir/redis.sock" ] && break
    sleep 0.05
done

for i in 0 1; do
    "$build/examples/chat" --host "$host" --port $((port + i)) --static "$web" \
        --workers "$workers" --redis "unix://$dir/redis.sock" > >(sed "s/^/node $((i + 1)): /") &
    pids+=($!)
done
sleep 0.5
echo
echo "pulsec chat on two nodes sharing one Redis ($dir/redis.sock):"
echo "  node 1: http://$host:$port"
echo "  node 2: http://$host:$((port + 1))"
echo "Open one in each window and chat across them. Ctrl-C stops everything."
wait
