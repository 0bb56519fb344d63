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

# The recorder's overhead: plain vs recorded (lean and full), interleaved, median of RUNS.
bench RUNS="5":
    cargo run --release -p loopscope --example overhead {{RUNS}}

# Accuracy of the stall detector: each blocking mistake REPEATS times, then the fixes for TWIN_SECONDS.
accuracy REPEATS="20" TWIN_SECONDS="30":
    cargo run --release -p loopscope --example accuracy {{REPEATS}} {{TWIN_SECONDS}}

# The per-poll cost of the hook pair, in nanoseconds (criterion).
bench-hooks:
    cargo bench -p loopscope --bench hooks
