//! What machine the numbers come from.

use std::process::Command;

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_else(|| "not found".to_owned())
}

/// A short description: CPU, cores, memory, kernel, tool versions, date.
pub fn describe() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .unwrap_or("")
        .replace("MemTotal:", "")
        .trim()
        .to_owned();
    vec![
        ("date".into(), first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        ("cpu".into(), cpu),
        ("cores".into(), std::thread::available_parallelism().map(|n| n.to_string()).unwrap_or_default()),
        ("memory".into(), mem),
        ("kernel".into(), first_line("uname", &["-sr"])),
        ("git".into(), first_line("git", &["--version"])),
        ("nginx".into(), first_line("nginx", &["-v"])),
        ("grasp-server".into(), env!("CARGO_PKG_VERSION").to_owned()),
    ]
}
