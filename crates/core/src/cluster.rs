//! The cluster as this node sees it. With a shared Redis (`--remote-store
//! redis://…`) every node beats its description into it each second (live
//! for three) and reads the others' from it: peers come from membership as
//! well as from `--peer`. Without one, the members are the `--peer`s that
//! answer (see [`PeerView`]); with neither, the node is a cluster of one.

use crate::node::Node;
use crate::registry::{DeployOptions, FunctionInfo};
use edge_host_api::StoreError;
use edge_proto::{ClusterFunction, Member, PeerRequest, routes};
use edge_store_redis::RedisMembership;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a node renews its entry.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long an entry lives without renewal.
pub const MEMBER_TTL: Duration = Duration::from_secs(3);

impl Node {
    /// This node as it describes itself to the cluster.
    pub fn describe(&self) -> Member {
        let c = &self.config;
        let max_in_flight = c.max_pending_invocations.max(1) as u64;
        Member {
            url: self.url(),
            functions: self.registry.list().into_iter().map(|f| f.name).collect(),
            in_flight: max_in_flight.saturating_sub(self.admission.available_permits() as u64),
            max_in_flight,
            local_sessions: self.metrics.local_sessions.get().max(0) as u64,
            max_local_sessions: c.max_local_sessions as u64,
            max_instances: u64::from(c.engine.max_instances),
        }
    }

    /// The URL other nodes reach this one at.
    pub fn url(&self) -> String {
        self.config.url()
    }

    /// The live members of the cluster, this node included: with a shared
    /// Redis, the nodes beating into it; without one, the `--peer`s that
    /// answered within [`MEMBER_TTL`] (only this node when Redis does not
    /// answer, or with neither).
    pub async fn members(&self) -> Vec<Member> {
        let me = self.describe();
        let Some(membership) = &self.membership else {
            let mut all = self.peer_view.live();
            all.retain(|m| m.url != me.url);
            all.push(me);
            all.sort_by(|a, b| a.url.cmp(&b.url));
            return all;
        };
        match membership.members().await {
            Ok(mut all) => {
                all.retain(|m| m.url != me.url);
                all.push(me);
                all.sort_by(|a, b| a.url.cmp(&b.url));
                all
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's members");
                vec![me]
            }
        }
    }

    /// True when `url` is a live member other than this node.
    pub async fn is_member(&self, url: &str) -> bool {
        let Some(url) = routes::normalise(url) else {
            return false;
        };
        self.members().await.iter().any(|m| {
            routes::normalise(&m.url).as_deref() == Some(url.as_str()) && m.url != self.url()
        })
    }

    /// True when `url` is known to be no live member: this node reads the
    /// membership, and `url` is not in it (it stopped beating over
    /// [`MEMBER_TTL`] ago). False without a membership or when Redis does
    /// not answer: then nobody knows.
    pub async fn is_gone(&self, url: &str) -> bool {
        let Some(membership) = &self.membership else {
            return false;
        };
        let Some(url) = routes::normalise(url) else {
            return false;
        };
        if routes::normalise(&self.url()).as_deref() == Some(url.as_str()) {
            return false;
        }
        match membership.members().await {
            Ok(members) => !members
                .iter()
                .any(|m| routes::normalise(&m.url).as_deref() == Some(url.as_str())),
            Err(_) => false,
        }
    }

    /// Where a call for `function`, which this node does not have, can go:
    /// the session's owner when another node owns it, else the least-loaded
    /// live member hosting the function. `None`: nowhere (not found).
    pub async fn broker(&self, function: &str, session: Option<&str>) -> Option<String> {
        if let Some(id) = session.filter(|s| edge_host_api::valid_session_id(s)) {
            match self.sessions.named_owner_elsewhere(id).await {
                Ok(Some(owner)) => return Some(owner),
                Ok(None) => {}
                Err(e) => tracing::warn!(session = id, error = %e, "owner lookup failed"),
            }
        }
        let members = self.members().await;
        let me = self.url();
        edge_proto::member::least_loaded(&members, function)
            .filter(|m| m.url != me)
            .map(|m| m.url.clone())
    }

    /// Leaves the cluster at once (shutdown), instead of after the TTL.
    pub async fn leave_cluster(&self) {
        if let Some(m) = &self.membership
            && let Err(e) = m.leave(&self.url()).await
        {
            tracing::warn!(error = %e, "could not leave the cluster");
        }
    }
}

/// Beats `node`'s description into the membership every [`BEAT`] while the
/// node lives, and at once when its functions change (so that the others
/// route calls to a function as soon as it is deployed).
pub(crate) fn spawn_heartbeat(node: Weak<Node>, membership: RedisMembership) {
    let Some(changes) = node.upgrade().map(|n| n.registry.changes()) else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = changes.notified() => {}
            }
            let Some(node) = node.upgrade() else { break };
            let (me, sessions) = (node.describe(), node.sessions.clone());
            // Not held across the beat: the node may be dropped meanwhile.
            drop(node);
            let sent = std::time::Instant::now();
            match membership.beat(&me, MEMBER_TTL).await {
                // Its local sessions are served while the beats go through.
                Ok(()) => sessions.renew_lease(sent),
                Err(e) => tracing::warn!(error = %e, "membership heartbeat failed"),
            }
        }
    });
}

/// Shows `node` to the cluster, if it has a membership: one beat now (its
/// lease on its local sessions holds from the first request on), then
/// every [`BEAT`].
pub async fn join(node: &Arc<Node>) {
    if let Some(m) = &node.membership {
        let sent = std::time::Instant::now();
        match m.beat(&node.describe(), MEMBER_TTL).await {
            Ok(()) => node.sessions.renew_lease(sent),
            Err(e) => tracing::warn!(error = %e, "first membership heartbeat failed"),
        }
        spawn_heartbeat(Arc::downgrade(node), m.clone());
        let node = Arc::downgrade(node);
        tokio::spawn(async move { fill_in(node).await });
    } else if !node.config.peers.is_empty() {
        spawn_peer_probes(Arc::downgrade(node));
    }
}

/// What `GET /v1/cluster` answers.
#[derive(serde::Deserialize)]
struct ClusterView {
    me: String,
    members: Vec<Member>,
}

/// The `--peer`s as last heard, for a node without a shared Redis: each is
/// asked for its description every [`BEAT`], and is a live member while its
/// last answer is younger than [`MEMBER_TTL`]. Only the addresses the
/// operator gave are asked (they get the cluster token), never ones
/// learned from others.
#[derive(Default)]
pub(crate) struct PeerView {
    heard: std::sync::Mutex<std::collections::HashMap<String, (Member, std::time::Instant)>>,
}

impl PeerView {
    /// The peers heard from within [`MEMBER_TTL`].
    fn live(&self) -> Vec<Member> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard
            .values()
            .filter(|(_, at)| at.elapsed() < MEMBER_TTL)
            .map(|(m, _)| m.clone())
            .collect()
    }

    fn heard(&self, member: Member) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.insert(member.url.clone(), (member, std::time::Instant::now()));
    }
}

/// Asks every `--peer` for its description each [`BEAT`] while the node
/// lives (a node without a shared Redis).
fn spawn_peer_probes(node: Weak<Node>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(node) = node.upgrade() else { break };
            let asked = node.config.peers.iter().map(|(_, url)| {
                let node = &node;
                async move {
                    match node.probe(url).await {
                        Ok(member) => node.peer_view.heard(member),
                        Err(e) => tracing::debug!(peer = %url, error = %e, "peer did not answer"),
                    }
                }
            });
            futures_util::future::join_all(asked).await;
        }
    });
}

/// How long fetching one cluster function's component from a member may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Deploys, each from a member that has it, every cluster function this
/// node lacks (it joined after `deploy --all`, or was away). A function of
/// that name deployed here already stays as it is. Returns how many it
/// deployed.
async fn fill_in(node: Weak<Node>) -> usize {
    let Some(records) = node.upgrade().and_then(|n| n.cluster_functions.clone()) else {
        return 0;
    };
    let records = match records.all().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster's functions");
            return 0;
        }
    };
    let mut deployed = 0;
    for record in records {
        let Some(node) = node.upgrade() else { break };
        if node.registry.info(&record.name).is_ok() {
            continue;
        }
        match node.deploy_from_members(&record).await {
            Ok(from) => {
                deployed += 1;
                tracing::info!(function = %record.name, %from, "deployed the cluster's function");
            }
            Err(why) => {
                tracing::warn!(function = %record.name, %why, "cannot deploy the cluster's function")
            }
        }
    }
    deployed
}

impl Node {
    /// `url`'s description of itself, from its view of the cluster; its
    /// URL is `url` as the operator gave it.
    async fn probe(&self, url: &str) -> Result<Member, String> {
        let endpoint = routes::endpoint(url, &["v1", "cluster"]).map_err(|e| e.to_string())?;
        let answer = self
            .peer
            .send(PeerRequest::get(endpoint).timeout(BEAT))
            .await
            .and_then(|a| a.success())
            .map_err(|e| e.to_string())?;
        let view: ClusterView = answer.json().map_err(|e| e.to_string())?;
        let mut me = view
            .members
            .into_iter()
            .find(|m| m.url == view.me)
            .ok_or("its view of the cluster leaves itself out")?;
        me.url = routes::normalise(url).unwrap_or_else(|| url.to_owned());
        Ok(me)
    }

    /// Records `info`'s function as the cluster's: nodes that join later
    /// deploy it at start. Without a shared Redis, does nothing.
    pub async fn record_cluster_function(&self, info: &FunctionInfo) -> Result<(), StoreError> {
        let Some(functions) = &self.cluster_functions else {
            return Ok(());
        };
        functions
            .record(&ClusterFunction {
                name: info.name.clone(),
                digest: info.digest.clone(),
                flush_interval_ms: info.flush_interval_ms,
                allow_hosts: info.allow_hosts.clone(),
            })
            .await
    }

    /// Forgets `name` as a cluster function. Without a shared Redis, does
    /// nothing.
    pub async fn forget_cluster_function(&self, name: &str) -> Result<(), StoreError> {
        match &self.cluster_functions {
            Some(functions) => functions.forget(name).await,
            None => Ok(()),
        }
    }

    /// Fetches `record`'s component from a live member that has it (its
    /// bytes must hash to the recorded digest) and deploys it here with the
    /// recorded options; returns the member's URL.
    async fn deploy_from_members(&self, record: &ClusterFunction) -> Result<String, String> {
        let me = self.url();
        let mut tried = Vec::new();
        for member in self.members().await {
            if member.url == me || !member.functions.contains(&record.name) {
                continue;
            }
            let fetched = async {
                let url =
                    routes::component(&member.url, &record.name).map_err(|e| e.to_string())?;
                let answer = self
                    .peer
                    .send(PeerRequest::get(url).timeout(FETCH_TIMEOUT))
                    .await
                    .and_then(|a| a.success())
                    .map_err(|e| e.to_string())?;
                if crate::registry::sha256_hex(&answer.body) != record.digest {
                    return Err("its component is another version".to_owned());
                }
                let options = DeployOptions {
                    flush_interval_ms: record.flush_interval_ms,
                    allow_hosts: record.allow_hosts.clone(),
                };
                self.registry
                    .deploy_with(&record.name, answer.body.to_vec(), options)
                    .await
                    .map_err(|e| e.to_string())
            };
            match fetched.await {
                Ok(_) => return Ok(member.url),
                Err(e) => tried.push(format!("{}: {e}", member.url)),
            }
        }
        if tried.is_empty() {
            return Err("no live member has it".into());
        }
        Err(tried.join("; "))
    }
}
