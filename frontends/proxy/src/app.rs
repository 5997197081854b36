//! What the proxy is made of: the library handle, the upstream, and the limits it applies
//! per request.

use grasp_lib::limits::{Admission, ServerLimits};
use grasp_lib::Grasp;
use pingora::connectors::http::Connector;

use crate::upstream::Upstream;

/// The proxy: the library handle, the upstream, a client for forwarding pushes, and the
/// limits it applies per request.
pub struct GraspProxy {
    pub grasp: Grasp,
    pub upstream: Upstream,
    /// Connections to the upstream for pushes, which [`crate::push`] forwards itself.
    pub connector: Connector,
    pub limits: ServerLimits,
    /// The connection caps; the listener takes connection slots, the proxy takes client
    /// slots behind a trusted reverse proxy.
    pub admission: Admission,
}

impl GraspProxy {
    /// A proxy in front of `upstream`.
    pub fn new(grasp: Grasp, upstream: Upstream, limits: ServerLimits, admission: Admission) -> Self {
        Self { grasp, upstream, connector: Connector::new(None), limits, admission }
    }
}
