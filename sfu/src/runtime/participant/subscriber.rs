//! The participant task's subscriber connection: subscriptions through the offer/answer
//! cycle (negotiate, answer, activate) and their removal.

use tracing::{debug, warn};

use super::*;

impl ParticipantTask {
    pub(super) async fn subscribe(
        &mut self,
        publication: PublicationId,
    ) -> Result<SubscriptionId, RequestError> {
        if !self.permissions.can_subscribe {
            return Err(RequestError::PermissionDenied("subscribing"));
        }
        if self.subscriptions.len() >= self.sfu.limits().max_subscriptions_per_participant {
            return Err(RequestError::LimitExceeded("subscriptions per participant"));
        }
        let (reply, found) = oneshot::channel();
        self.room
            .send(RoomCommand::GetPublication { publication, reply })
            .await?;
        let (info, codec) = found
            .await
            .map_err(|_| RequestError::Closed)?
            .ok_or_else(|| RequestError::NotFound(format!("publication {publication}")))?;
        let id = SubscriptionId(self.sfu.next_id());
        let ssrc = rand::random::<u32>();
        let track = self
            .subscriber
            .add_local_track(info.sync_group(), id.to_string(), &codec, ssrc)
            .await?;
        self.subscriptions.insert(
            id,
            SubscriptionState {
                publication,
                track,
                negotiation: TrackNegotiation::Pending,
                active: false,
                preferred: None,
                paused: false,
                video: info.kind == crate::core::MediaKind::Video,
            },
        );
        Ok(id)
    }

    pub(super) async fn drop_subscription(&mut self, subscription: SubscriptionId) {
        self.drop_subscriptions(vec![subscription]).await;
    }

    /// Removes the subscriptions and their tracks. Each removal waits (bounded) for its
    /// track's queued packets; the waits run together, so the actor is held once, not per track.
    pub(super) async fn drop_subscriptions(&mut self, subscriptions: Vec<SubscriptionId>) {
        let mut tracks = Vec::with_capacity(subscriptions.len());
        for subscription in subscriptions {
            let Some(state) = self.subscriptions.remove(&subscription) else {
                continue;
            };
            if state.active {
                self.room
                    .try_send(RoomCommand::RemoveSubscription { subscription });
            }
            tracks.push((subscription, state.track));
        }
        let subscriber = &self.subscriber;
        let removals = tracks.iter().map(|(subscription, track)| async move {
            if let Err(err) = subscriber.remove_local_track(track).await {
                debug!(%subscription, %err, "removing subscriber track");
            }
        });
        futures::future::join_all(removals).await;
    }

    /// Sends a new subscriber offer, or remembers to once the pending one is answered.
    pub(super) async fn negotiate(&mut self) {
        if self.awaiting_answer {
            self.renegotiate = true;
            return;
        }
        let ice_restart = std::mem::take(&mut self.ice_restart_pending);
        match self.subscriber.offer(ice_restart).await {
            Ok(sdp) => {
                if ice_restart {
                    debug!("subscriber ICE restart offered");
                }
                self.offered = true;
                self.awaiting_answer = true;
                self.advance_negotiation(TrackNegotiation::Pending, TrackNegotiation::Offered);
                self.emit(ParticipantEvent::Offer(sdp));
            }
            Err(err) => warn!(%err, "subscriber offer failed"),
        }
    }

    pub(super) async fn apply_answer(&mut self, sdp: String) -> Result<(), RequestError> {
        if !self.awaiting_answer {
            return Err(RequestError::Invalid(
                "no offer is waiting for an answer".to_owned(),
            ));
        }
        self.subscriber.apply_answer(sdp).await?;
        self.awaiting_answer = false;
        self.advance_negotiation(TrackNegotiation::Offered, TrackNegotiation::Answered);
        Ok(())
    }

    pub(super) fn advance_negotiation(&mut self, from: TrackNegotiation, to: TrackNegotiation) {
        for state in self.subscriptions.values_mut() {
            if state.negotiation == from {
                state.negotiation = to;
            }
        }
    }

    /// Starts forwarding negotiated subscriptions. Waiting for the connection means the
    /// keyframe requested for a new subscriber reaches it instead of a closed DTLS session;
    /// waiting for the answer that covers the track means the first packets (an ingest
    /// publication's cached keyframe) are not dropped by a transceiver that does not send yet.
    pub(super) async fn activate_subscriptions(&mut self) {
        if !self.subscriber_connected || self.awaiting_answer {
            return;
        }
        let ready: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| !s.active && s.negotiation == TrackNegotiation::Answered)
            .map(|(id, _)| *id)
            .collect();
        let mut failed = Vec::new();
        for id in ready {
            if let Err(err) = self.activate(id).await {
                warn!(subscription = %id, %err, "subscription not started");
                failed.push(id);
            }
        }
        if !failed.is_empty() {
            self.drop_subscriptions(failed).await;
            self.renegotiate = true;
        }
    }

    pub(super) async fn activate(&mut self, id: SubscriptionId) -> Result<(), RequestError> {
        let state = self
            .subscriptions
            .get(&id)
            .expect("invariant: activate is called with a held subscription");
        let payload_type = state.track.payload_type().await?;
        let room = self.room.clone();
        let subscriber = self.id;
        let sink = state
            .track
            .spawn_io(
                self.sfu.limits().subscription_queue,
                move |feedback| match feedback {
                    SubscriberFeedback::KeyframeRequest => {
                        room.try_send(RoomCommand::KeyframeRequested { subscription: id });
                    }
                    SubscriberFeedback::Nacked(packets) => {
                        room.try_send(RoomCommand::Nacked {
                            subscription: id,
                            packets,
                        });
                    }
                    SubscriberFeedback::Remb(bits_per_second) => {
                        room.try_send(RoomCommand::Remb {
                            subscriber,
                            bits_per_second,
                        });
                    }
                    SubscriberFeedback::RoundTrip(round_trip) => {
                        room.try_send(RoomCommand::RoundTrip {
                            subscriber,
                            round_trip,
                        });
                    }
                },
            );
        let (reply, result) = oneshot::channel();
        self.room
            .send(RoomCommand::AddSubscription {
                subscription: id,
                subscriber: self.id,
                publication: state.publication,
                ssrc: state.track.ssrc(),
                payload_type,
                sink,
                horizons: self.subscriber.repair_horizons(),
                reply,
            })
            .await?;
        result.await.map_err(|_| RequestError::Closed)??;
        if let Some(state) = self.subscriptions.get_mut(&id) {
            state.active = true;
            if let Some((spatial, temporal)) = state.preferred {
                self.room
                    .send(RoomCommand::SetPreferredLayer {
                        subscription: id,
                        spatial,
                        temporal,
                    })
                    .await?;
            }
            if state.paused {
                self.room
                    .send(RoomCommand::SetPaused {
                        subscription: id,
                        paused: true,
                    })
                    .await?;
            }
        }
        Ok(())
    }
}
