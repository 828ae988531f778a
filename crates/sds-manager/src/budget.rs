//! The manager-wide budget of bytes held on behalf of remote members
//! ([`ManagerConfig::max_held_bytes`](crate::ManagerConfig::max_held_bytes)): what each loaded
//! channel holds, as its engine charges it (`Channel::held_bytes`: messages waiting for
//! dependencies with their indexes and timers, SDS-R entries), and their total. When an
//! operation leaves the total above the budget, the channel holding the most gives way
//! (`Channel::shed_held`: its heaviest sender's oldest waiting messages first), then the next,
//! until the total is within the budget again.

use std::collections::{BTreeSet, HashMap};

use sds_proto::ChannelId;

/// Bytes held per channel, with the heaviest channel at hand.
#[derive(Debug, Default)]
pub(crate) struct Held {
    of: HashMap<ChannelId, usize>,
    /// (bytes, channel): the heaviest last.
    order: BTreeSet<(usize, ChannelId)>,
    total: usize,
}

impl Held {
    /// A channel now holds `bytes` (0: it left memory).
    pub(crate) fn set(&mut self, id: &ChannelId, bytes: usize) {
        if let Some(old) = self.of.remove(id) {
            self.order.remove(&(old, id.clone()));
            self.total = self.total.saturating_sub(old);
        }
        if bytes > 0 {
            self.of.insert(id.clone(), bytes);
            self.order.insert((bytes, id.clone()));
            self.total = self.total.saturating_add(bytes);
        }
    }

    /// Bytes held across channels.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// The channel holding the most, and how much.
    pub(crate) fn heaviest(&self) -> Option<(ChannelId, usize)> {
        self.order.last().map(|(bytes, id)| (id.clone(), *bytes))
    }

    /// What `id` should shed for the total to come within `budget`: the bytes it may keep.
    pub(crate) fn target(&self, held: usize, budget: usize) -> usize {
        held.saturating_sub(self.total.saturating_sub(budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_follows_every_channel_and_the_heaviest_is_first_to_shed() {
        let mut h = Held::default();
        let (a, b) = (ChannelId::from("a"), ChannelId::from("b"));
        h.set(&a, 300);
        h.set(&b, 500);
        assert_eq!(h.total(), 800);
        assert_eq!(h.heaviest(), Some((b.clone(), 500)));
        // Down to a budget of 600: b keeps 300.
        assert_eq!(h.target(500, 600), 300);
        h.set(&b, 100);
        assert_eq!(h.total(), 400);
        assert_eq!(h.heaviest(), Some((a.clone(), 300)));
        h.set(&a, 0);
        h.set(&b, 0);
        assert_eq!((h.total(), h.heaviest()), (0, None));
    }
}
