//! Publisher liveness: which publications stopped sending media.
//!
//! Every RTP packet of a publication marks it alive at that time. A publication that sent at
//! least one packet and then none for [`RoomConfig::publication_stall_timeout`] is stalled: the
//! room emits [`Output::PublicationStalled`] once, and [`Output::PublicationResumed`] with the
//! next packet. A publication that never sent anything is not tracked: its publisher may still
//! be connecting, and nobody is watching a picture freeze.
//!
//! [`RoomConfig::publication_stall_timeout`]: crate::RoomConfig::publication_stall_timeout

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ids::{ParticipantId, PublicationId};
use super::output::Output;

/// The last packet of each publication that sent any, and whether it is stalled.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// `None`: publications are not watched.
    stall_after: Option<Duration>,
    publications: HashMap<PublicationId, Heard>,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    publisher: ParticipantId,
    last: Instant,
    stalled: bool,
}

impl Liveness {
    pub(crate) fn new(stall_after: Option<Duration>) -> Self {
        Liveness {
            stall_after,
            publications: HashMap::new(),
        }
    }

    /// A packet of `publication` arrived at `now`; a stalled publication resumes.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        publication: PublicationId,
        publisher: ParticipantId,
        outputs: &mut impl Extend<Output>,
    ) {
        if self.stall_after.is_none() {
            return;
        }
        let heard = self.publications.entry(publication).or_insert(Heard {
            publisher,
            last: now,
            stalled: false,
        });
        heard.last = heard.last.max(now);
        if heard.stalled {
            heard.stalled = false;
            outputs.extend([Output::PublicationResumed {
                publication,
                publisher,
            }]);
        }
    }

    /// The publication ended: it is neither stalled nor live any more.
    pub(crate) fn remove(&mut self, publication: PublicationId) {
        self.publications.remove(&publication);
    }

    /// When the earliest live publication stalls if nothing arrives before.
    pub(crate) fn timeout(&self) -> Option<Instant> {
        let stall_after = self.stall_after?;
        self.publications
            .values()
            .filter(|heard| !heard.stalled)
            .map(|heard| heard.last + stall_after)
            .min()
    }

    /// Marks stalled every live publication silent for the stall timeout at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant, outputs: &mut impl Extend<Output>) {
        let Some(stall_after) = self.stall_after else {
            return;
        };
        let mut stalled: Vec<(PublicationId, ParticipantId)> = Vec::new();
        for (id, heard) in &mut self.publications {
            if !heard.stalled && now >= heard.last + stall_after {
                heard.stalled = true;
                stalled.push((*id, heard.publisher));
            }
        }
        // Publication order, so the outputs do not depend on the map's.
        stalled.sort_unstable_by_key(|(id, _)| id.0);
        outputs.extend(stalled.into_iter().map(|(publication, publisher)| {
            Output::PublicationStalled {
                publication,
                publisher,
            }
        }));
    }

    /// The publications stalled now (a new member of the room is told about them).
    pub(crate) fn stalled(&self) -> impl Iterator<Item = PublicationId> + '_ {
        self.publications
            .iter()
            .filter(|(_, heard)| heard.stalled)
            .map(|(id, _)| *id)
    }
}
