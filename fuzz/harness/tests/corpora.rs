//! Replays every seed input (`fuzz/seeds/<target>/`) and every input that once crashed or
//! hung a target (`fuzz/regressions/<target>/`) through the harness, on stable Rust. A
//! fixed bug whose input is kept here cannot come back unnoticed.

use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut n = 0;
    for (target, run) in grasp_fuzz_harness::TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).expect("read input");
            eprintln!("{target}: {}", file.display());
            run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn seed_inputs_pass_every_target() {
    let n = replay("seeds");
    assert!(n >= grasp_fuzz_harness::TARGETS.len(), "every target has seed inputs (found {n} in all)");
    for (target, _) in grasp_fuzz_harness::TARGETS {
        assert!(!inputs("seeds", target).is_empty(), "fuzz/seeds/{target} is empty");
    }
}

#[test]
fn regression_inputs_pass_every_target() {
    replay("regressions");
}

#[test]
fn seeds_reach_past_the_first_checks() {
    // A seed that every parser rejects at once would teach the fuzzer nothing.
    let path = std::fs::read_to_string(
        inputs("seeds", "repo_url").into_iter().find(|p| p.ends_with("path")).unwrap(),
    )
    .unwrap();
    assert!(grasp_lib::origin::parse_repo_path(&path).is_some(), "{path}");
    let push = std::fs::read(
        inputs("seeds", "receive_pack_commands").into_iter().find(|p| p.ends_with("push_many")).unwrap(),
    )
    .unwrap();
    let (commands, _) = futures::executor::block_on(grasp_lib::git::pktline::read_push_commands(
        &mut push.as_slice(),
        1 << 20,
    ))
    .unwrap();
    assert_eq!(commands.updates.len(), 3);
}
