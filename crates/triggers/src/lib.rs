//! What calls functions besides HTTP: an MQTT subscription ([`mqtt`]) calls
//! a function per message, a timer ([`timer`]) calls one at an interval or
//! at the times of a [`cron`] schedule.
//! Both go through [`edge_core::Node::invoke`], like an HTTP call, and
//! forward a call whose session another node owns to that node.
//!
//! ```
//! let t: edge_triggers::MqttTrigger = "sensors/+/temp=thermo>alerts/{topic}".parse().unwrap();
//! assert_eq!(t.function, "thermo");
//! assert_eq!(t.session_for("sensors/line-3/temp"), "sensors.line-3.temp");
//! assert_eq!(t.reply_for("sensors/line-3/temp").unwrap(), "alerts/sensors/line-3/temp");
//! ```

pub mod cron;
pub mod mqtt;
pub mod timer;

pub use mqtt::{MqttBroker, MqttTrigger};
pub use timer::TimerTrigger;

use edge_core::Node;
use edge_core::invoke::{InvokeError, InvokeRequest};
use edge_proto::PeerRequest;

/// A trigger's configuration that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// How one triggered call ended.
#[derive(Debug)]
enum Outcome {
    /// The function answered: its output.
    Done(Vec<u8>),
    /// The function failed for good (its error, a trap): retrying would
    /// fail again.
    Failed(String),
    /// The node could not run it now (overloaded, no instance, a state
    /// store down, a deadline): worth another try.
    Busy(String),
}

/// Calls `function` in `session` with `input` on `node`, forwarding to the
/// session's owner when another node owns it.
async fn call(node: &Node, function: &str, session: &str, input: Vec<u8>) -> Outcome {
    let request = InvokeRequest::from_client(function, Some(session.to_owned()), input.clone());
    match node.invoke(request).await {
        Ok(outcome) => Outcome::Done(outcome.output),
        Err(InvokeError::Moved(owner)) => forward(node, &owner, function, session, input).await,
        Err(
            e @ (InvokeError::Overloaded(_)
            | InvokeError::Capacity(_)
            | InvokeError::Deadline(_)
            | InvokeError::State(_)
            | InvokeError::Contention(_)
            | InvokeError::Session(_)),
        ) => Outcome::Busy(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

async fn forward(
    node: &Node,
    owner: &str,
    function: &str,
    session: &str,
    input: Vec<u8>,
) -> Outcome {
    let deadline = node.config().invoke_deadline;
    let request =
        match PeerRequest::forwarded_invoke(owner, function, Some(session), input.into(), deadline)
        {
            Ok(request) => request,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
    match node.peer().send(request).await {
        Ok(answer) if answer.is_success() => Outcome::Done(answer.body.to_vec()),
        Ok(answer) if answer.status == 422 || answer.status == 404 => {
            Outcome::Failed(String::from_utf8_lossy(&answer.body).into_owned())
        }
        Ok(answer) => Outcome::Busy(format!("{owner} answered {}", answer.status)),
        Err(e) => Outcome::Busy(e.to_string()),
    }
}
