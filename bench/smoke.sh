#!/usr/bin/env bash
# bench/smoke.sh BUILD_DIR: `make bench-smoke`, part of `make test`. Runs every loadgen scenario
# for about a second with a handful of connections against BUILD_DIR/examples/echo and against
# the floor server (BUILD_DIR/bench/floor), and fails when one reports an error or no throughput
# (loadgen --strict), so the benchmark cannot rot.
# Prints one line per scenario and a closing "N passed, N failed".
set -u

build=${1:-build}
echo_bin="$build/examples/echo"
floor_bin="$build/bench/floor"
loadgen="$build/bench/loadgen"
for f in "$echo_bin" "$floor_bin" "$loadgen"; do
  [ -x "$f" ] || { echo "bench-smoke: missing $f (build first)"; exit 2; }
done

tmp=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
start() {
  "$@" --port 0 >"$tmp/server.out" 2>&1 &
  server_pid=$!
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's|^listening on https\{0,1\}://[^:]*:\([0-9]*\)$|\1|p' "$tmp/server.out")
    [ -n "$port" ] && break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    echo "bench-smoke: $1 did not start:"
    cat "$tmp/server.out"
    failed=$((failed + 1))
    return 1
  fi
}
stop() {
  kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  server_pid=
}

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

for server in "$echo_bin" "$floor_bin"; do
  start "$server" || continue
  label=$(basename "$server")
  run "$label rr"        rr      -c 4  -k 2   -d 1 -w 0.2
  run "$label rr paced"  rr      -c 4  -r 400 -d 1 -w 0.2
  run "$label events"    events  -c 4  -k 2   -d 1 -w 0.2
  run "$label idle"      idle    -c 50        -d 0.5 -w 0.2
  run "$label connect"   connect -c 4         -d 1 -w 0.2
  if [ "$server" = "$echo_bin" ]; then
    # The fairness scenario's module (bench/scenarios/fairness.mjs): two heavy senders.
    if out=$(timeout 60 node "$(dirname "$0")/scenarios/fairness.mjs" --port "$port" --loadgen "$loadgen" \
        --seconds 1 --heavy 2 2>"$tmp/out.txt") && echo "$out" | grep -q '"errors":0' \
        && ! echo "$out" | grep -q '"heavy_messages":0[,}]'; then
      passed=$((passed + 1))
      echo "ok   $label fairness: $out"
    else
      failed=$((failed + 1))
      echo "FAIL $label fairness:"
      sed 's/^/     /' "$tmp/out.txt"
      echo "     $out"
    fi
  fi
  stop
done

# The TLS scenario of make bench (bench/tls.mjs): the same server behind a certificate openssl
# mints here, and the loadgen's --tls.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/key.pem" \
  -out "$tmp/cert.pem" -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
if start "$echo_bin" --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem"; then
  run "rr tls"    rr      -c 4  -k 2   -d 1 -w 0.2 --tls
  stop
fi

# The topic scenario's client (bench/fanout) against echo, alone and with two workers.
fanout="$build/bench/fanout"
for workers in 1 2; do
  [ -x "$fanout" ] || break
  start "$echo_bin" --workers "$workers" || continue
  if timeout 60 "$fanout" -c 20 -k 2 -d 1 -w 0.2 --port "$port" >"$tmp/out.json" 2>"$tmp/out.txt" &&
      grep -q '"missing":0,' "$tmp/out.json"; then
    passed=$((passed + 1))
    echo "ok   echo fanout ($workers worker(s)): $(head -1 "$tmp/out.txt")"
  else
    failed=$((failed + 1))
    echo "FAIL echo fanout ($workers worker(s)):"
    sed 's/^/     /' "$tmp/out.txt" "$tmp/out.json"
  fi
  stop
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
