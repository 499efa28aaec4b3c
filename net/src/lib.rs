//! parlo-net: Parlo's wire codecs.
//!
//! Owns the directory protocol (JSON requests and responses over TCP, the splitter that
//! cuts a TCP byte stream into requests, the server's rules and the phone's sans-IO
//! client), the peer signalling lines, the lines of message sessions ([`message`]), the
//! media packets (RTP and the original's raw PCM datagrams), and the anti-replay window
//! of encrypted datagrams, over the vocabulary of `parlo-fsm`; the encrypted directory
//! channel ([`noise`]: Noise through `snow`, the handshake's randomness passed in); and
//! the encrypted calls between phones ([`secure`]: a Noise handshake, then datagrams
//! sealed in place with rotating keys). Pure: no sockets, no clock, no threads. The
//! codecs are functions over byte slices that do not allocate; the phone's directory
//! client, a state machine, keeps its queues and the names of a listing on the heap,
//! bounded, and so do the call sessions their handshakes.

pub mod directory;
pub mod framing;
pub mod media;
pub mod message;
pub mod noise;
pub mod peer;
pub mod replay;
pub mod secure;
mod seeded;
