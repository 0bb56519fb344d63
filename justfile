# loopscope recipes. Install just with `cargo install just`; CI does not need it.

# Run the demo: a workload under the recorder, then what loopscope found.
demo:
    cargo run --release -- demo

# The checks CI runs: formatting, lints, tests.
test:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace

# Run a workload under the recorder, e.g. `just run sleep-storm --tasks 100000 --record storm.loopscope`.
run WORKLOAD *ARGS:
    cargo run --release -- run {{WORKLOAD}} {{ARGS}}

# Print the report of a recording.
report FILE *ARGS:
    cargo run --release -- report {{FILE}} {{ARGS}}

# The overhead benchmark: every workload under every instrumentation (loopscope's profiles,
# tokio's poll-time histogram, tokio-metrics, dial9, console-subscriber), each run in its own
# process, interleaved, median of RUNS; writes target/bench/bench.md and bench.json
# (docs/benchmarks.md). E.g. `just bench 3 --workloads yield-storm,ping-pong`.
bench RUNS="5" *ARGS:
    cargo build --release -p loopscope-bench
    cargo build --release -p loopscope-bench --features console --target-dir target/bench-console
    ./target/release/bench --runs {{RUNS}} {{ARGS}}

# Accuracy of the stall detector: each blocking mistake REPEATS times, then the fixes for TWIN_SECONDS.
accuracy REPEATS="20" TWIN_SECONDS="30":
    cargo run --release -p loopscope --example accuracy {{REPEATS}} {{TWIN_SECONDS}}

# The per-poll cost of the hook pair, in nanoseconds (criterion).
bench-hooks:
    cargo bench -p loopscope-bench --bench hooks

# Instructions per poll in the hooks, counted by callgrind (repeatable whatever the machine's
# noise): the storm of `bench-hooks` at two lengths; the difference over the extra polls.
bench-instructions:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p loopscope-bench --example instructions
    count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect="$1" \
        target/release/examples/instructions "${@:2}" 2>&1 | sed -n 's/.*Collected : //p'; }
    for m in floor floor-sched-latency lean lean-no-detector lean-no-tasks full "lean two-sites"; do
        pattern='*install_poll_hooks*'
        case $m in floor*) pattern='*floor::install*';; esac
        set -- $m
        a=$(count "$pattern" $1 100000 ${2:-}); b=$(count "$pattern" $1 300000 ${2:-})
        awk -v m="$m" -v a="$a" -v b="$b" 'BEGIN { printf "%-22s %6.1f instructions per poll in the hooks\n", m, (b - a) / 200000 }'
    done

# Where `baseline` and `gate` keep recordings (set LOOPSCOPE_GATE_DIR to share it between checkouts).
gate_dir := env_var_or_default("LOOPSCOPE_GATE_DIR", "target/gate")

# Record RUNS baseline runs of WORKLOAD into $LOOPSCOPE_GATE_DIR/baseline/WORKLOAD/.
baseline WORKLOAD RUNS="5" *ARGS:
    cargo build --release --quiet
    rm -rf "{{gate_dir}}/baseline/{{WORKLOAD}}" && mkdir -p "{{gate_dir}}/baseline/{{WORKLOAD}}"
    for i in $(seq -w 1 {{RUNS}}); do ./target/release/loopscope run {{WORKLOAD}} --for 3s --interval 100ms --record "{{gate_dir}}/baseline/{{WORKLOAD}}/run-$i.loopscope" {{ARGS}} >/dev/null; done

# Record RUNS candidate runs of WORKLOAD, check them against its baseline under POLICY (exit 0 pass, 1 regression, 3 inconclusive).
gate WORKLOAD RUNS="5" POLICY="" *ARGS:
    cargo build --release --quiet
    rm -rf "{{gate_dir}}/candidate/{{WORKLOAD}}" && mkdir -p "{{gate_dir}}/candidate/{{WORKLOAD}}"
    for i in $(seq -w 1 {{RUNS}}); do ./target/release/loopscope run {{WORKLOAD}} --for 3s --interval 100ms --record "{{gate_dir}}/candidate/{{WORKLOAD}}/run-$i.loopscope" {{ARGS}} >/dev/null; done
    ./target/release/loopscope check --baseline "{{gate_dir}}/baseline/{{WORKLOAD}}" --candidate "{{gate_dir}}/candidate/{{WORKLOAD}}" {{ if POLICY == "" { "" } else { "--policy " + POLICY } }} --junit "{{gate_dir}}/{{WORKLOAD}}.junit.xml" --svg "{{gate_dir}}/{{WORKLOAD}}.svg"

# The gate's self-test: TRIALS gates without a change and TRIALS with a 25% slowdown (docs/ci-gates.md).
gate-selftest TRIALS="20" RUNS="3" RUN_TIME="2s":
    scripts/gate-selftest {{TRIALS}} {{RUNS}} {{RUN_TIME}}

# The same beside two busy loops (started and stopped by the script), with the default policy
# against work per poll +50%.
gate-selftest-loaded TRIALS="20" RUNS="3" RUN_TIME="2s":
    scripts/gate-selftest --loaded {{TRIALS}} {{RUNS}} {{RUN_TIME}}

# The worked example of gating a server (docs/ci-gates.md): tiny-server under the recorder, driven
# by tiny-load, base against a candidate started with --slow 2ms. Needs `loopscope` on the PATH.
gate-server-example:
    scripts/gate-server-example
