//! Local-state places across the cluster: a client's request for
//! local-state that this node must refuse for want of room goes to the
//! member with the most room instead, which takes the session's ownership
//! (through the directory, as any transition does) and serves it; this
//! node then passes the session's calls to it. Only with a shared Redis:
//! without the directory nobody could tell which node owns the session.

use crate::node::Node;
use crate::session::{ModeOutcome, SessionError, SessionMode};
use edge_proto::routes::{self, FORWARDED_HEADER};
use edge_proto::{Member, PeerRequest};
use serde::Serialize;

/// Members asked, at most, before the refusal stands.
const MEMBERS_ASKED: usize = 2;

/// What a client's request for a mode came to across the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterModeOutcome {
    /// The outcome, here or at `owner`.
    #[serde(flatten)]
    pub outcome: ModeOutcome,
    /// The member that took the session local when this node had no room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A member's answer to a mode request.
#[derive(serde::Deserialize)]
struct Answered {
    mode: SessionMode,
    duration_us: u64,
}

impl Node {
    /// As [`Node::set_mode`]; and when local-state is refused here for want
    /// of room (`capacity`) on a node of a cluster, the members with room
    /// that have every function the session uses are asked to take it
    /// local, most room first ([`MEMBERS_ASKED`] at most). A request passed
    /// on by another node (`forwarded`) is never passed on again.
    pub async fn set_mode_in_cluster(
        &self,
        id: &str,
        mode: SessionMode,
        forwarded: bool,
    ) -> Result<ClusterModeOutcome, SessionError> {
        let outcome = self.set_mode(id, mode).await?;
        let here = ClusterModeOutcome {
            outcome,
            owner: None,
        };
        if forwarded || mode != SessionMode::Local || outcome.reason != Some("capacity") {
            return Ok(here);
        }
        Ok(match self.place_at_member(id).await? {
            Some((member, duration_us)) => ClusterModeOutcome {
                outcome: ModeOutcome {
                    mode: SessionMode::Local,
                    reason: None,
                    duration_us,
                },
                owner: Some(member),
            },
            None => here,
        })
    }

    /// Asks the members with room that have every function session `id`
    /// uses to take it local, most room first ([`MEMBERS_ASKED`] at most):
    /// the member that took it and how long its move took (µs), or `None`
    /// when none did. Only on a node of a cluster (with a shared Redis).
    pub(crate) async fn place_at_member(
        &self,
        id: &str,
    ) -> Result<Option<(String, u64)>, SessionError> {
        if self.membership.is_none() {
            return Ok(None);
        }
        let functions = self.sessions.get(id).await?.functions();
        let me = self.url();
        let mut roomy: Vec<Member> = self
            .members()
            .await
            .into_iter()
            .filter(|m| m.url != me && m.local_sessions < m.max_local_sessions)
            .filter(|m| functions.iter().all(|f| m.functions.contains(f)))
            .collect();
        roomy.sort_by(|a, b| fill(a).total_cmp(&fill(b)).then_with(|| a.url.cmp(&b.url)));
        for member in roomy.into_iter().take(MEMBERS_ASKED) {
            match self.ask_local(&member.url, id).await {
                Ok(answer) if answer.mode == SessionMode::Local => {
                    tracing::info!(session = id, to = %member.url, "no room here: local at a member");
                    self.metrics.spilled.inc();
                    return Ok(Some((member.url, answer.duration_us)));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(session = id, member = %member.url, error = %e, "member did not take the session")
                }
            }
        }
        Ok(None)
    }

    /// Asks `member` to make session `id` local, as a request passed on.
    async fn ask_local(&self, member: &str, id: &str) -> Result<Answered, edge_proto::PeerError> {
        let url = routes::session(member, id, &["mode"])?;
        let body = serde_json::json!({ "mode": SessionMode::Local });
        let request = PeerRequest::put_json(url, &body)?
            .header(FORWARDED_HEADER, "1")
            .timeout(self.config.invoke_deadline);
        self.peer.send(request).await?.success()?.json()
    }
}

/// How full a member's local places are (0 empty, 1 full).
fn fill(m: &Member) -> f64 {
    m.local_sessions as f64 / m.max_local_sessions.max(1) as f64
}
