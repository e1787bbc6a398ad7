#!/usr/bin/env python3
"""Checks that the loom models can fail (`make loom-mutants`).

Each mutant weakens one ordering or drops one step of the sleep/wake or
task protocol, in a copy of the crate (the work tree is never touched), and
runs the loom models that must catch it. The script fails if a mutant does
not apply (the code it targets changed: update the mutant) or if any of its
models still passes (that model no longer checks what it claims).

Slow (one release build per mutant, about 40 s each), so not part of
`make test`; `make test-loom` runs the models on the real code.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target", "loom-mutants")
PREEMPTIONS = os.environ.get("LOOM_PREEMPTIONS", "3")

DATA = "loom_data_side_never_loses_a_wake_up"
SPACE = "loom_space_side_never_loses_a_wake_up"
BOTH = "loom_a_one_slot_stream_never_stalls"
TWO = "loom_one_publication_wakes_every_sleeping_consumer"
SHUTDOWN = "loom_shutdown_wakes_every_sleeper"
JOIN = "loom_join_returns_when_the_last_task_is_done"

# (name, file, text, replacement, models that must fail)
MUTANTS = [
    (
        "sleeper skips the re-check after announcing itself",
        "src/ops/wait.rs",
        "    let woken = if ready() {",
        "    let woken = if false {",
        [DATA, SPACE, BOTH, TWO, SHUTDOWN],
    ),
    (
        "sleeper's heavy fence between the flag and the re-check removed",
        "src/ops/wait.rs",
        "    let covered = barrier::heavy();",
        "    let covered = true;",
        [DATA, SPACE, BOTH, TWO],
    ),
    (
        "waker's light fence between its publication and the flag removed",
        "src/ops/wait.rs",
        "    barrier::light();\n    if wanted.load",
        "    if wanted.load",
        [DATA, SPACE, BOTH, TWO],
    ),
    (
        "waker bumps and wakes its own side's words instead of the other's",
        "src/ops/wait.rs",
        "        Role::Writer => (&ext.signals.data_seq, &ext.signals.data_wanted),\n"
        "        Role::Reader => (&ext.signals.space_seq, &ext.signals.space_wanted),",
        "        Role::Writer => (&ext.signals.space_seq, &ext.signals.space_wanted),\n"
        "        Role::Reader => (&ext.signals.data_seq, &ext.signals.data_wanted),",
        [DATA, SPACE, BOTH],
    ),
    (
        "shutdown does not wake the producers (space_seq)",
        "src/ops/wait.rs",
        "        &ext.signals.data_seq,\n        &ext.signals.space_seq,\n        &ext.signals.join_seq,",
        "        &ext.signals.data_seq,\n        &ext.signals.join_seq,",
        [SHUTDOWN],
    ),
    (
        "task_done wakes joiners only past the last task (off by one)",
        "src/ops/tasks.rs",
        "    if now >= ext.writer.messages.load(Acquire)",
        "    if now > ext.writer.messages.load(Acquire)",
        [JOIN],
    ),
    (
        "join reads tasks_done Relaxed (returns before the work is visible)",
        "src/ops/tasks.rs",
        "    let done = ext.identity.tasks_done.load(Acquire);",
        "    let done = ext.identity.tasks_done.load(Relaxed);",
        [JOIN],
    ),
    (
        "task_done's fence(SeqCst) before reading join_wanted removed",
        "src/ops/tasks.rs",
        "    // Pairs with the joiner's SeqCst store of `join_wanted`.\n    fence(SeqCst);",
        "",
        [JOIN],
    ),
    (
        "join's fence(SeqCst) between join_wanted and the re-check removed",
        "src/ops/tasks.rs",
        "        // finds that schedule).\n        fence(SeqCst);",
        "        // finds that schedule).",
        [JOIN],
    ),
]


def copy_crate(dst):
    for name in ("Cargo.toml", "Cargo.lock", "build.rs", "cbindgen.toml", "README-crate.md"):
        shutil.copy2(os.path.join(ROOT, name), dst)
    for tree in ("src", "tests", "examples", "ffi-tests", "proptest-regressions"):
        src = os.path.join(ROOT, tree)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dst, tree),
                            ignore=shutil.ignore_patterns("dependent-crate", "__pycache__"))


def run_model(crate, test):
    env = dict(os.environ, RUSTFLAGS="--cfg loom", CARGO_TARGET_DIR=TARGET,
               LOOM_MAX_PREEMPTIONS=PREEMPTIONS, RUST_BACKTRACE="0")
    proc = subprocess.run(
        ["cargo", "test", "--release", "--lib", "--quiet", test, "--",
         "--exact", f"ops::loom_models::{test}"],
        cwd=crate, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if "error[" in out or "could not compile" in out:
        sys.exit(f"the mutant does not compile:\n{out[-3000:]}")
    why = next((line.strip() for line in out.splitlines()
                if "deadlock" in line or "assertion" in line), "")
    return proc.returncode != 0, why


def main():
    failures = 0
    with tempfile.TemporaryDirectory(prefix="rb_loom_mutants_") as tmp:
        for name, path, text, replacement, models in MUTANTS:
            crate = os.path.join(tmp, "crate")
            shutil.rmtree(crate, ignore_errors=True)
            os.mkdir(crate)
            copy_crate(crate)
            target = os.path.join(crate, path)
            with open(target) as f:
                source = f.read()
            if source.count(text) != 1:
                print(f"FAIL  mutant does not apply ({path} changed): {name}")
                failures += 1
                continue
            with open(target, "w") as f:
                f.write(source.replace(text, replacement))
            print(f"mutant: {name}")
            for model in models:
                start = time.monotonic()
                caught, why = run_model(crate, model)
                verdict = "caught" if caught else "MISSED"
                print(f"  {verdict:6} by {model} ({time.monotonic() - start:.0f} s) {why}")
                failures += not caught
    if failures:
        sys.exit(f"loom-mutants: {failures} mutant/model pair(s) not caught")
    print(f"loom-mutants: every mutant caught by every model listed "
          f"(preemption bound {PREEMPTIONS})")


if __name__ == "__main__":
    main()
