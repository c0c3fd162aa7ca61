#!/usr/bin/env bash
# bench/smoke.sh BUILD_DIR: `make bench-smoke`, part of `make test`. Runs every loadgen scenario
# for about a second with a handful of connections against BUILD_DIR/examples/echo, and fails
# when one reports an error or no throughput (loadgen --strict), so the benchmark cannot rot.
# Prints one line per scenario and a closing "N passed, N failed".
set -u

build=${1:-build}
echo_bin="$build/examples/echo"
loadgen="$build/bench/loadgen"
for f in "$echo_bin" "$loadgen"; do
  [ -x "$f" ] || { echo "bench-smoke: missing $f (build first)"; exit 2; }
done

tmp=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

"$echo_bin" --port 0 >"$tmp/server.out" 2>&1 &
server_pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's|^listening on http://[^:]*:\([0-9]*\)$|\1|p' "$tmp/server.out")
  [ -n "$port" ] && break
  sleep 0.05
done
if [ -z "$port" ]; then
  echo "bench-smoke: echo server did not start:"
  cat "$tmp/server.out"
  echo "0 passed, 1 failed"
  exit 1
fi

passed=0
failed=0
run() {
  local name=$1
  shift
  if timeout 60 "$loadgen" "$@" --port "$port" --server-pid "$server_pid" --strict \
      >"$tmp/out.json" 2>"$tmp/out.txt"; then
    passed=$((passed + 1))
    echo "ok   $name: $(head -1 "$tmp/out.txt")"
  else
    failed=$((failed + 1))
    echo "FAIL $name (exit $?):"
    sed 's/^/     /' "$tmp/out.txt" "$tmp/out.json"
  fi
}

run "rr"        rr      -c 4  -k 2   -d 1 -w 0.2
run "rr paced"  rr      -c 4  -r 400 -d 1 -w 0.2
run "events"    events  -c 4  -k 2   -d 1 -w 0.2
run "idle"      idle    -c 50        -d 0.5 -w 0.2
run "connect"   connect -c 4         -d 1 -w 0.2

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
