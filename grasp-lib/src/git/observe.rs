//! Watching an upload-pack exchange as it streams past, without buffering it: enough to
//! tell a clone from a fetch and whether a pack was sent, for metrics.
//!
//! The rule: an upload-pack request that is answered with a pack is one git operation. It
//! is a **clone** when the request carries no `have` line (the client has nothing in common
//! with the server to negotiate from), else a **fetch**. Negotiation rounds that end
//! without a pack (protocol v2 `ls-refs`, intermediate `fetch` rounds of a long
//! negotiation) are not operations, so a multi-round fetch counts once. The same rule works
//! for protocol v0 and v2 because both frame requests and side-band responses as
//! pkt-lines.
//!
//! Packs are megabytes of 64 KiB packets, so the scanner keeps only the first bytes of each
//! packet's payload and skips the rest; `gix-packetline` decodes whole packets, which would
//! mean holding each one in memory.

/// Bytes of a payload the scanner keeps (enough for `have `, `\x01PACK`, `packfile`).
const PEEK: usize = 16;

/// A packet as far as the scanner reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0000`, `0001` or `0002`.
    Special,
    /// A data packet: up to the first 16 bytes of its payload.
    Data(&'a [u8]),
    /// The stream stopped being pkt-lines here (a raw pack after the negotiation of a v0
    /// exchange without side-band starts with `PACK`); these are its first four bytes.
    Raw([u8; 4]),
}

/// Splits a pkt-line stream arriving in arbitrary chunks into packets.
#[derive(Debug, Default, Clone)]
pub struct PacketScanner {
    header: [u8; 4],
    header_len: usize,
    /// Payload bytes of the current packet still to come.
    remaining: usize,
    peek: [u8; PEEK],
    peek_len: usize,
    /// The stream is not pkt-lines (any more): nothing more is reported.
    raw: bool,
}

impl PacketScanner {
    /// Feeds the next bytes; calls `on_packet` once per packet, as soon as its first bytes
    /// (or all of a shorter payload) are in.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_packet: impl FnMut(Packet<'_>)) {
        while !chunk.is_empty() && !self.raw {
            if self.remaining == 0 {
                let take = (4 - self.header_len).min(chunk.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
                self.header_len += take;
                chunk = &chunk[take..];
                if self.header_len < 4 {
                    return;
                }
                self.header_len = 0;
                let length =
                    std::str::from_utf8(&self.header).ok().and_then(|h| usize::from_str_radix(h, 16).ok());
                match length {
                    Some(0..=2) => on_packet(Packet::Special),
                    Some(n) if n > 4 => {
                        self.remaining = n - 4;
                        self.peek_len = 0;
                    }
                    // 0003, 0004 (an empty data packet) and anything that is not hex.
                    Some(_) => on_packet(Packet::Data(&[])),
                    None => {
                        self.raw = true;
                        on_packet(Packet::Raw(self.header));
                    }
                }
                continue;
            }
            let take = self.remaining.min(chunk.len());
            let wanted = PEEK.min(self.peek_len + self.remaining);
            if self.peek_len < wanted {
                let copy = (wanted - self.peek_len).min(take);
                self.peek[self.peek_len..self.peek_len + copy].copy_from_slice(&chunk[..copy]);
                self.peek_len += copy;
                if self.peek_len == wanted {
                    on_packet(Packet::Data(&self.peek[..self.peek_len]));
                }
            }
            self.remaining -= take;
            chunk = &chunk[take..];
        }
    }
}

/// What a request and its response showed.
#[derive(Debug, Default, Clone)]
pub struct UploadPackObserver {
    request: PacketScanner,
    response: PacketScanner,
    /// The request asked for objects (`want` lines).
    pub wants: bool,
    /// The request named objects the client already has (`have` lines).
    pub haves: bool,
    /// The response carried a pack.
    pub pack_sent: bool,
    /// The response reported an error (an `ERR` packet, or side-band channel 3).
    pub failed: bool,
}

/// The kinds of git operations counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitOperation {
    /// An upload-pack exchange that sent a pack to a client that had nothing to negotiate.
    Clone,
    /// An upload-pack exchange that sent a pack after `have` lines.
    Fetch,
    /// A receive-pack request.
    Push,
}

impl GitOperation {
    /// Every operation.
    pub const ALL: [Self; 3] = [Self::Clone, Self::Fetch, Self::Push];

    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clone => "clone",
            Self::Fetch => "fetch",
            Self::Push => "push",
        }
    }
}

impl UploadPackObserver {
    /// The next bytes of the request body (after gzip decoding).
    pub fn on_request(&mut self, chunk: &[u8]) {
        let (wants, haves) = (&mut self.wants, &mut self.haves);
        self.request.feed(chunk, |packet| {
            if let Packet::Data(data) = packet {
                *wants |= data.starts_with(b"want ");
                *haves |= data.starts_with(b"have ");
            }
        });
    }

    /// The next bytes of the response body.
    pub fn on_response(&mut self, chunk: &[u8]) {
        let (pack_sent, failed) = (&mut self.pack_sent, &mut self.failed);
        self.response.feed(chunk, |packet| match packet {
            // Side-band channel 1 carrying the pack signature (v0 side-band, v2 packfile).
            Packet::Data(data) => {
                *pack_sent |= data.starts_with(b"\x01PACK");
                *failed |= data.starts_with(b"ERR ") || data.starts_with(b"\x03");
            }
            Packet::Raw(head) => *pack_sent |= &head == b"PACK",
            Packet::Special => {}
        });
    }

    /// The operation this exchange was, if it was one: a pack was sent, or the request
    /// wanted objects and the exchange failed (then it may have been the last round).
    /// Callers fold [`Self::failed`] into `succeeded`.
    pub fn operation(&self, succeeded: bool) -> Option<GitOperation> {
        let counts = self.pack_sent || (!succeeded && self.wants);
        counts.then_some(if self.haves { GitOperation::Fetch } else { GitOperation::Clone })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::pktline::{encode, sideband, FLUSH};

    const OID: &str = "1111111111111111111111111111111111111111";

    fn lines(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            out.extend(encode(l.as_bytes()));
        }
        out.extend_from_slice(FLUSH);
        out
    }

    /// Feeds `bytes` in chunks of every size from 1 to 9, so packet boundaries fall
    /// everywhere.
    fn observe(request: &[u8], response: &[u8]) -> Vec<UploadPackObserver> {
        (1..10)
            .map(|size| {
                let mut o = UploadPackObserver::default();
                request.chunks(size).for_each(|c| o.on_request(c));
                response.chunks(size).for_each(|c| o.on_response(c));
                o
            })
            .collect()
    }

    fn v0_response_with_pack() -> Vec<u8> {
        let mut out = encode(b"NAK\n");
        out.extend(sideband(2, b"Enumerating objects: 3, done.\n"));
        out.extend(encode(b"\x01")); // keep-alive: empty band-1 packet
        out.extend(sideband(1, &[b"PACK\x00\x00\x00\x02".as_slice(), &[7u8; 200]].concat()));
        out.extend_from_slice(FLUSH);
        out
    }

    #[test]
    fn a_v0_clone_has_no_haves_and_gets_a_pack() {
        let request = lines(&[&format!("want {OID} multi_ack side-band-64k"), "done"]);
        for o in observe(&request, &v0_response_with_pack()) {
            assert!(o.wants && !o.haves && o.pack_sent);
            assert_eq!(o.operation(true), Some(GitOperation::Clone));
        }
    }

    #[test]
    fn a_v2_fetch_has_haves() {
        let mut request = encode(b"command=fetch\n");
        request.extend(encode(b"agent=git/2.47\n"));
        request.extend_from_slice(b"0001");
        request.extend(encode(format!("want {OID}\n").as_bytes()));
        request.extend(encode(format!("have {OID}\n").as_bytes()));
        request.extend(encode(b"done\n"));
        request.extend_from_slice(FLUSH);
        let mut response = encode(b"packfile\n");
        response.extend(sideband(1, b"PACK\x00\x00\x00\x02rest"));
        response.extend_from_slice(FLUSH);
        for o in observe(&request, &response) {
            assert_eq!(o.operation(true), Some(GitOperation::Fetch));
        }
    }

    #[test]
    fn negotiation_without_a_pack_and_ls_refs_are_not_operations() {
        let ls_refs = lines(&["command=ls-refs\n", "peel\n"]);
        let refs = lines(&[&format!("{OID} HEAD\n")]);
        for o in observe(&ls_refs, &refs) {
            assert_eq!(o.operation(true), None);
        }
        let round = lines(&[&format!("want {OID}\n"), &format!("have {OID}\n")]);
        let acks = lines(&[&format!("ACK {OID} common\n"), "NAK\n"]);
        for o in observe(&round, &acks) {
            assert_eq!(o.operation(true), None);
            assert_eq!(o.operation(false), Some(GitOperation::Fetch), "a failed round counts as an error");
        }
    }

    #[test]
    fn an_error_git_reports_makes_a_wanted_exchange_a_failed_one() {
        let request = lines(&[&format!("want {OID}\n"), "done\n"]);
        for response in [encode(b"ERR upload-pack: not our ref 1111\n"), sideband(3, b"fatal: bad object\n")]
        {
            for o in observe(&request, &response) {
                assert!(o.failed);
                assert_eq!(o.operation(!o.failed), Some(GitOperation::Clone));
            }
        }
    }

    #[test]
    fn a_raw_pack_without_side_band_is_seen() {
        let request = lines(&[&format!("want {OID}\n"), "done\n"]);
        let mut response = encode(b"NAK\n");
        response.extend_from_slice(b"PACK\x00\x00\x00\x02binary");
        for o in observe(&request, &response) {
            assert_eq!(o.operation(true), Some(GitOperation::Clone));
        }
    }

    #[test]
    fn pack_data_that_looks_like_a_have_line_is_not_read_as_one() {
        // A long packet whose payload contains "have " after the first bytes.
        let payload = [vec![b'x'; 40], b"0009have x".to_vec()].concat();
        let request = [encode(format!("want {OID}\n").as_bytes()), encode(&payload), FLUSH.to_vec()].concat();
        for o in observe(&request, &v0_response_with_pack()) {
            assert!(!o.haves);
        }
    }
}
