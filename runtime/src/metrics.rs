//! The node's metrics, rendered as Prometheus text by `GET /metrics`.

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
    /// Workflow tasks waiting on this node for inputs or states.
    pub workflow_pending: IntGauge,
    /// Calls run on the background runtime, by reason.
    pub background_calls: IntCounterVec,
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

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let invocations = IntCounterVec::new(
            Opts::new(
                "edge_invocations_total",
                "Invocations by function, start kind and outcome",
            ),
            &["function", "start", "outcome"],
        )?;
        let invoke_seconds = HistogramVec::new(
            HistogramOpts::new(
                "edge_invoke_duration_seconds",
                "Invocation latency in the node",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["function"],
        )?;
        let compilations = IntCounter::new("edge_compilations_total", "Components compiled")?;
        let compile_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "edge_compile_duration_seconds",
                "Time to compile a component",
            )
            .buckets(COMPILE_BUCKETS.to_vec()),
        )?;
        let compile_peak_rss = Histogram::with_opts(
            HistogramOpts::new(
                "edge_compile_peak_rss_bytes",
                "Peak resident memory of a compiler worker process",
            )
            .buckets(prometheus::exponential_buckets(16.0 * 1048576.0, 2.0, 9)?),
        )?;
        let shed = IntCounter::new(
            "edge_shed_total",
            "Invocations refused with 503 beyond the admission limit",
        )?;
        let compile_refusals = IntCounter::new(
            "edge_compile_refusals_total",
            "Uploads refused for going past the compile time or memory limit",
        )?;
        let artifact_loads = IntCounter::new(
            "edge_artifact_loads_total",
            "Compiled artifacts loaded from the data dir instead of compiled",
        )?;
        let live_instances = IntGauge::new("edge_live_instances", "Instances alive now")?;
        let functions = IntGauge::new("edge_functions", "Functions deployed")?;
        let state_conflicts = IntCounter::new(
            "edge_state_conflicts_total",
            "Invocations re-run because state they read changed before commit",
        )?;
        let transitions = IntCounterVec::new(
            Opts::new("edge_transitions_total", "Session mode transitions"),
            &["from", "to", "trigger"],
        )?;
        let transition_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "edge_transition_duration_seconds",
                "Time to move a session's state",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let pinned_instances = IntGauge::new(
            "edge_pinned_instances",
            "Instances pinned to local sessions",
        )?;
        let local_sessions = IntGauge::new("edge_local_sessions", "Sessions in local-state mode")?;
        let evictions = IntCounter::new(
            "edge_pinned_evictions_total",
            "Pinned instances dropped after the idle TTL",
        )?;
        let workflow_pending = IntGauge::new(
            "edge_workflow_pending",
            "Workflow tasks waiting here for inputs or states",
        )?;
        let background_calls = IntCounterVec::new(
            Opts::new(
                "edge_background_calls_total",
                "Calls run at background priority: moved after their slice, or started there because their function misbehaved",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(background_calls.clone()))?;
        registry.register(Box::new(workflow_pending.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(transition_seconds.clone()))?;
        registry.register(Box::new(pinned_instances.clone()))?;
        registry.register(Box::new(local_sessions.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(invocations.clone()))?;
        registry.register(Box::new(invoke_seconds.clone()))?;
        registry.register(Box::new(compilations.clone()))?;
        registry.register(Box::new(compile_seconds.clone()))?;
        registry.register(Box::new(compile_peak_rss.clone()))?;
        registry.register(Box::new(compile_refusals.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(artifact_loads.clone()))?;
        registry.register(Box::new(live_instances.clone()))?;
        registry.register(Box::new(functions.clone()))?;
        registry.register(Box::new(state_conflicts.clone()))?;
        Ok(Self {
            registry,
            invocations,
            invoke_seconds,
            compilations,
            compile_seconds,
            compile_peak_rss,
            compile_refusals,
            shed,
            artifact_loads,
            live_instances,
            functions,
            state_conflicts,
            transitions,
            transition_seconds,
            pinned_instances,
            local_sessions,
            evictions,
            workflow_pending,
            background_calls,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
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
