//! [`ViewServer`]: the view service run on one node, in the same sans-IO shape as a replica.
//!
//! The pb scheme runs one of these (a single point of failure; see [`crate::view_service`]).
//! It turns each [`Message::Ping`] into a [`ViewService::ping`] (each [`Message::PingFrom`]
//! into a [`ViewService::ping_from`]) and answers with a
//! [`Message::ViewReply`].

use chorus_core::NodeId;

use crate::message::Message;
use crate::ready::PbReady;
use crate::replica::StepError;
use crate::view_service::{DurableView, ViewService, ViewServiceConfig, ViewServiceConfigError};

/// Replies waiting for the next Ready; beyond this, replies are dropped (the servers ping
/// again next interval).
pub const VIEW_REPLIES_MAX: usize = 1024;

/// The view service as a node.
#[derive(Debug)]
pub struct ViewServer {
    service: ViewService,
    messages: Vec<(NodeId, Message)>,
    ready_outstanding: bool,
}

impl ViewServer {
    /// A view server with no view yet.
    ///
    /// # Errors
    /// [`ViewServiceConfigError`] if the configuration cannot work.
    pub fn new(config: ViewServiceConfig) -> Result<ViewServer, ViewServiceConfigError> {
        Ok(ViewServer {
            service: ViewService::new(config)?,
            messages: Vec::new(),
            ready_outstanding: false,
        })
    }

    /// A view server restarted from the view it made durable before (see
    /// [`ViewService::resume`]).
    ///
    /// # Errors
    /// [`ViewServiceConfigError`] if the configuration cannot work.
    pub fn resume(
        config: ViewServiceConfig,
        durable: DurableView,
    ) -> Result<ViewServer, ViewServiceConfigError> {
        Ok(ViewServer {
            service: ViewService::resume(config, durable)?,
            messages: Vec::new(),
            ready_outstanding: false,
        })
    }

    /// The service's state.
    #[must_use]
    pub fn service(&self) -> &ViewService {
        &self.service
    }

    /// One ping interval passed.
    pub fn tick(&mut self) {
        self.service.tick();
    }

    /// A message arrived from `from`.
    ///
    /// # Errors
    /// [`StepError::Unexpected`] for anything but a ping, [`StepError::Ping`] for a refused
    /// ping (not answered); the service is then unchanged.
    pub fn step(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        let reply = match message {
            Message::Ping { view } => self.service.ping(from, view),
            Message::PingFrom { view, incarnation } => {
                self.service.ping_from(from, view, incarnation)
            }
            _ => return Err(StepError::Unexpected("the view service only takes pings")),
        }
        .map_err(StepError::Ping)?;
        if self.messages.len() < VIEW_REPLIES_MAX {
            self.messages.push((from, Message::ViewReply(reply)));
        }
        Ok(())
    }

    /// Whether replies wait to be sent.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        !self.ready_outstanding && !self.messages.is_empty()
    }

    /// Takes the replies to send.
    ///
    /// # Panics
    /// If the previous Ready was not yet advanced.
    pub fn ready(&mut self) -> PbReady {
        assert!(
            !self.ready_outstanding,
            "ready() called before the previous Ready was advanced"
        );
        self.ready_outstanding = true;
        PbReady {
            messages: std::mem::take(&mut self.messages),
            ..PbReady::default()
        }
    }

    /// The driver sent the last Ready's messages.
    ///
    /// # Panics
    /// If no Ready is outstanding.
    pub fn advance(&mut self) {
        assert!(
            self.ready_outstanding,
            "advance() called without an outstanding Ready"
        );
        self.ready_outstanding = false;
    }
}
