//! A matched rule's traffic policies, applied between routing and the rule's action,
//! in the order of Istio's filter chain (authentication and authorization before
//! them, the router after): `fault` (Envoy's fault filter), then `corsPolicy`
//! (Envoy's CORS filter).
//!
//! - **Delay**: drawn per request from `delay.percentage`; the request then waits
//!   `fixedDelay` on a shard timer before going on, flag `DI`. It holds nothing but
//!   its connection while it waits: no upstream connection, no cap. A client that
//!   goes away meanwhile (an HTTP/1.1 close, an HTTP/2 reset or connection end) ends
//!   the wait and the request (`DC`); bytes an HTTP/1.1 client sends meanwhile (its
//!   body) are kept for forwarding, and the rest of the wait is a plain timer.
//! - **Abort**: drawn per request from `abort.percentage`, after any delay: answered
//!   `httpStatus` with body `fault filter abort`, flag `FI`, details
//!   `fault_filter_abort`; the upstream never sees the request. A gRPC client (over
//!   HTTP/2) gets Envoy's trailers-only answer: `grpc-status` the abort's
//!   `grpcStatus` or the one mapped from `httpStatus`, `grpc-message: fault filter
//!   abort`; any other client of a `grpcStatus` abort gets `200` with that body.
//! - **CORS** (routes that forward; Envoy's CORS filter skips redirects and direct
//!   responses): see `http/cors.rs`. A preflight the gateway answers is logged with
//!   details `cors_response`; an allowed origin's response gets its headers through
//!   [`Applied::cors_ops`].

use crate::config::{Fault, HeaderOps};
use crate::http::cors::{self, Cors, CorsRequest};
use crate::http::{self, RequestHead};
use crate::route::{Action, Route};
use crate::shard::ShardStats;
use crate::uring;

use super::mirror::Pending;
use super::{Connection, Downstream, Next, ProxyError};

/// The body of Envoy's fault-filter abort.
pub(crate) const FAULT_ABORT: &str = "fault filter abort";

/// What a rule's policies keep for the request being answered, in
/// `Connection::applied` (reset when a request begins).
#[derive(Default)]
pub(super) struct Applied {
    /// The response header operations when the CORS policy adds headers (the route's
    /// own, then CORS's); `None`: the route's own.
    pub(super) cors_ops: Option<HeaderOps>,
    /// Mirrored copies waiting for the rest of the request's body.
    pub(super) mirroring: Option<Pending>,
}

/// The response header operations of a request on `route`: CORS's when its policy
/// adds headers (the route's own and CORS's), else the route's own.
pub(super) fn response_ops<'a>(applied: Option<&'a Applied>, route: &'a Route) -> &'a HeaderOps {
    applied
        .and_then(|a| a.cors_ops.as_ref())
        .unwrap_or(&route.headers.response)
}

impl Connection {
    /// Applies `route`'s fault and CORS policies to the request `head`: `Some` when
    /// the request was answered here (an abort, a preflight), `None` to go on to the
    /// route's action. `close` says whether a local answer ends the connection.
    pub(super) async fn apply_policies(
        &mut self,
        route: &Route,
        head: &RequestHead,
        close: bool,
    ) -> Result<Option<Next>, ProxyError> {
        if let Some(fault) = &route.policies.fault
            && let Some(next) = self.apply_fault(fault, route, head, close).await?
        {
            return Ok(Some(next));
        }
        let Some(policy) = &route.policies.cors else {
            return Ok(None);
        };
        if !matches!(route.action, Action::Forward(_)) {
            return Ok(None);
        }
        let req = CorsRequest {
            method: head.method(),
            origin: head.header("origin"),
            request_method: head.header("access-control-request-method"),
            request_headers: head.header("access-control-request-headers"),
        };
        let stats = &self.ctx.stats;
        match cors::decide(policy, &req) {
            Cors::Untouched => Ok(None),
            Cors::NotAllowed => {
                ShardStats::add(&stats.cors_origin_invalid);
                Ok(None)
            }
            Cors::Allowed { origin } => {
                ShardStats::add(&stats.cors_origin_valid);
                let ops = cors::response_ops(policy, origin, &route.headers.response);
                self.applied.get_or_insert_default().cors_ops = Some(ops);
                Ok(None)
            }
            Cors::Preflight { allowed } => {
                ShardStats::add(match allowed {
                    true => &stats.cors_origin_valid,
                    false => &stats.cors_origin_invalid,
                });
                self.out.clear();
                cors::write_preflight(policy, &req, allowed, close, &mut self.out);
                route.stats.count(200);
                self.answered_locally(200, None, "cors_response");
                Ok(Some(self.respond_locally(head.len(), close).await?))
            }
        }
    }

    /// The fault filter: a delay, then an abort, each drawn on its own.
    async fn apply_fault(
        &mut self,
        fault: &Fault,
        route: &Route,
        head: &RequestHead,
        close: bool,
    ) -> Result<Option<Next>, ProxyError> {
        let delayed = match fault.delay {
            Some(delay) if delay.share.draw() => {
                ShardStats::add(&self.ctx.stats.fault_delays_injected);
                if let Some(record) = self.record.as_deref_mut() {
                    record.flags = "DI";
                }
                self.fault_delay(delay.fixed).await?;
                true
            }
            _ => false,
        };
        let Some(abort) = fault.abort.filter(|a| a.share.draw()) else {
            return Ok(None);
        };
        ShardStats::add(&self.ctx.stats.fault_aborts_injected);
        self.out.clear();
        http::text_response(
            abort.status,
            FAULT_ABORT.as_bytes(),
            None,
            close,
            &mut self.out,
        );
        route.stats.count(abort.status);
        let flag = if delayed { "DI,FI" } else { "FI" };
        self.answered_locally(abort.status, Some(flag), "fault_filter_abort");
        // A gRPC client gets a trailers-only answer, `grpc-message` the body's text.
        self.client
            .note_local_reply(abort.status, abort.grpc_status, FAULT_ABORT);
        Ok(Some(self.respond_locally(head.len(), close).await?))
    }

    /// Waits `fixed` on the shard's timer; a client that goes away meanwhile ends the
    /// wait and the request. An HTTP/1.1 client is read meanwhile: what it sends is
    /// kept in `inbuf`, and after its first bytes the rest of the wait is a plain timer
    /// (nothing more is buffered). An HTTP/2 stream is watched for the client's reset
    /// or the connection's end.
    async fn fault_delay(&mut self, fixed: std::time::Duration) -> Result<(), ProxyError> {
        let until = uring::now() + fixed;
        if let Downstream::H2(stream) = &mut self.client {
            return match uring::timeout(fixed, stream.reset_by_client()).await {
                Err(_) => Ok(()),
                Ok(()) => Err(ProxyError::ClientClosed),
            };
        }
        match uring::timeout(fixed, self.client.read(&mut self.inbuf)).await {
            Err(_) => return Ok(()),
            Ok(Ok(0)) => return Err(ProxyError::ClientClosed),
            Ok(Err(e)) => return Err(ProxyError::Client(e)),
            Ok(Ok(_)) => {}
        }
        let left = until.saturating_duration_since(uring::now());
        if !left.is_zero() {
            uring::sleep(left).await;
        }
        Ok(())
    }
}
