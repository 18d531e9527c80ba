//! TLS: certificate loading, SNI resolution and rustls server configurations.
