//! MQTT consumer of the feed topic (rumqttc).
//!
//! QoS 1 with a persistent session (clean session off, stable client id) and manual
//! acknowledgements: the broker keeps what arrives while we are away and redelivers what we
//! received but did not acknowledge, and we acknowledge only after the ingestor commits.
//! With a shared-subscription group, several replicas split the topic between them.

use crate::ingest::{Ack, Delivery};
use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A broker address: `mqtt://[user[:password]@]host[:port]` (port 1883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid MQTT URL {url:?}: {reason}")]
pub struct MqttUrlError {
    url: String,
    reason: &'static str,
}

impl std::str::FromStr for MqttUrl {
    type Err = MqttUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| MqttUrlError {
            url: s.to_string(),
            reason,
        };
        let url = url::Url::parse(s).map_err(|_| err("not a URL"))?;
        if !matches!(url.scheme(), "mqtt" | "tcp") {
            return Err(err("scheme must be mqtt://"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| err("missing host"))?
            .to_string();
        Ok(MqttUrl {
            host,
            port: url.port().unwrap_or(1883),
            username: (!url.username().is_empty()).then(|| url.username().to_string()),
            password: url.password().map(str::to_string),
        })
    }
}

impl MqttUrl {
    pub fn options(&self, client_id: &str) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, &self.host, self.port);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some(user) = &self.username {
            opts.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        opts
    }
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub url: MqttUrl,
    pub topic: String,
    /// Stable across restarts: the broker keeps the session (and queued ticks) under this id.
    pub client_id: String,
    /// `Some(group)` subscribes to `$share/group/topic` so replicas split the feed.
    pub shared_group: Option<String>,
    /// Largest packet read from the broker. A larger one drops the connection and the broker
    /// redelivers it forever, so this must cover the broker's own limit (Mosquitto
    /// `message_size_limit`) plus the topic and a few bytes of header.
    pub max_packet_bytes: usize,
}

impl MqttConfig {
    pub fn subscription(&self) -> String {
        match &self.shared_group {
            Some(group) => format!("$share/{group}/{}", self.topic),
            None => self.topic.clone(),
        }
    }
}

/// Consumes the feed until `shutdown`, handing messages to the ingestor through `tx`. `ready` is
/// true while the broker has acknowledged our subscription. On shutdown it stops handing over
/// new messages, keeps the connection up until the ingestor has acknowledged what it holds
/// (`ingestor_done`), then disconnects cleanly.
///
/// This task never waits on the ingestor while the event loop needs polling, and the ingestor
/// never waits on this task: acknowledgements come back over an unbounded channel and are queued
/// to the client without blocking. (Waiting in both directions deadlocks under a burst: the
/// ingestor blocks on a full client request queue that only the event loop drains, while the
/// event loop blocks on a full ingestor queue.) When the ingestor's queue is full, the one held
/// message waits and the network is not read, so memory stays bounded by that queue.
pub async fn consume(
    config: MqttConfig,
    tx: mpsc::Sender<Delivery>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    ingestor_done: CancellationToken,
) {
    let mut opts = config.url.options(&config.client_id);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    // Outgoing packets are our subscription and acknowledgements: small.
    opts.set_max_packet_size(config.max_packet_bytes, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let subscription = config.subscription();
    let source = format!("mqtt:{}", config.topic);
    let mut backoff = Duration::from_millis(200);
    let mut tx = Some(tx);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Publish>();
    let mut acks = PendingAcks::default();
    // A message the ingestor's full queue could not take yet.
    let mut held: Option<Delivery> = None;
    info!(subscription, client_id = %config.client_id, host = %config.url.host, port = config.url.port, "connecting to MQTT");
    loop {
        acks.flush(&client);
        let event = tokio::select! {
            _ = shutdown.cancelled(), if tx.is_some() => {
                // Stop feeding the ingestor; what it holds is committed and acknowledged below.
                // A held message stays unacknowledged and is redelivered later.
                tx = None;
                held = None;
                continue;
            }
            _ = ingestor_done.cancelled(), if tx.is_none() => break,
            Some(publish) = ack_rx.recv() => {
                acks.push(publish);
                continue;
            }
            permit = reserve(tx.clone().filter(|_| held.is_some())), if held.is_some() => {
                match (permit, held.take()) {
                    (Some(permit), Some(delivery)) => {
                        permit.send(delivery);
                    }
                    _ => tx = None,
                }
                continue;
            }
            event = eventloop.poll(), if held.is_none() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(200);
                info!(session_present = ack.session_present, "MQTT connected");
                if let Err(e) = client.try_subscribe(&subscription, QoS::AtLeastOnce) {
                    warn!(error = %e, "could not queue the MQTT subscription");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if ok {
                    info!(subscription, "MQTT subscription acknowledged");
                } else {
                    warn!(subscription, "broker refused the MQTT subscription");
                }
                ready.store(ok, Ordering::Release);
            }
            Ok(Event::Incoming(Packet::Publish(mut publish))) => {
                let Some(sender) = &tx else {
                    continue; // shutting down: left unacknowledged, redelivered later
                };
                // The acknowledgement needs only the packet id and QoS; the payload moves on.
                let payload = std::mem::take(&mut publish.payload).to_vec();
                let delivery = Delivery {
                    payload,
                    received_at: Utc::now(),
                    source: source.clone(),
                    ack: Ack::Mqtt {
                        acks: ack_tx.clone(),
                        publish,
                    },
                };
                match sender.try_send(delivery) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(delivery)) => held = Some(delivery),
                    Err(mpsc::error::TrySendError::Closed(_)) => tx = None,
                }
            }
            Ok(_) => {}
            Err(e) => {
                ready.store(false, Ordering::Release);
                warn!(error = %e, retry_in = ?backoff, "MQTT connection lost; reconnecting");
                let pause = tokio::time::sleep(backoff);
                tokio::select! {
                    _ = pause => {}
                    _ = shutdown.cancelled() => {
                        if tx.is_some() { tx = None; }
                        if ingestor_done.is_cancelled() { break; }
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    ready.store(false, Ordering::Release);
    while let Ok(publish) = ack_rx.try_recv() {
        acks.push(publish);
    }
    disconnect(&client, &mut eventloop, &mut acks).await;
}

/// A slot in the ingestor's queue, or `None` once it is closed (or we stopped feeding it).
async fn reserve(tx: Option<mpsc::Sender<Delivery>>) -> Option<mpsc::OwnedPermit<Delivery>> {
    tx?.reserve_owned().await.ok()
}

/// Acknowledgements not yet taken by the client's request queue (it is bounded and drained by
/// the event loop; the backlog here is bounded by the messages the ingestor has been given).
#[derive(Default)]
struct PendingAcks(VecDeque<Publish>);

impl PendingAcks {
    fn push(&mut self, publish: Publish) {
        self.0.push_back(publish);
    }

    fn flush(&mut self, client: &AsyncClient) {
        while let Some(publish) = self.0.front() {
            match client.try_ack(publish) {
                Ok(()) => {
                    self.0.pop_front();
                }
                // The queue is full (the event loop, which we own, never goes away first):
                // the rest wait for the next poll to make room.
                Err(_) => break,
            }
        }
    }
}

/// Writes the pending acknowledgements, then DISCONNECT, polling until it is written (or a short
/// deadline passes), so that acknowledgements go out before the socket closes.
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop, acks: &mut PendingAcks) {
    let deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(deadline);
    let mut disconnecting = false;
    loop {
        acks.flush(client);
        if acks.0.is_empty() && !disconnecting {
            if client.try_disconnect().is_err() {
                return;
            }
            disconnecting = true;
        }
        tokio::select! {
            _ = &mut deadline => break,
            ev = eventloop.poll() => match ev {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    info!("MQTT disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u: MqttUrl = "mqtt://user:pw@broker:1884".parse().unwrap();
        assert_eq!(
            u,
            MqttUrl {
                host: "broker".into(),
                port: 1884,
                username: Some("user".into()),
                password: Some("pw".into())
            }
        );
        let u: MqttUrl = "mqtt://127.0.0.1".parse().unwrap();
        assert_eq!(u.port, 1883);
        assert!("http://x".parse::<MqttUrl>().is_err());
        assert!("nonsense".parse::<MqttUrl>().is_err());
    }

    #[test]
    fn shared_subscription_topic() {
        let mut c = MqttConfig {
            url: "mqtt://h".parse().unwrap(),
            topic: "thndr-trading".into(),
            client_id: "x".into(),
            shared_group: None,
            max_packet_bytes: 1024,
        };
        assert_eq!(c.subscription(), "thndr-trading");
        c.shared_group = Some("bourse".into());
        assert_eq!(c.subscription(), "$share/bourse/thndr-trading");
    }
}
