//! The membership's timings and thresholds ([`Config`]), and their validation.

use std::time::Duration;

use super::MembershipError;

#[derive(Debug, Clone)]
pub struct Config {
    pub probe_interval: Duration,
    /// How long after a probe its ack counts as missed. Must be below
    /// `probe_interval`.
    pub ack_timeout: Duration,
    pub suspect_after_misses: u32,
    /// After the misses, the monitor challenges the target directly (a
    /// `Suspect` it refutes if alive) and votes only if nothing arrives from
    /// it within this time.
    pub confirm_timeout: Duration,
    /// Monitors per node (k).
    pub monitors: usize,
    /// Distinct monitor votes needed to declare a node dead.
    pub confirmations: usize,
    pub vote_ttl: Duration,
    pub gossip_fanout: usize,
    /// Updates piggybacked per probe/ack at most.
    pub piggyback_max: usize,
    pub rumor_retransmits: u32,
    /// Direct probes (each `ack_timeout` apart) a second-hand death must go
    /// unanswered before we believe it.
    pub verify_attempts: u32,
    pub dead_probe_interval: Duration,
    pub isolation_timeout: Duration,
    /// After `rotate_key`, how long the old key keeps signing (while the new
    /// one is already accepted), and then how long it is still accepted.
    /// Longer than it takes every speaker to see the new Secret, so no two
    /// speakers ever lack a key in common.
    pub key_rotation_delay: Duration,
    /// How long after readmitting a node its pushed death news is only
    /// verified, not believed: right after a partition heals, the other side
    /// may still be pushing deaths it declared just before the heal.
    pub readmit_grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            probe_interval: Duration::from_millis(100),
            ack_timeout: Duration::from_millis(50),
            suspect_after_misses: 3,
            confirm_timeout: Duration::from_millis(30),
            monitors: 3,
            confirmations: 2,
            vote_ttl: Duration::from_millis(300),
            gossip_fanout: 4,
            piggyback_max: 8,
            rumor_retransmits: 6,
            verify_attempts: 4,
            dead_probe_interval: Duration::from_millis(500),
            isolation_timeout: Duration::from_millis(300),
            readmit_grace: Duration::from_secs(1),
            key_rotation_delay: Duration::from_secs(30),
        }
    }
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), MembershipError> {
        let bad = |m| Err(MembershipError::Config(m));
        if self.monitors == 0 || self.confirmations == 0 {
            return bad("monitors and confirmations must be at least 1");
        }
        if self.confirmations > self.monitors {
            return bad("confirmations cannot exceed monitors");
        }
        if self.ack_timeout >= self.probe_interval || self.probe_interval.is_zero() {
            return bad("ack_timeout must be shorter than a non-zero probe_interval");
        }
        if self.confirm_timeout.is_zero() {
            return bad("confirm_timeout must be non-zero");
        }
        if self.suspect_after_misses == 0 {
            return bad("suspect_after_misses must be at least 1");
        }
        if self.piggyback_max > 200 {
            return bad("piggyback_max must be at most 200");
        }
        Ok(())
    }
}
