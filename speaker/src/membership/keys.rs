//! Key rotation: a new key accepted at once and signing after a delay, the old one
//! accepted for one more delay, and decoding under whichever key a datagram used.

use std::time::Instant;

use super::wire::{Message, WireError};
use super::{Key, Membership};

impl Membership {
    /// Starts using `key` (the Secret changed) without a flag day: the new
    /// key is accepted at once but signs only after `key_rotation_delay`, by
    /// when every speaker accepts it; the old key is then accepted for one
    /// more delay. Calling again before the switch replaces the pending key.
    pub fn rotate_key(&mut self, key: Key, now: Instant) {
        self.next_key = Some((key, now + self.config.key_rotation_delay));
        // Peers seen using the replaced pending key have not shown they know this one.
        for m in &mut self.members {
            m.uses_next_key = false;
        }
    }

    pub(super) fn advance_keys(&mut self, now: Instant) {
        if let Some((_, at)) = &self.next_key
            && now >= *at
            && let Some((next, _)) = self.next_key.take()
        {
            let old = std::mem::replace(&mut self.key, next);
            self.old_key = Some((old, now + self.config.key_rotation_delay));
            // Everyone is now signed for with what was the pending key.
            for m in &mut self.members {
                m.uses_next_key = false;
            }
        }
        if self
            .old_key
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.old_key = None;
        }
    }

    /// The message, and whether it was signed with the pending `next_key`.
    pub(super) fn decode(&self, datagram: &[u8]) -> Result<(Message, bool), WireError> {
        let first = Message::decode(datagram, &self.key);
        if !matches!(first, Err(WireError::BadMac)) {
            return first.map(|m| (m, false));
        }
        if let Some((k, _)) = &self.next_key {
            let r = Message::decode(datagram, k);
            if !matches!(r, Err(WireError::BadMac)) {
                return r.map(|m| (m, true));
            }
        }
        if let Some((k, _)) = &self.old_key {
            let r = Message::decode(datagram, k);
            if !matches!(r, Err(WireError::BadMac)) {
                return r.map(|m| (m, false));
            }
        }
        first.map(|m| (m, false))
    }
}
