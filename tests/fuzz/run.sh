#!/bin/sh
# Runs each libFuzzer target of tests/fuzz for a bounded time and prints one line per target and
# an "N passed, N failed" summary; exits non-zero when a target failed (a crash, a leak, a
# timeout, or a failed check). Used by `make fuzz` and `make fuzz-smoke`.
#
#   tests/fuzz/run.sh [--scratch] BUILD_DIR SECONDS [TARGET...]
#
# The seed corpus of the repository (tests/fuzz/corpus/<target>) is copied, never written:
# libFuzzer adds what it finds to BUILD_DIR/fuzz-corpus/<target>, which later runs start from,
# or, with --scratch, to a temporary directory removed afterwards (the smoke run of make test).
# Crashing inputs are kept in BUILD_DIR/fuzz-artifacts/, full logs in BUILD_DIR/fuzz-logs/.
# Reproduce one with: BUILD_DIR/tests/fuzz/<target> BUILD_DIR/fuzz-artifacts/<file>
set -u

scratch=0
if [ "${1:-}" = "--scratch" ]; then
    scratch=1
    shift
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 [--scratch] BUILD_DIR SECONDS [TARGET...]" >&2
    exit 2
fi
build=$1
seconds=$2
shift 2
targets=${*:-"fuzz_http fuzz_websocket fuzz_packets fuzz_envelope fuzz_json fuzz_server fuzz_broker"}
here=$(cd "$(dirname "$0")" && pwd)
rss_mb=${FUZZ_RSS_MB:-2048}

mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
tmp=""
if [ $scratch = 1 ]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/pulsec-fuzz.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
fi

passed=0
failed=0
for t in $targets; do
    bin="$build/tests/fuzz/$t"
    if [ ! -x "$bin" ]; then
        echo "FAIL $t: $bin not built"
        failed=$((failed + 1))
        continue
    fi
    if [ $scratch = 1 ]; then
        corpus="$tmp/$t"
    else
        corpus="$build/fuzz-corpus/$t"
    fi
    mkdir -p "$corpus"
    cp -n "$here/corpus/$t"/* "$corpus"/ 2>/dev/null
    dict=""
    [ -f "$here/dict/$t.dict" ] && dict="-dict=$here/dict/$t.dict"
    log="$build/fuzz-logs/$t.log"
    # -timeout: one input taking over 10 s is a hang. -max_len: enough for a few requests or
    # frames; longer inputs mostly cost time.
    "$bin" -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" $dict "$corpus" \
        >"$log" 2>&1
    rc=$?
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [0-9]+).*/\1/')
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    if [ $rc = 0 ]; then
        echo "ok   $t: ${execs:-?} runs, ${rate:-?} exec/s, $stats"
        passed=$((passed + 1))
    else
        echo "FAIL $t (exit $rc): see $log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*check failed|.*runtime error|artifact_prefix|Test unit written)' "$log" | head -n 8 | sed 's/^/     /'
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed = 0 ]
