//! Where things are on a node: every route one node calls on another, and
//! the headers of the API. URLs are built here and only here, with each
//! segment escaped.

use crate::client::PeerError;

/// The session a call belongs to (request and response).
pub const SESSION_HEADER: &str = "edge-session";
/// `cold` or `warm`: how the instance that served the call started.
pub const START_HEADER: &str = "edge-start";
/// Time spent in the node on the call, microseconds.
pub const DURATION_HEADER: &str = "edge-duration-us";
/// The state mode the call ran in.
pub const MODE_HEADER: &str = "edge-mode";
/// Why the mode differs from the one asked for.
pub const MODE_REASON_HEADER: &str = "edge-mode-reason";
/// The node that served a call another node passed on: its session's
/// owner, or a member hosting a function the first node lacks.
pub const OWNER_HEADER: &str = "edge-owner";
/// Set on a call one node passes to another: the receiver serves it or
/// refuses it, and never passes it on for a function it lacks.
pub const FORWARDED_HEADER: &str = "edge-forwarded";
/// `0` when a StateLocal state fetched from its owner has no value.
pub const STATE_PRESENT_HEADER: &str = "edge-state-present";

/// Headers about one connection, not the request: a request passed to
/// another node, and its answer passed back, go without them (and without
/// the client's token: the hop presents the cluster's).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
];

/// `base` followed by `segments`, each escaped.
pub fn endpoint(base: &str, segments: &[&str]) -> Result<reqwest::Url, PeerError> {
    let mut url = reqwest::Url::parse(base).map_err(|_| PeerError::Url(base.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(PeerError::Url(base.to_owned()));
    }
    url.path_segments_mut()
        .map_err(|_| PeerError::Url(base.to_owned()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// `/v1/sessions/{id}/…tail` on `base`.
pub fn session(base: &str, id: &str, tail: &[&str]) -> Result<reqwest::Url, PeerError> {
    let mut segments = vec!["v1", "sessions", id];
    segments.extend_from_slice(tail);
    endpoint(base, &segments)
}

/// `/v1/functions/{name}/invoke` on `base` (forwarding a moved session's call).
pub fn invoke(base: &str, name: &str) -> Result<reqwest::Url, PeerError> {
    endpoint(base, &["v1", "functions", name, "invoke"])
}

/// `/v1/functions` on `base` (what a peer has deployed).
pub fn functions(base: &str) -> Result<reqwest::Url, PeerError> {
    endpoint(base, &["v1", "functions"])
}

/// `/v1/functions/{name}/component` on `base`: the component a function
/// was deployed from (for nodes of the cluster only).
pub fn component(base: &str, name: &str) -> Result<reqwest::Url, PeerError> {
    endpoint(base, &["v1", "functions", name, "component"])
}

/// `/v1/wf/…tail` on `base`: the workflow messages.
pub fn wf(base: &str, tail: &[&str]) -> Result<reqwest::Url, PeerError> {
    let mut segments = vec!["v1", "wf"];
    segments.extend_from_slice(tail);
    endpoint(base, &segments)
}

/// `url` as an http(s) URL without a trailing slash, for comparing node
/// addresses; `None` when it is not one.
pub fn normalise(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped_and_bases_checked() {
        let u = session("http://n:1/", "a/b", &["state", "k?x"]).unwrap();
        assert_eq!(u.as_str(), "http://n:1/v1/sessions/a%2Fb/state/k%3Fx");
        assert_eq!(
            wf("http://n:1", &["deliver"]).unwrap().as_str(),
            "http://n:1/v1/wf/deliver"
        );
        assert!(endpoint("ftp://n", &[]).is_err());
        assert!(endpoint("mailto:x@y", &[]).is_err());
        assert_eq!(normalise("http://n:1/").as_deref(), Some("http://n:1"));
        assert_eq!(normalise("nope"), None);
    }
}
