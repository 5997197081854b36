//! Configuration as an operator meets it: flags, environment (native and ngit-grasp names),
//! config files, --help, and one-line failures.

use std::process::Command;

use grasp_tests::server::binary;
use grasp_tests::{frontend_tests, Frontend};

/// The options only grasp-proxy uses: listed by its --help, hidden by grasp-server's.
const PROXY_OPTIONS: [(&str, &str); 5] = [
    ("--upstream", "GRASP_UPSTREAM"),
    ("--upstream-connect-timeout-secs", "GRASP_UPSTREAM_CONNECT_TIMEOUT_SECS"),
    ("--upstream-timeout-secs", "GRASP_UPSTREAM_TIMEOUT_SECS"),
    ("--tls-certificate-path", "GRASP_TLS_CERTIFICATE_PATH"),
    ("--tls-private-key-path", "GRASP_TLS_PRIVATE_KEY_PATH"),
];

fn run(frontend: Frontend, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary(frontend.binary()))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("GRASP_LOG_LEVEL")
        .output()
        .expect("run the server binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn help_lists_every_option_with_env_names_and_defaults(frontend: Frontend) {
    let (code, stdout, _) = run(frontend, &["--help"], &[]);
    assert_eq!(code, 0);
    for (flag, env) in [
        ("--bind-address", "GRASP_BIND_ADDRESS"),
        ("--domain", "NGIT_DOMAIN"),
        ("--git-data-path", "NGIT_GIT_DATA_PATH"),
        ("--relay-data-path", "NGIT_RELAY_DATA_PATH"),
        ("--database-backend", "NGIT_DATABASE_BACKEND"),
        ("--relay-name", "NGIT_RELAY_NAME"),
        ("--relay-description", "NGIT_RELAY_DESCRIPTION"),
        ("--relay-owner-nsec", "NGIT_RELAY_OWNER_NSEC"),
        ("--log-level", "NGIT_LOG_LEVEL"),
        ("--test-mode", "NGIT_TEST"),
        ("--max-message-size", "GRASP_MAX_MESSAGE_SIZE"),
        ("--max-subscriptions", "GRASP_MAX_SUBSCRIPTIONS"),
        ("--max-filters", "GRASP_MAX_FILTERS"),
        ("--max-limit", "GRASP_MAX_LIMIT"),
        ("--events-per-minute", "GRASP_EVENTS_PER_MINUTE"),
    ] {
        assert!(stdout.contains(flag) && stdout.contains(env), "--help lacks {flag} / {env}:\n{stdout}");
    }
    assert!(stdout.contains("[default: 127.0.0.1:7334]"));
    assert!(stdout.contains("[default: ./data/repos]"));
    for (flag, env) in PROXY_OPTIONS {
        let listed = stdout.contains(&format!("{flag} ")) && stdout.contains(env);
        assert_eq!(listed, frontend == Frontend::Proxy, "{flag} in {} --help:\n{stdout}", frontend.binary());
    }
}

async fn bad_configuration_fails_at_start_with_one_line(frontend: Frontend) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "max_limt = 3\n").unwrap();
    let file_arg = format!("--config={}", file.display());
    for (args, env, needle) in [
        (vec!["--max-limit=abc"], vec![], "--max-limit"),
        (vec!["--domain=https://x/y"], vec![], "domain"),
        (vec![], vec![("NGIT_DOMAIN", "https://x/y")], "domain"),
        (vec![], vec![("NGIT_DATABASE_BACKEND", "postgres")], "postgres"),
        (vec!["--bind-address=nonsense"], vec![], "--bind-address"),
        (vec![file_arg.as_str()], vec![], "max_limt"),
        (vec!["--config=/does/not/exist.toml"], vec![], "/does/not/exist.toml"),
        (vec!["--relay-owner-nsec=nope"], vec![], "relay_owner_nsec"),
        (vec!["--max-subscriptions=0"], vec![], "max_subscriptions"),
    ] {
        let (code, _, stderr) = run(frontend, &args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line for {args:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn the_proxy_explains_a_missing_or_unusable_upstream() {
    for (args, needle) in [
        (vec![], "--upstream"),
        (vec!["--upstream=127.0.0.1:8080"], "upstream"),
        (vec!["--upstream=http://127.0.0.1:1", "--upstream-timeout-secs=0"], "upstream_timeout_secs"),
        (
            vec!["--upstream=http://127.0.0.1:1", "--tls-certificate-path=/nonexistent.pem"],
            "tls_certificate_path",
        ),
        (
            vec![
                "--upstream=http://127.0.0.1:1",
                "--tls-certificate-path=/nonexistent.pem",
                "--tls-private-key-path=/nonexistent.key",
            ],
            "/nonexistent.pem",
        ),
    ] {
        let (code, _, stderr) = run(Frontend::Proxy, &args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line for {args:?}: {stderr}");
        assert!(stderr.starts_with("grasp-proxy: ") && stderr.contains(needle), "{args:?}: {stderr}");
    }
}

async fn ngit_environment_names_configure_the_server(frontend: Frontend) {
    let server = frontend
        .builder()
        .env("NGIT_RELAY_NAME", "from ngit env")
        .env("NGIT_RELAY_DESCRIPTION", "described by ngit env")
        .env("NGIT_DATABASE_BACKEND", "memory")
        .start();
    let doc = server.nip11().await;
    assert_eq!(doc["name"], "from ngit env");
    assert_eq!(doc["description"], "described by ngit env");
    assert!(!server.data_dir().join("relay").join("data.mdb").exists(), "memory backend writes no LMDB file");
}

async fn config_file_values_apply_and_flags_override_them(frontend: Frontend) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grasp.toml");
    std::fs::write(&file, "relay_name = \"from file\"\nrelay_description = \"file description\"\n").unwrap();
    let server =
        frontend.builder().arg(format!("--config={}", file.display())).arg("--relay-name=from flag").start();
    let doc = server.nip11().await;
    assert_eq!(doc["name"], "from flag");
    assert_eq!(doc["description"], "file description");
}

frontend_tests!(
    help_lists_every_option_with_env_names_and_defaults,
    bad_configuration_fails_at_start_with_one_line,
    ngit_environment_names_configure_the_server,
    config_file_values_apply_and_flags_override_them,
);
