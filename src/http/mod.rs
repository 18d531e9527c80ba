//! HTTP/1.1: head parsing, body framing, header rewriting and generated responses.
