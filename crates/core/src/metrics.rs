//! The node's metrics, rendered as Prometheus text by `GET /metrics`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the node exports, in a registry of its own (so several nodes
/// can live in one process, as tests do).
pub struct Metrics {
    registry: Registry,
    /// Invocations by function, start kind (`cold`/`warm`) and outcome.
    pub invocations: IntCounterVec,
    /// Invocation latency by function, seconds.
    pub invoke_seconds: HistogramVec,
    /// Components compiled (uploads and recompiles).
    pub compilations: IntCounter,
    /// Compile time, seconds.
    pub compile_seconds: Histogram,
    /// Invocations shed (503 overloaded) beyond the admission limit.
    pub shed: IntCounter,
    /// Peak resident memory of a compiler worker process, bytes.
    pub compile_peak_rss: Histogram,
    /// Uploads of a component already deployed: not compiled again.
    pub compile_reuses: IntCounter,
    /// Uploads refused for going past the compile time or memory limit.
    pub compile_refusals: IntCounter,
    /// Artifacts loaded from the cache instead of compiled.
    pub artifact_loads: IntCounter,
    /// Instances alive now.
    pub live_instances: IntGauge,
    /// Functions deployed.
    pub functions: IntGauge,
    /// Commits retried because a key read had changed.
    pub state_conflicts: IntCounter,
    /// Mode transitions by from, to and trigger.
    pub transitions: IntCounterVec,
    /// Transition time, seconds.
    pub transition_seconds: Histogram,
    /// Instances pinned to local sessions now.
    pub pinned_instances: IntGauge,
    /// Sessions in local-state mode now.
    pub local_sessions: IntGauge,
    /// Pinned instances dropped for idleness.
    pub evictions: IntCounter,
    /// Local sessions demoted to remote-state to make room for another.
    pub demotions: IntCounter,
    /// Remote sessions made local for their call rate (or by the
    /// orchestrator).
    pub promotions: IntCounter,
    /// Sessions a member took local when this node had no room for them.
    pub spilled: IntCounter,
    /// Pinned instances dropped because every instance slot was held.
    pub pressure_evictions: IntCounter,
    /// Sessions the orchestrator's last plan makes local.
    pub orchestrator_local: IntGauge,
    /// Sessions this node took over from an owner that was gone.
    pub takeovers: IntCounter,
    /// Stale local copies dropped (the directory named another owner or none).
    pub stale_copies: IntCounter,
    /// Local sessions copied to the remote store (cluster snapshots).
    pub snapshots: IntCounter,
    /// Workflow tasks waiting on this node for inputs or states.
    pub workflow_pending: IntGauge,
    /// Calls run on the background runtime, by reason.
    pub background_calls: IntCounterVec,
    /// Calls made by triggers, by trigger (`mqtt`, `timer`) and outcome
    /// (`done`; `failed`: the function's error, not retried; `retried`: the
    /// node was busy and the call is tried again; `dropped`: busy on its
    /// last try).
    pub trigger_calls: IntCounterVec,
    /// MQTT replies to triggered calls, by outcome (`published`, `failed`).
    pub trigger_replies: IntCounterVec,
}

/// Why metrics could not be set up (a name registered twice: a bug).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
const COMPILE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Creates metrics and registers them as it goes.
struct Add<'a>(&'a Registry);

impl Add<'_> {
    fn reg<M: Collector + Clone + 'static>(
        &self,
        m: Result<M, prometheus::Error>,
    ) -> Result<M, MetricsError> {
        let m = m?;
        self.0.register(Box::new(m.clone()))?;
        Ok(m)
    }

    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
        self.reg(IntCounter::new(name, help))
    }

    fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        self.reg(IntGauge::new(name, help))
    }

    fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        self.reg(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> Result<Histogram, MetricsError> {
        self.reg(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets),
        ))
    }
}

impl Metrics {
    /// Creates and registers every metric, and the process collector.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let add = Add(&registry);
        let latency = LATENCY_BUCKETS.to_vec();
        let rss_buckets = prometheus::exponential_buckets(16.0 * 1048576.0, 2.0, 9)?;
        let metrics = Self {
            invocations: add.counters(
                "edge_invocations_total",
                "Invocations by function, start kind and outcome",
                &["function", "start", "outcome"],
            )?,
            invoke_seconds: add.reg(HistogramVec::new(
                HistogramOpts::new("edge_invoke_duration_seconds", "Invocation latency in the node")
                    .buckets(latency.clone()),
                &["function"],
            ))?,
            compilations: add.counter("edge_compilations_total", "Components compiled")?,
            compile_seconds: add.histogram(
                "edge_compile_duration_seconds",
                "Time to compile a component",
                COMPILE_BUCKETS.to_vec(),
            )?,
            compile_peak_rss: add.histogram(
                "edge_compile_peak_rss_bytes",
                "Peak resident memory of a compiler worker process",
                rss_buckets,
            )?,
            shed: add.counter(
                "edge_shed_total",
                "Invocations refused with 503 beyond the admission limit",
            )?,
            compile_reuses: add.counter(
                "edge_compile_reuses_total",
                "Uploads of a component already deployed, served by its compiled artifact",
            )?,
            compile_refusals: add.counter(
                "edge_compile_refusals_total",
                "Uploads refused for going past the compile time or memory limit",
            )?,
            artifact_loads: add.counter(
                "edge_artifact_loads_total",
                "Compiled artifacts loaded from the data dir instead of compiled",
            )?,
            live_instances: add.gauge("edge_live_instances", "Instances alive now")?,
            functions: add.gauge("edge_functions", "Functions deployed")?,
            state_conflicts: add.counter(
                "edge_state_conflicts_total",
                "Invocations re-run because state they read changed before commit",
            )?,
            transitions: add.counters(
                "edge_transitions_total",
                "Session mode transitions",
                &["from", "to", "trigger"],
            )?,
            transition_seconds: add.histogram(
                "edge_transition_duration_seconds",
                "Time to move a session's state",
                latency,
            )?,
            pinned_instances: add
                .gauge("edge_pinned_instances", "Instances pinned to local sessions")?,
            local_sessions: add.gauge("edge_local_sessions", "Sessions in local-state mode")?,
            evictions: add.counter(
                "edge_pinned_evictions_total",
                "Pinned instances dropped after the idle TTL",
            )?,
            demotions: add.counter(
                "edge_demotions_total",
                "Local sessions demoted to remote-state: idle ones making room for one that asked, or by the orchestrator",
            )?,
            promotions: add.counter(
                "edge_promotions_total",
                "Remote sessions made local by the node for their call rate or by the orchestrator",
            )?,
            spilled: add.counter(
                "edge_sessions_spilled_total",
                "Sessions a member took local when this node had no room for them",
            )?,
            pressure_evictions: add.counter(
                "edge_pressure_evictions_total",
                "Idle pinned instances dropped because every instance slot was held",
            )?,
            orchestrator_local: add.gauge(
                "edge_orchestrator_planned_local",
                "Sessions the orchestrator's last plan makes local",
            )?,
            takeovers: add.counter(
                "edge_takeovers_total",
                "Sessions taken over from an owner that was not a live member",
            )?,
            stale_copies: add.counter(
                "edge_stale_copies_dropped_total",
                "Local copies dropped because the directory named another owner or none",
            )?,
            snapshots: add.counter(
                "edge_snapshots_total",
                "Local sessions copied to the remote store, for a takeover to go on from",
            )?,
            workflow_pending: add.gauge(
                "edge_workflow_pending",
                "Workflow tasks waiting here for inputs or states",
            )?,
            background_calls: add.counters(
                "edge_background_calls_total",
                "Calls run at background priority: moved after their slice, or started there because their function misbehaved",
                &["reason"],
            )?,
            trigger_calls: add.counters(
                "edge_trigger_calls_total",
                "Calls made by MQTT and timer triggers, by trigger and outcome",
                &["trigger", "outcome"],
            )?,
            trigger_replies: add.counters(
                "edge_trigger_replies_total",
                "MQTT replies to triggered calls, by outcome",
                &["outcome"],
            )?,
            registry: registry.clone(),
        };
        // The node process itself: resident and virtual memory, CPU seconds,
        // open file descriptors and their limit, start time.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// Exports the counters of `store`'s state cache, read at each render:
    /// `edge_state_cache_hits_total`, `edge_state_cache_misses_total`,
    /// `edge_state_cache_bytes`.
    pub fn watch_state_cache(
        &self,
        store: std::sync::Arc<edge_store_sled::SledStore>,
    ) -> Result<(), MetricsError> {
        let collector = StateCache {
            hits: IntCounter::new(
                "edge_state_cache_hits_total",
                "State reads served from the in-memory cache",
            )?,
            misses: IntCounter::new(
                "edge_state_cache_misses_total",
                "State reads that went to sled",
            )?,
            bytes: IntGauge::new("edge_state_cache_bytes", "Bytes held by the state cache")?,
            store,
            reading: std::sync::Mutex::new(()),
        };
        self.registry.register(Box::new(collector))?;
        Ok(())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The state cache's figures, read from the store when rendered.
struct StateCache {
    hits: IntCounter,
    misses: IntCounter,
    bytes: IntGauge,
    store: std::sync::Arc<edge_store_sled::SledStore>,
    /// One render at a time sets the metrics from the store's figures.
    reading: std::sync::Mutex<()>,
}

impl Collector for StateCache {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.hits.desc();
        d.extend(self.misses.desc());
        d.extend(self.bytes.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let _one = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        let stats = self.store.cache_stats();
        self.hits.reset();
        self.hits.inc_by(stats.hits);
        self.misses.reset();
        self.misses.inc_by(stats.misses);
        self.bytes
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        let mut out = self.hits.collect();
        out.extend(self.misses.collect());
        out.extend(self.bytes.collect());
        out
    }
}

/// Counts an instance as live until dropped.
pub struct LiveInstance(IntGauge);

impl LiveInstance {
    /// Marks one more instance live.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.dec();
    }
}
