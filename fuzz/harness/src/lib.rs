//! The fuzz targets' bodies. Each function takes raw fuzzer input, feeds it to one parser
//! of grasp-lib, and checks what must hold for every input (beyond "does not panic or
//! hang"). The cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line wrappers around
//! them, and `tests/corpora.rs` replays the seed and regression inputs on stable Rust, so
//! the harness code itself runs in CI.

#![deny(missing_docs)]

mod event;
mod relay;
mod url;

pub use event::nip34_event;
pub use relay::relay_message;
pub use url::repo_url;

use grasp_lib::git::pktline::{read_push_commands, PktLineError};
use grasp_lib::git::smart_http::rejection_response;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the directory names under `fuzz/seeds/` and
/// `fuzz/regressions/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("receive_pack_commands", receive_pack_commands),
    ("relay_message", relay_message),
    ("nip34_event", nip34_event),
    ("repo_url", repo_url),
];

/// The command section of a receive-pack request: parsed with a generous and with a tiny
/// size limit; a parsed section is an exact prefix of the input, its commands are well
/// formed, and the refusal built for it is valid pkt-lines.
pub fn receive_pack_commands(data: &[u8]) {
    for limit in [1 << 20, 64] {
        let mut reader = data;
        match futures::executor::block_on(read_push_commands(&mut reader, limit)) {
            Ok((commands, rest)) => {
                let mut consumed = commands.raw.clone();
                consumed.extend_from_slice(&rest);
                assert!(
                    data.starts_with(&consumed),
                    "raw section and leftover are not a prefix of the input"
                );
                assert!(commands.raw.ends_with(b"0000"), "the section ends with its flush packet");
                assert!(commands.raw.len() <= limit, "read past the limit");
                for update in &commands.updates {
                    for oid in [&update.old, &update.new] {
                        assert!(matches!(oid.len(), 40 | 64), "object id {oid:?}");
                        assert!(oid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                    }
                    assert!(!update.name.is_empty() && !update.name.contains([' ', '\0']));
                }
                assert_pkt_lines(&rejection_response(&commands, &String::from_utf8_lossy(data)));
            }
            Err(PktLineError::TooLarge(n)) => assert_eq!(n, limit),
            Err(_) => {}
        }
    }
}

/// Panics unless `bytes` is a sequence of well-formed pkt-lines.
fn assert_pkt_lines(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        assert!(bytes.len() >= 4, "truncated pkt-line length");
        let len = std::str::from_utf8(&bytes[..4]).ok().and_then(|h| usize::from_str_radix(h, 16).ok());
        let len = len.expect("hex pkt-line length");
        match len {
            0..=2 => bytes = &bytes[4..],
            3 => panic!("invalid pkt-line length 3"),
            n => {
                assert!(n <= 65520 && n <= bytes.len(), "pkt-line of {n} bytes");
                bytes = &bytes[n..];
            }
        }
    }
}
