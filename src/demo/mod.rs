//! `ringress demo`: a generated PKI, a built-in httpbin-like upstream and a gateway.
