//! PostgreSQL for the black-box tests: a fresh database per server or test, on the server
//! `GRASP_TEST_DATABASE_URL` names (scripts/test.sh starts one and sets it, with
//! `GRASP_REQUIRE_POSTGRES=1` so nothing that needs it is skipped there).
//!
//! `GRASP_TEST_BACKEND=postgres` runs the whole suite a second time with every server on
//! its own PostgreSQL database ([`crate::server::TestServerBuilder`]).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's admin URL; `None` (after saying why on stderr) when tests that need
/// PostgreSQL are to be skipped. Panics when `GRASP_REQUIRE_POSTGRES=1` and none is set.
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var("GRASP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("GRASP_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("{test}: GRASP_REQUIRE_POSTGRES=1 but GRASP_TEST_DATABASE_URL is not set")
        }
        _ => {
            eprintln!(
                "{test}: skipping: GRASP_TEST_DATABASE_URL is not set (scripts/test.sh starts a PostgreSQL)"
            );
            None
        }
    }
}

/// True when the suite runs with `GRASP_TEST_BACKEND=postgres`.
pub fn suite_on_postgres() -> bool {
    std::env::var("GRASP_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// Runs one SQL statement as the admin with `psql`.
fn admin_sql(admin_url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args([admin_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// One database, created fresh and dropped (closing its connections) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl TestDatabase {
    /// Creates a database with a name no other test or process uses.
    pub fn create(admin_url: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name =
            format!("grasp_bb_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        admin_sql(admin_url, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| panic!("{e}"));
        let mut url: reqwest::Url = admin_url.parse().expect("GRASP_TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Self { admin_url: admin_url.to_owned(), name, url: url.to_string() }
    }
}

impl TestDatabase {
    /// Runs one SQL statement in this database (as the admin, who owns it).
    pub fn execute(&self, sql: &str) {
        admin_sql(&self.url, sql).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(e) =
            admin_sql(&self.admin_url, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        {
            eprintln!("dropping the test database: {e}");
        }
    }
}
