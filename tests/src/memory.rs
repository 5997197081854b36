//! Memory of a process, from /proc, for "does memory grow with pack size" checks.

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`), in bytes.
pub fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
}

/// Current resident set size.
pub fn rss(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
}

/// Peak resident set size since the process started.
pub fn peak_rss(pid: u32) -> u64 {
    status_field(pid, "VmHWM")
}

/// Writes `bytes` of incompressible data to `path` (from /dev/urandom).
pub fn write_random_file(path: &std::path::Path, bytes: u64) {
    use std::io::{Read, Write};
    let mut src = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    let mut dst = std::fs::File::create(path).expect("create file");
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n]).expect("random bytes");
        dst.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
}
