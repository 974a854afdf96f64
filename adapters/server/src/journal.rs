//! The service's background work on tokio: writes that outlive their request, and the
//! journal settler that carries unfinished e-mail changes through.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use profile_core::Executor;
use profile_core::{ProfileService, RecoveryReport};

/// How often the settler looks at the journal. An entry a request abandoned is settled
/// by the next update of its user at once; this bounds how long others wait.
const SETTLE_EVERY: Duration = Duration::from_secs(1);

/// [`Executor`] on the current tokio runtime. Tracks what it spawned, so shutdown can
/// wait for writes whose clients went away.
#[derive(Default, Clone)]
pub struct TokioExecutor {
    tasks: tokio_util::task::TaskTracker,
}

impl TokioExecutor {
    /// Waits, at most `limit`, for every write spawned so far to finish.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }
}

impl Executor for TokioExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.tasks.spawn(task);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Describes the journal metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "journal_recoveries_total",
        "Unfinished cross-database e-mail changes settled by the service, by outcome"
    );
    metrics::describe_gauge!(
        "journal_entries_stuck",
        "Unfinished e-mail changes that could not be settled on the last pass (retried with backoff)"
    );
}

/// Counts and logs what one pass did.
fn record(report: &RecoveryReport) {
    metrics::counter!("journal_recoveries_total", "outcome" => "completed")
        .increment(u64::from(report.completed));
    metrics::counter!("journal_recoveries_total", "outcome" => "rolled_back")
        .increment(u64::from(report.rolled_back));
    metrics::gauge!("journal_entries_stuck").set(f64::from(report.stuck));
    if report.completed + report.rolled_back > 0 {
        tracing::warn!(
            completed = report.completed,
            rolled_back = report.rolled_back,
            "settled unfinished e-mail changes"
        );
    }
    if report.stuck > 0 {
        tracing::warn!(stuck = report.stuck, "unfinished e-mail changes could not be settled yet; retrying");
    }
}

/// One pass, logged; a journal that cannot be read now is reported and left for later.
pub async fn settle_once(service: &ProfileService) {
    match service.settle_journal().await {
        Ok(report) => record(&report),
        Err(e) => tracing::warn!(error = %e, "cannot read the e-mail change journal; retrying"),
    }
}

/// Settles the journal every [`SETTLE_EVERY`] until aborted.
pub fn spawn_settler(service: Arc<ProfileService>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SETTLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            settle_once(&service).await;
        }
    })
}
