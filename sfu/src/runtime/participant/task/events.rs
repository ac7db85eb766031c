//! The participant task's side of events: what its shard tells it (connection states, layer
//! changes, dynacast, speakers, liveness, data rejections, followed publications) and what its
//! room tells it, each relayed to the client, with the subscriptions they end.

use tracing::debug;

use super::super::ParticipantEvent;
use super::ParticipantTask;
use crate::core::SubscriptionId;
use crate::runtime::room_task::{LayersChanged, RoomEvent};
use crate::shard::{ShardEvent, SubscriptionChange};
use crate::transport::{ConnectionState, PeerRole};

impl ParticipantTask {
    pub(super) fn handle_shard_event(&mut self, event: ShardEvent) {
        match event {
            ShardEvent::ConnectionState { role, state } => {
                debug!(?role, ?state, "connection state");
                // Failed (or closed by the client) until an ICE restart brings it back.
                let failed = match state {
                    ConnectionState::Failed | ConnectionState::Closed => Some(true),
                    ConnectionState::Connected => Some(false),
                    _ => None,
                };
                if let Some(failed) = failed {
                    match role {
                        PeerRole::Publisher => self.failed.0 = failed,
                        PeerRole::Subscriber => self.failed.1 = failed,
                    }
                    self.transport_failed
                        .send_replace(self.failed.0 || self.failed.1);
                }
                self.emit(ParticipantEvent::Connection(role, state));
            }
            ShardEvent::LayersChanged {
                subscription,
                current,
                target,
                reason,
            } => self.emit(ParticipantEvent::Room(RoomEvent::LayersChanged(
                LayersChanged {
                    subscription,
                    current,
                    target,
                    reason,
                },
            ))),
            ShardEvent::PublisherLayers {
                publication,
                active,
            } => {
                let Some(rids) = self.rids.get(&publication) else {
                    return;
                };
                let layers = rids.iter().cloned().zip(active).collect();
                self.emit(ParticipantEvent::Room(RoomEvent::PublisherLayers {
                    publication,
                    layers,
                }));
            }
            ShardEvent::SubscriptionMoved {
                subscription,
                publication,
            } => {
                debug!(%subscription, ?publication, "following track moved");
                if let Some(receives) = self.subscriptions.get_mut(&subscription) {
                    *receives = publication;
                }
            }
            ShardEvent::ActiveSpeakers(speakers) => {
                self.emit(ParticipantEvent::Room(RoomEvent::ActiveSpeakers(speakers)));
            }
            ShardEvent::DataRejected { reason, dropped } => {
                self.emit(ParticipantEvent::DataRejected { reason, dropped });
            }
            ShardEvent::Liveness {
                publication,
                publisher: participant,
                stalled,
            } => {
                debug!(%publication, stalled, "publication liveness");
                self.emit(ParticipantEvent::Room(if stalled {
                    RoomEvent::PublicationStalled {
                        publication,
                        participant,
                    }
                } else {
                    RoomEvent::PublicationResumed {
                        publication,
                        participant,
                    }
                }));
            }
        }
    }

    pub(super) async fn handle_room_event(&mut self, event: RoomEvent) {
        let publication = match &event {
            RoomEvent::PublicationRemoved { publication, .. } => Some(*publication),
            _ => None,
        };
        self.emit(ParticipantEvent::Room(event));
        let Some(publication) = publication.filter(|_| !self.follows_room) else {
            return;
        };
        // The shard ended these with the publication; take their tracks off the connection.
        let ended: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, p)| **p == Some(publication))
            .map(|(id, _)| *id)
            .collect();
        if ended.is_empty() {
            return;
        }
        for id in ended {
            self.subscriptions.remove(&id);
            let removed = self
                .shard
                .change_subscription(self.id, id, SubscriptionChange::Remove)
                .await;
            if let Err(err) = removed {
                debug!(subscription = %id, %err, "ended subscription");
            }
        }
        self.negotiate().await;
    }
}
