//! The HTTP face of a node: the API routes and the server loop.

mod api;
mod auth;
mod error;
mod extract;
mod server;
mod sessions;
mod workflows;

pub use api::{
    DURATION_HEADER, MODE_HEADER, MODE_REASON_HEADER, OWNER_HEADER, SESSION_HEADER, START_HEADER,
    router,
};
pub use auth::AuthConfig;
pub use error::ApiError;
pub use server::{ServerConfig, serve};
