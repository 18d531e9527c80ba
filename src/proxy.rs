//! One client connection's life, from accept to close.
