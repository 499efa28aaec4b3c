//! Fuzzes the directory server's whole input path: arbitrary bytes, delivered in arbitrary
//! read sizes, go through the stream splitter, the request parser, the protocol rules and
//! the response encoder, exactly as the server runs them.
//!
//! Checked besides "never panics": frames are balanced objects of at most MAX_REQUEST
//! bytes, the receive buffer never fills up, every response encodes within MAX_RESPONSE
//! as one line of JSON, and a parsed name always satisfies the naming rules.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use parlo_net::directory::{
    Contact, MAX_RESPONSE, Name, Page, Registry, Request, Response, Session,
};
use parlo_net::framing::{Frame, FrameBuffer, MAX_REQUEST};

/// A small registry in a vector, kept sorted by name.
#[derive(Default)]
struct VecRegistry(Vec<(Name, Contact)>);

impl Registry for VecRegistry {
    fn find(&self, name: &Name) -> Option<Contact> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
    }
    fn insert(&mut self, name: &Name, contact: Contact) {
        match self.0.binary_search_by(|(n, _)| n.cmp(name)) {
            Ok(i) => self.0[i].1 = contact,
            Err(i) => self.0.insert(i, (name.clone(), contact)),
        }
    }
    fn remove(&mut self, name: &Name) {
        self.0.retain(|(n, _)| n != name);
    }
    fn page(&self, after: Option<&Name>, skip: u32, page: &mut Page) -> bool {
        let start = after.map_or(0, |after| self.0.partition_point(|(n, _)| n <= after));
        let mut rest = self.0[start..].iter().skip(skip as usize);
        for (name, _) in rest.by_ref() {
            if page.push(name.clone()).is_err() {
                return true;
            }
        }
        false
    }
}

fn check_name(name: &Name) {
    assert_eq!(Name::new(name.as_str()).as_ref(), Ok(name));
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so splits land everywhere.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut buffer = FrameBuffer::new();
    let mut session = Session::new();
    let mut registry = VecRegistry::default();
    let mut page = Page::new();
    let mut out = [0u8; MAX_RESPONSE];

    let mut rest = data;
    while !rest.is_empty() {
        let spare = buffer.spare();
        assert!(!spare.is_empty());
        let n = spare.len().min(chunk).min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        buffer.filled(n);
        rest = &rest[n..];
        while let Some(frame) = buffer.next_frame() {
            let response = match frame {
                Frame::Object(bytes) => {
                    assert!(bytes.len() <= MAX_REQUEST);
                    assert_eq!(bytes.first(), Some(&b'{'));
                    assert!(matches!(bytes.last(), Some(b'}') | Some(b']')));
                    match Request::parse(bytes) {
                        Ok(request) => {
                            if let Request::Reg { name, .. }
                            | Request::Get { name }
                            | Request::Disconnect { name } = &request
                            {
                                check_name(name);
                            }
                            session.handle_request(request, peer, &mut registry, &mut page)
                        }
                        Err(error) => Response::Error(error.into()),
                    }
                }
                Frame::Invalid(error) => Response::Error(error.into()),
            };
            let len = response.encode(&mut out).expect("MAX_RESPONSE always suffices");
            let text = std::str::from_utf8(&out[..len]).expect("responses are UTF-8");
            assert!(text.starts_with('{') && text.ends_with("}\n"));
            assert_eq!(text.matches('\n').count(), 1, "one line per response");
        }
        assert!(buffer.buffered() < MAX_REQUEST);
    }
    if let Some(name) = session.handle_close(&mut registry) {
        check_name(&name);
    }
    assert!(registry.0.is_empty(), "a closed session leaves nothing registered");
});
