//! The entry points of `bench/auth.rs` (`ringress::auth_bench`): one request's
//! [`Authn::check`] and [`Authz::check`] as a shard makes them, reachable from outside
//! the crate while the authentication types stay `pub(crate)`. This file is the whole
//! of that public surface; nothing else uses it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use super::{AuthRequest, Authn, Authz, AuthzRequest, KeyRing, Passed, TokenCache};
use crate::http::RequestHead;

/// A configuration's authentication and authorization with a shard's token cache, as
/// a snapshot of generation 1 holds them; requests come from 127.0.0.1 over HTTPS to
/// port 443, without a client certificate.
pub struct Checks {
    authn: Option<Authn>,
    authz: Option<Authz>,
    ring: Arc<KeyRing>,
    cache: TokenCache,
}

/// What [`Checks::authenticate`] let through.
pub struct Authenticated(Passed);

impl Authenticated {
    /// The verified token's `iss/sub`, `None` when the request carried none.
    pub fn principal(&self) -> Option<&str> {
        self.0.token.as_deref().map(|t| t.principal.as_str())
    }
}

impl Checks {
    /// Loads `yaml` (Istio manifests, as `ringress run --config` reads them); inline key
    /// sets only: no fetch is made.
    pub fn load(yaml: &str) -> Result<Checks, String> {
        let config =
            crate::config::load_str(yaml, Path::new("bench.yaml")).map_err(|e| e.to_string())?;
        Ok(Checks {
            authn: Authn::new(&config, 1),
            authz: Authz::new(&config),
            ring: Arc::new(KeyRing::default()),
            cache: TokenCache::default(),
        })
    }

    /// [`Authn::check`] of `head` against the cache: a token verified before (and still
    /// in its time) is a hit, any other is verified and kept. `Err` is the refusal's
    /// status.
    pub fn authenticate(&mut self, head: &RequestHead) -> Result<Authenticated, u16> {
        let Some(authn) = &self.authn else {
            return Ok(Authenticated(Passed::default()));
        };
        let req = AuthRequest {
            head,
            path: head.path(),
            scheme: "https",
            host: head.host().unwrap_or_default(),
        };
        authn
            .check(&req, &self.ring, &mut self.cache)
            .map(Authenticated)
            .map_err(|denial| denial.status)
    }

    /// Empties the token cache, so the next [`Checks::authenticate`] verifies its token.
    pub fn forget_tokens(&mut self) {
        self.cache = TokenCache::default();
    }

    /// [`Authz::check`] of `head` with what authentication made of it: `Err(403)` when
    /// refused.
    pub fn authorize(&self, head: &RequestHead, authenticated: &Authenticated) -> Result<(), u16> {
        let Some(authz) = &self.authz else {
            return Ok(());
        };
        let host = head.host().unwrap_or_default();
        let req = AuthzRequest {
            head,
            path: head.path(),
            host,
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            local: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 443))),
            port: 443,
            sni: Some(host),
            client_cert: None,
            token: authenticated.0.token.as_deref(),
            trusted_proxies: 0,
        };
        authz.check(&req).map(|_| ()).map_err(|_| 403)
    }
}
