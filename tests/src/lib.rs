//! parlo-tests: end-to-end tests against the real binaries, the spec replayer, and the
//! harness code they share.

pub mod attacker;
pub mod call_audio;
pub mod capture;
pub mod conference;
pub mod conference_spec;
pub mod forge;
pub mod measure;
pub mod message_spec;
pub mod phone_harness;
pub mod picture;
pub mod relay;
pub mod server_harness;
pub mod spec;
