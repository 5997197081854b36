//! A fresh PostgreSQL database per test, on the server `GRASP_TEST_DATABASE_URL` names
//! (scripts/test.sh starts one). Without it the tests that need PostgreSQL say why and skip,
//! unless `GRASP_REQUIRE_POSTGRES=1` (set by scripts/test.sh), where they fail instead.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One database created for one test; [`TestDatabase::drop_now`] removes it.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL of the fresh database.
    pub url: String,
}

/// The admin URL, `None` (after saying why) when PostgreSQL tests are to be skipped.
/// Panics when they are required but no server is configured.
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var("GRASP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("GRASP_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("{test}: GRASP_REQUIRE_POSTGRES=1 but GRASP_TEST_DATABASE_URL is not set")
        }
        _ => {
            eprintln!(
                "{test}: skipping PostgreSQL: GRASP_TEST_DATABASE_URL is not set (scripts/test.sh starts a server)"
            );
            None
        }
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
}

impl TestDatabase {
    /// Creates a database with a name no other test uses.
    pub async fn create(admin_url: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name =
            format!("grasp_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        admin(admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        let mut url: url::Url = admin_url.parse().expect("GRASP_TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Self { admin_url: admin_url.to_owned(), name, url: url.to_string() }
    }

    /// Drops the database (closing whatever is still connected to it).
    pub async fn drop_now(self) {
        admin(&self.admin_url)
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await
            .expect("DROP DATABASE");
    }
}
