//! parlo-audio: the real-time audio side of a phone.
//!
//! Will own the audio devices (cpal on its real-time callback thread, and the `file`,
//! `tone` and `null` devices), the fixed-capacity lock-free frame queues between a device
//! and the phone's event loop, the jitter buffer with loss concealment, and the codecs
//! (L16, PCMU). The real-time side never allocates, locks, logs or blocks.
