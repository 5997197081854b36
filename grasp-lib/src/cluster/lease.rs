//! The leader lease: one node of a cluster runs the jobs that must run once (the purgatory
//! expiry sweep, hunting, relay sync). The lease is a row in `grasp_leases` with a holder
//! and an expiry; its holder renews it every third of its term, and any node takes it over
//! once it has expired: a node that dies or loses the database loses it within one term.
//!
//! Without PostgreSQL there is one node, and it always leads.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::postgres::PostgresDatabase;

/// The lease's name in `grasp_leases`.
const LEADER: &str = "leader";

/// Whether this node leads now, and a way to wait until it does. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    leads: watch::Receiver<bool>,
}

impl Leadership {
    /// A single node: always the leader.
    pub fn single() -> Self {
        let (tx, leads) = watch::channel(true);
        // The sender may go: the value stays readable, and waiters see it is true.
        drop(tx);
        Self { leads }
    }

    /// Competes for the lease in `db` as `holder`, renewing it every third of `term`, for as
    /// long as the process runs.
    pub fn compete(db: PostgresDatabase, holder: String, term: Duration) -> Self {
        let (tx, leads) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let held = match acquire(&db, &holder, term).await {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the leader lease failed");
                        false
                    }
                };
                if held != *tx.borrow() {
                    tracing::info!(node = %holder, leads = held, "leader lease {}", if held { "taken" } else { "lost" });
                    tx.send_replace(held);
                }
                tokio::time::sleep(term / 3).await;
            }
        });
        Self { leads }
    }

    /// True while this node leads.
    pub fn leads(&self) -> bool {
        *self.leads.borrow()
    }

    /// Waits until this node leads.
    pub async fn acquired(&self) {
        let mut leads = self.leads.clone();
        let _ = leads.wait_for(|leads| *leads).await;
    }

    /// Waits until this node no longer leads (never, for a single node).
    pub async fn lost(&self) {
        let mut leads = self.leads.clone();
        if leads.wait_for(|leads| !*leads).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Takes or renews the lease; true when `holder` holds it now.
async fn acquire(db: &PostgresDatabase, holder: &str, term: Duration) -> Result<bool, String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    let term_secs = term.as_secs_f64();
    let row = client
        .query_opt(
            "INSERT INTO grasp_leases (name, holder, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3::float8)) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE grasp_leases.holder = EXCLUDED.holder OR grasp_leases.expires_at < now() \
             RETURNING holder",
            &[&LEADER, &holder, &term_secs],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.is_some())
}
