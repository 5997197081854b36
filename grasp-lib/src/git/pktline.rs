//! Git pkt-lines: reading the command section of a receive-pack request (before any git
//! process runs) and writing the few responses we produce ourselves.
//!
//! Decoding uses `gix-packetline`'s incremental decoder, so we know the exact byte where the
//! command list ends: those bytes are forwarded to git unchanged and the pack that follows
//! is never buffered here.

use gix_packetline::decode::{self, Stream};
use gix_packetline::PacketLineRef;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::is_zero_oid;
use crate::nip34::is_object_id;

/// Largest pkt-line payload with a side-band byte (65520 - 4 length bytes - 1 band byte).
const MAX_BAND_PAYLOAD: usize = 65515;

/// The flush packet.
pub const FLUSH: &[u8] = b"0000";

/// One pkt-line carrying `data`.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// `data` on side-band channel `band` (1 data, 2 progress, 3 error), split into as many
/// pkt-lines as needed.
pub fn sideband(band: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for chunk in data.chunks(MAX_BAND_PAYLOAD) {
        let mut line = Vec::with_capacity(chunk.len() + 1);
        line.push(band);
        line.extend_from_slice(chunk);
        out.extend(encode(&line));
    }
    out
}

/// One `<old> <new> <ref>` command of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The ref's value the client expects now (all zeros: create).
    pub old: String,
    /// The value after the push (all zeros: delete).
    pub new: String,
    /// Full ref name, e.g. `refs/heads/main`.
    pub name: String,
}

impl RefUpdate {
    /// Parses one `<old> <new> <ref>` command: a line of a push's command section, or a
    /// line git writes to the standard input of `pre-receive` and `post-receive` hooks.
    /// Object ids are lower-cased.
    pub fn parse(text: &str) -> Result<Self, PktLineError> {
        let mut parts = text.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PktLineError::Malformed(format!(
                "expected '<old> <new> <ref>', got '{}'",
                text.escape_debug()
            )));
        };
        if !is_object_id(old) || !is_object_id(new) || old.len() != new.len() {
            return Err(PktLineError::Malformed(format!("bad object id in '{}'", text.escape_debug())));
        }
        if name.is_empty() || name.chars().any(|c| c == ' ' || c.is_control()) {
            return Err(PktLineError::Malformed(format!("bad ref name '{}'", name.escape_debug())));
        }
        Ok(RefUpdate { old: old.to_ascii_lowercase(), new: new.to_ascii_lowercase(), name: name.to_owned() })
    }

    /// Parses what git writes to a `pre-receive` or `post-receive` hook: one
    /// `<old> <new> <ref>` line per ref (blank lines are skipped).
    pub fn parse_hook_input(input: &str) -> Result<Vec<Self>, PktLineError> {
        input.lines().filter(|l| !l.trim().is_empty()).map(Self::parse).collect()
    }

    /// True when the push deletes the ref.
    pub fn is_delete(&self) -> bool {
        is_zero_oid(&self.new)
    }

    /// True when old and new are equal (nothing changes).
    pub fn is_noop(&self) -> bool {
        self.old == self.new
    }
}

impl std::fmt::Display for RefUpdate {
    /// `<old> <new> <ref>`, the form [`RefUpdate::parse`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.old, self.new, self.name)
    }
}

/// The command section of a receive-pack request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCommands {
    /// The ref updates, in request order.
    pub updates: Vec<RefUpdate>,
    /// Capabilities the client asked for on the first command.
    pub capabilities: Vec<String>,
    /// The exact bytes of the section, flush included, to replay to git.
    pub raw: Vec<u8>,
}

impl PushCommands {
    /// True when the client asked for capability `name`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name || c.starts_with(&format!("{name}=")))
    }
}

/// Why a receive-pack request could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PktLineError {
    /// The body ended before the flush packet.
    #[error("truncated request: the body ended before the command list was complete")]
    Truncated,
    /// A line is not a valid pkt-line or command.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The command list is larger than we accept.
    #[error("the command list of this push is larger than {0} bytes")]
    TooLarge(usize),
    /// Reading the body failed.
    #[error("could not read the request body: {0}")]
    Io(String),
    /// The client stopped sending before the command list was complete.
    #[error("{0}")]
    Stalled(String),
}

fn parse_command(line: &[u8], first: bool, out: &mut PushCommands) -> Result<(), PktLineError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (command, caps) = match (first, line.iter().position(|b| *b == 0)) {
        (true, Some(nul)) => (&line[..nul], Some(&line[nul + 1..])),
        (false, Some(_)) => return Err(PktLineError::Malformed("NUL byte after the first command".into())),
        (_, None) => (line, None),
    };
    let text =
        std::str::from_utf8(command).map_err(|_| PktLineError::Malformed("command is not UTF-8".into()))?;
    out.updates.push(RefUpdate::parse(text)?);
    if let Some(caps) = caps {
        let caps = String::from_utf8_lossy(caps);
        out.capabilities = caps.split_whitespace().map(str::to_owned).collect();
    }
    Ok(())
}

/// Reads the command section (shallow lines, commands, flush) from `reader`. Returns it and
/// the bytes read past its end (the start of the pack), which belong to git.
pub async fn read_push_commands<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<(PushCommands, Vec<u8>), PktLineError> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut pos = 0;
    let mut commands = PushCommands::default();
    loop {
        match decode::streaming(&buf[pos..]) {
            Ok(Stream::Complete { line, bytes_consumed }) => {
                pos += bytes_consumed;
                if pos > max_bytes {
                    return Err(PktLineError::TooLarge(max_bytes));
                }
                match line {
                    PacketLineRef::Flush => {
                        commands.raw = buf[..pos].to_vec();
                        return Ok((commands, buf[pos..].to_vec()));
                    }
                    PacketLineRef::Data(data) if data.starts_with(b"shallow ") => {}
                    PacketLineRef::Data(data) => {
                        let first = commands.updates.is_empty();
                        parse_command(data, first, &mut commands)?;
                    }
                    PacketLineRef::Delimiter | PacketLineRef::ResponseEnd => {
                        return Err(PktLineError::Malformed(
                            "unexpected delimiter packet in the command list".into(),
                        ))
                    }
                }
            }
            Ok(Stream::Incomplete { .. }) => {
                if buf.len() >= max_bytes {
                    return Err(PktLineError::TooLarge(max_bytes));
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = reader.read(&mut chunk).await.map_err(|e| {
                    if crate::limits::is_idle_timeout(&e) {
                        PktLineError::Stalled(e.to_string())
                    } else {
                        PktLineError::Io(e.to_string())
                    }
                })?;
                if n == 0 {
                    return Err(PktLineError::Truncated);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => return Err(PktLineError::Malformed(format!("bad pkt-line: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn hook_input_lines_parse_and_round_trip() {
        let input = format!("{Z} {A} refs/heads/main\n\n{A} {Z} refs/tags/v1\n");
        let updates = RefUpdate::parse_hook_input(&input).unwrap();
        assert_eq!(updates.len(), 2);
        assert!(updates[1].is_delete());
        assert_eq!(RefUpdate::parse(&updates[0].to_string()).unwrap(), updates[0]);
        assert_eq!(RefUpdate::parse(&format!("{} {B} refs/heads/x", A.to_uppercase())).unwrap().old, A);
        for bad in [
            format!("{Z} {A}"),
            format!("{Z} {A} "),
            format!("{Z} xyz refs/heads/main"),
            format!("{Z} {} refs/heads/main", "1".repeat(64)),
            format!("{Z} {A} refs/heads/a b"),
            format!("{Z} {A} refs/heads/a\tb"),
        ] {
            assert!(RefUpdate::parse(&bad).is_err(), "{bad:?}");
        }
    }

    fn request(lines: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            out.extend(encode(l.as_bytes()));
        }
        out.extend_from_slice(FLUSH);
        out.extend_from_slice(tail);
        out
    }

    #[tokio::test]
    async fn reads_commands_capabilities_and_leaves_the_pack() {
        let first = format!("{Z} {A} refs/heads/main\0report-status side-band-64k agent=git/2.47\n");
        let second = format!("{A} {Z} refs/heads/old\n");
        let body = request(&[&first, &second], b"PACKdata");
        let (cmds, rest) = read_push_commands(&mut body.as_slice(), 1 << 20).await.unwrap();
        assert_eq!(cmds.updates.len(), 2);
        assert_eq!(
            cmds.updates[0],
            RefUpdate { old: Z.into(), new: A.into(), name: "refs/heads/main".into() }
        );
        assert!(cmds.updates[1].is_delete());
        assert!(cmds.has_capability("report-status") && cmds.has_capability("agent"));
        assert!(!cmds.has_capability("atomic"));
        assert_eq!(rest, b"PACKdata");
        assert_eq!(cmds.raw, body[..body.len() - 8]);
    }

    #[tokio::test]
    async fn skips_shallow_lines_and_reads_across_small_chunks() {
        let body = request(&[&format!("shallow {B}"), &format!("{A} {B} refs/tags/v1\0quiet")], b"");
        // one byte at a time
        let mut reader = tokio_test::io::Builder::new();
        for b in &body {
            reader.read(std::slice::from_ref(b));
        }
        let (cmds, rest) = read_push_commands(&mut reader.build(), 1 << 20).await.unwrap();
        assert_eq!(cmds.updates[0].name, "refs/tags/v1");
        assert_eq!(cmds.capabilities, vec!["quiet"]);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn rejects_bad_input() {
        let truncated = &request(&[&format!("{Z} {A} refs/heads/x\0")], b"")[..20];
        assert_eq!(
            read_push_commands(&mut &truncated[..], 1 << 20).await.unwrap_err(),
            PktLineError::Truncated
        );
        assert!(matches!(
            read_push_commands(&mut &b"zzzz garbage"[..], 1 << 20).await,
            Err(PktLineError::Malformed(_))
        ));
        let bad_oid = request(&["nothex nothex refs/heads/x"], b"");
        assert!(matches!(
            read_push_commands(&mut bad_oid.as_slice(), 1 << 20).await,
            Err(PktLineError::Malformed(_))
        ));
        let huge = request(&[&format!("{Z} {A} refs/heads/{}", "x".repeat(2000))], b"");
        assert_eq!(
            read_push_commands(&mut huge.as_slice(), 100).await.unwrap_err(),
            PktLineError::TooLarge(100)
        );
        assert_eq!(read_push_commands(&mut &b""[..], 100).await.unwrap_err(), PktLineError::Truncated);
    }

    #[test]
    fn sideband_splits_long_messages() {
        let data = vec![b'x'; MAX_BAND_PAYLOAD + 10];
        let out = sideband(2, &data);
        assert_eq!(&out[..4], b"fff0");
        assert_eq!(out[4], 2);
        assert_eq!(out.len(), (4 + 1 + MAX_BAND_PAYLOAD) + (4 + 1 + 10));
    }
}
