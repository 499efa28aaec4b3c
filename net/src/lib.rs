//! parlo-net: Parlo's wire codecs.
//!
//! Owns the directory protocol (JSON requests and responses over TCP, and the splitter
//! that cuts a TCP byte stream into requests), the peer signalling lines, and the media
//! packets (RTP and the original's raw PCM datagrams). Pure functions over byte slices:
//! no sockets, no clock, no allocation on the data path.

pub mod directory;
pub mod framing;
pub mod media;
pub mod peer;
