//! The admin endpoint (being replaced by the full endpoint).

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::ControlEvent;
use super::status::Status;

/// The running admin endpoint.
pub struct Admin;

/// Starts the admin endpoint on `addr`.
pub fn spawn(
    _addr: SocketAddr,
    _status: Arc<Status>,
    _events: Sender<ControlEvent>,
) -> anyhow::Result<Admin> {
    Ok(Admin)
}
