//! Graceful shutdown.
//!
//! Shutdown is an argument, not a global: `main` creates one [`Shutdown`],
//! hands clones to every task, and each task's loop `select!`s on
//! [`Shutdown::cancelled`]. In production [`Shutdown::trigger_on_signal`]
//! triggers it on SIGINT or SIGTERM; tests call [`Shutdown::trigger`] and
//! never send signals.

use std::sync::Arc;

use tokio::sync::watch;

/// Installs handlers for SIGINT (Ctrl-C) and SIGTERM (what Kubernetes and
/// `docker stop` send) now, and returns a future that completes when either
/// arrives. Installed before the future is first polled, so a signal sent
/// as soon as this returns is caught rather than killing the process.
/// Must be called from within a Tokio runtime.
///
/// If a signal handler cannot be installed (which does not happen on a normal
/// Unix system), the failure is logged and only the other signal is awaited,
/// rather than shutting down at once or never.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};

        fn install(kind: SignalKind, name: &str) -> Option<Signal> {
            signal(kind)
                .inspect_err(|error| {
                    tracing::error!(%error, "cannot listen for {name}; only the other signal will stop the process");
                })
                .ok()
        }
        async fn received(stream: &mut Option<Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }

        let mut interrupt = install(SignalKind::interrupt(), "SIGINT");
        let mut terminate = install(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = received(&mut interrupt) => tracing::info!("received SIGINT, shutting down"),
                () = received(&mut terminate) => tracing::info!("received SIGTERM, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("received Ctrl-C, shutting down");
        }
    }
}

/// A cloneable shutdown token. Every clone sees the same state: once
/// [`trigger`](Self::trigger)ed, every pending and future
/// [`cancelled`](Self::cancelled) completes at once.
///
/// Built on a `watch` channel whose sender lives inside the token, so a
/// waiter can never be left hanging by a dropped sender.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A token that has not been triggered.
    pub fn new() -> Self {
        Self { tx: Arc::new(watch::Sender::new(false)) }
    }

    /// Starts shutdown. Idempotent; never blocks.
    pub fn trigger(&self) {
        self.tx.send_if_modified(|triggered| !std::mem::replace(triggered, true));
    }

    /// Whether shutdown has started, for loops that poll rather than select.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once shutdown has started (at once if it already has).
    /// Cancel-safe: use it as a `select!` arm in a loop.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // `wait_for` fails only when the sender is dropped, and `self` holds it.
        let _ = rx.wait_for(|triggered| *triggered).await;
    }

    /// Spawns a task on the current Tokio runtime that triggers this token on
    /// SIGINT or SIGTERM. Must be called from within a runtime.
    pub fn trigger_on_signal(&self) -> tokio::task::JoinHandle<()> {
        let token = self.clone();
        // Installed here, not in the task: a signal sent as soon as this
        // returns is caught.
        let signal = shutdown_signal();
        tokio::spawn(async move {
            tokio::select! {
                () = signal => token.trigger(),
                () = token.cancelled() => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_clone() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());

        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = shutdown.clone();
                tokio::spawn(async move { s.cancelled().await })
            })
            .collect();
        tokio::task::yield_now().await;
        for w in &waiters {
            assert!(!w.is_finished(), "nobody may finish before trigger");
        }

        shutdown.clone().trigger();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
        }
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn cancelled_after_trigger_completes_immediately_and_trigger_is_idempotent() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), shutdown.cancelled()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), shutdown.clone().cancelled()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn not_cancelled_without_trigger() {
        let shutdown = Shutdown::new();
        let waited = tokio::time::timeout(Duration::from_secs(3600), shutdown.cancelled()).await;
        assert!(waited.is_err(), "cancelled() must wait for trigger()");
    }

    #[tokio::test(start_paused = true)]
    async fn select_loop_stops_on_trigger() {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let worker = tokio::spawn(async move {
            let mut ticks = 0u32;
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            loop {
                tokio::select! {
                    () = s.cancelled() => break ticks,
                    _ = interval.tick() => ticks += 1,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!worker.is_finished());
        shutdown.trigger();
        let ticks = tokio::time::timeout(Duration::from_secs(5), worker).await.unwrap().unwrap();
        assert!(ticks > 0);
    }

    #[tokio::test]
    async fn signal_task_ends_when_triggered_otherwise() {
        let shutdown = Shutdown::new();
        let task = shutdown.trigger_on_signal();
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    /// A real SIGTERM, sent to a child process running
    /// `child_waits_for_sigterm`, so this test binary keeps its own handlers.
    #[cfg(unix)]
    #[test]
    fn sigterm_triggers_shutdown() {
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new(exe)
            .args(["--exact", "shutdown::tests::child_waits_for_sigterm", "--nocapture", "--include-ignored"])
            .env("PULSE_RUNTIME_SIGNAL_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("CHILD-RESULT shutdown triggered by SIGTERM"), "{stdout}");
    }

    #[cfg(unix)]
    #[tokio::test]
    #[ignore = "run by sigterm_triggers_shutdown in a child process"]
    async fn child_waits_for_sigterm() {
        if std::env::var_os("PULSE_RUNTIME_SIGNAL_CHILD").is_none() {
            return;
        }
        let shutdown = Shutdown::new();
        // The handlers are installed when this returns: a SIGTERM right
        // after must trigger the token, not kill the process.
        let task = shutdown.trigger_on_signal();
        assert!(!shutdown.is_triggered());
        let status =
            std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status().unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled()).await.unwrap();
        task.await.unwrap();
        println!("CHILD-RESULT shutdown triggered by SIGTERM");
    }
}
