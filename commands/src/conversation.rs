//! Command handlers of the `conversation` domain (messaging). The key server and the to-device
//! queue ([`keys`]) are tables this domain owns rather than event streams (ADR 0020): they hold
//! public keys and opaque client payloads only — the server is blind and never sees a private
//! key or a plaintext.

pub mod keys;
