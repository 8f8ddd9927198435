//! What edge-nodes say to each other, in one place: the wire types of the
//! state server and of migrations ([`session`]), the framing of workflow
//! messages ([`envelope`]), the routes and headers ([`routes`]), and the one
//! client every node-to-node request goes through ([`PeerClient`]).
//!
//! ```
//! use edge_proto::{PeerRequest, Retry, routes};
//! use std::time::Duration;
//!
//! let url = routes::session("http://10.0.0.2:7878", "s1", &["state"])?;
//! assert_eq!(url.as_str(), "http://10.0.0.2:7878/v1/sessions/s1/state");
//! // A GET may be sent again once if it got no answer; a POST never, unless asked.
//! let request = PeerRequest::get(url).timeout(Duration::from_secs(2)).retry(Retry::Never);
//! assert_eq!(request.url().path(), "/v1/sessions/s1/state");
//! # Ok::<(), edge_proto::PeerError>(())
//! ```

pub mod client;
pub mod envelope;
pub mod member;
pub mod routes;
pub mod session;

pub use client::{Answer, PeerClient, PeerError, PeerRequest, Retry};
pub use envelope::{Cost, Envelope, Kind, WireError};
pub use member::{ClusterFunction, Member};
/// The URL type of [`routes`] and [`PeerRequest`].
pub use reqwest::Url;
pub use session::{ImportRequest, KeyVersion, WireCommit, WireEntry};
