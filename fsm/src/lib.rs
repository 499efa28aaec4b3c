//! parlo-fsm: the call state machine and the message machine of a Parlo phone, and
//! Parlo's vocabulary.
//!
//! The vocabulary — [`Name`], [`CallId`], [`Codec`], [`CodecSet`], [`Dialect`], the
//! signalling [`Message`] and the audio frame ([`FRAME_SAMPLES`] at [`SAMPLE_RATE`]) — is
//! defined here once; `parlo-net` reads and writes it on the wire, and every other crate
//! uses it as it is.
//!
//! The machine is a table ([`TABLE`]): one row per `(state, event, guard) -> (next
//! state, steps)`, every (state, event) pair either a row or an explicit "ignored,
//! because …". [`Machine`] classifies each event against the current call, finds its
//! row, logs `from -(event)-> to`, and returns the resulting [`Action`]s — requests for
//! the shell (look up a name, send a message, start media, tell the user). It is pure:
//! no I/O, no clock (every entry point takes `now`), no threads, no allocation; call ids
//! come from an injected [`CallIds`] source.
//!
//! # Contract
//! ```text
//! shell                                   machine
//!   Machine::new(config, ids, now)
//!   handle(now, &event)          ─────▶   classify, apply one row
//!                                ◀─────   Actions (execute in order)
//!   media_dialect(now, from)     ◀─────   how to read a media datagram
//!   poll_timeout()               ◀─────   earliest deadline
//!   handle_timeout(now)          ─────▶   fire one due timer (repeat while due)
//! ```
//!
//! # Messages
//! Text messages between phones have their own small table-driven machine,
//! [`messages::Messenger`], with its own vocabulary (message ids, texts, the `MSG`, `ACK`
//! and `NAK` lines). It shares nothing with the call machine but [`Name`] and
//! [`Instant`]: the shell routes each event to one or the other by kind.
//!
//! # Conferences
//! A conference of 3 to 8 phones is a full mesh of ordinary calls; the pure layer above
//! the legs, [`conference::Conference`], decides which legs to dial, accept and refuse,
//! and tells the user who is in and how well connected.
//!
//! # Security
//! Calls between Parlo phones are encrypted (Noise, in the shell): a call has the peer's
//! static key, or none for a plaintext call. The machine never sees ciphertext; it is
//! told how each message and media packet came ([`Sender`]: in the clear, or out of a
//! session with a given key), what this phone has pinned for a name (`pinned`, from its
//! known peers) and what key the directory binds to a name ([`Event::Resolved`]'s `key`),
//! and it says how each message must go ([`Action::Send`]'s `key`: sealed for that key,
//! never in the clear) and when a key is to be pinned ([`Action::Pin`], on first
//! contact). [`Config::security`] ([`Security`]) says which calls may be plaintext;
//! [`Config::original_phones`] whether phones of the original project, which have no
//! encryption, are called and answered. A START from a key other than the name's pin,
//! or a plaintext one the policy refuses, rings nothing: it is answered REJECT and the
//! user is told `key-changed` or `insecure`; a callee whose directory key contradicts
//! the pin, or that would be plaintext against the policy, is not called at all. In an
//! encrypted call only what comes out of a session with the call's key belongs to it.
//! The table's module docs ([`table`]) list the rows; [`Machine`] the classification
//! and the verification.
//!
//! # Incoming calls
//! A new incoming call rings at once (RINGING to the caller) and asks the directory
//! where the name the caller gave is registered ([`Action::LookupCaller`]). The user is
//! told of the call ([`Note::Incoming`]) when the directory answers, with how the caller
//! is verified ([`Verification`]: by its key, or for a plaintext call by whether the
//! START came from that name's IP address), or, without the directory's word, when it
//! cannot be asked ([`Event::LookupFailed`]) or has not answered within
//! [`Config::verify_wait`]. Whatever comes first about the call (the user answers, the
//! caller gives up) announces it first, without the directory's word: nobody is told
//! `connected` or `ended` about an incoming call never announced. (A call that wins
//! glare connects without an announcement: its user had dialled that very peer.) With
//! [`Config::auto_answer`] (an intercom) the machine answers the call itself as soon as
//! it is announced — if the caller is verified by its key (any caller with
//! [`Security::Off`], which verifies nobody by key), and on [`Config::answer_from`] when
//! that list is not empty; any other call rings.
//!
//! A lookup the machine no longer waits for (the call moved on, another name) is
//! foreign; a failed lookup while dialling ends the call as
//! [`EndReason::LookupFailed`].
//!
//! # Dialects
//! A call speaks one dialect, fixed when it is set up: Parlo's (every message carries the
//! call id) or the original project's (bare messages, raw PCM). The callee takes it from
//! the START. The caller takes it from the directory ([`Event::Resolved`]'s `dialect`)
//! and then says `START <me>` bare to an original phone — once, and once more only after
//! [`Config::original_start_pause`] if nothing was heard, since the original takes every
//! START as a new call and never says RINGING. Once fixed, a message that lacks the call's
//! id (or carries one in an original call) is foreign: a forged bare `CLOSE` from the
//! peer's address cannot end a Parlo call. When the directory does not say (a directory
//! server of the original project), the call starts in Parlo's dialect and the callee's
//! first answer from the directory's address fixes it, a bare ACCEPT or REJECT meaning
//! the original's. That answer is the only bare message ever taken in a Parlo call, and
//! the residual risk with such a directory: a forger who beats the callee's own answer
//! can turn the call original.
//!
//! The original reads its socket from two threads and often misses the CLOSE that ends
//! a call, then streams raw audio for as long as it runs. So when this phone hangs up on
//! an original peer (or loses it), it remembers the peer's address after the call and
//! answers its audio ([`EventKind::LeftoverMedia`]) with a bare CLOSE, at most once per
//! [`Config::ended_close_interval`], until another call starts or the audio has stopped
//! for [`Config::ended_peer_memory`]. [`Machine::media_dialect`] tells the shell's media
//! demultiplexer to expect raw PCM from it meanwhile.
//!
//! # Glare
//! When two phones dial each other at the same moment, each sees a START from the very
//! phone it is dialling. It is a crossing call only when it comes from the address the
//! directory gave for that phone; before the lookup has answered, or from another
//! address, a START naming the callee is an ordinary call request and gets BUSY (anyone
//! can claim a name). Of two crossing calls, the one with the lower call id wins (on
//! equal ids, the one whose caller name sorts first); a START without call id (a phone
//! of the original project, which cannot yield) always wins. The loser drops its own
//! call and answers the winner's at once — its user asked to talk to that very peer — so
//! exactly one call connects, the same one on both sides. When a START arrives before
//! its receiver's lookup has answered, the receiver answers BUSY: that call ends busy,
//! and the receiver's own call, sent once its lookup answers, reaches the other phone
//! as a crossing call (the rule above) or, once that phone has heard the BUSY, as an
//! ordinary call that rings. Both STARTs cannot arrive that early (each is sent only
//! after its sender's lookup has answered), so here too exactly one call survives.
//!
//! # Codecs
//! The caller offers the codecs of its [`Config::codecs`] in START (`codecs=L16,PCMU`,
//! a set: its order means nothing). The callee picks the first codec of its own
//! preference that the offer holds and names it in every ACCEPT (`codec=PCMU`); when the
//! offer shares none with its list, or says nothing (`START` without `codecs=`, an
//! older or original phone), the choice is L16, the baseline every phone receives. The
//! caller uses the codec the ACCEPT names, L16 when it names none — even a codec it did
//! not offer: the callee decides, every Parlo phone decodes every codec, and dropping a
//! call over a preference would help nobody. An original peer always gets raw PCM (L16).
//! [`Action::StartMedia`] carries the outcome.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod conference;
mod machine;
pub mod messages;
mod rows;
pub mod table;
mod types;
mod vocab;

pub use machine::{Actions, Config, Counters, MAX_ACTIONS, MAX_ANSWER_FROM, Machine};
pub use table::{EventKind, Guard, State, TABLE};
pub use types::{
    Action, Binding, CallIds, EndReason, Event, Instant, Note, Refusal, Security, Sender,
    SplitMix64, Timer, Verification, address_name, verify_key,
};
pub use vocab::{
    CallId, Codec, CodecSet, Dialect, Escaped, FRAME_MS, FRAME_SAMPLES, Frame, KeyError,
    MAX_NAME_LEN, Message, Name, NameError, Preference, PublicKey, SAMPLE_RATE, VERSION,
    is_escaped, is_name_char,
};
