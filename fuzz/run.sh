#!/usr/bin/env bash
# Builds the fuzz targets once (stable toolchain, no sanitizer: see README.md) and runs each on
# its corpus for SECONDS (default 600), one after the other, stopping at the first crash.
# `bash fuzz/run.sh 5` is the smoke run of .ci/run; `bash fuzz/run.sh 600 multipart` one target.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build -O -s none
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${secs}s"
  # -timeout: an input that takes 10 s is a hang (the first one also makes RSA keys).
  log="$(mktemp)"
  status=0
  cargo fuzz run -O -s none "$target" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|DONE|panicked|ERROR|SUMMARY|artifact_prefix|Test unit written" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz target $target failed (exit $status)" >&2
    exit "$status"
  fi
  rm -f "$log"
done
