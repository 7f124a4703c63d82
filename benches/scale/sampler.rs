//! Samples a count every 250 ms on a task of its own, for the Ready-over-time chart.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const EVERY: Duration = Duration::from_millis(250);

pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<(f64, usize)>>,
}

impl Sampler {
    /// Calls `probe` every [`EVERY`] and records (seconds since `origin`, value);
    /// a probe that fails (`None`) records nothing for that tick.
    pub fn start<F, Fut>(origin: Instant, mut probe: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Option<usize>> + Send,
    {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = vec![];
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        if let Some(value) = probe().await {
                            samples.push((origin.elapsed().as_secs_f64(), value));
                        }
                    }
                }
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling and returns what was recorded.
    pub async fn stop(self) -> Vec<(f64, usize)> {
        let _ = self.stop.send(());
        self.task.await.expect("the sampler task")
    }
}
