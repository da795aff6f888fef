//! MQTT consumer of the feed topic (rumqttc).
//!
//! QoS 1 with a persistent session (clean session off, stable client id) and manual
//! acknowledgements: the broker keeps what arrives while we are away and redelivers what we
//! received but did not acknowledge, and we acknowledge only after the ingestor commits.
//! With a shared-subscription group, several replicas split the topic between them.

use crate::ingest::{Ack, Delivery};
use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
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
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let subscription = config.subscription();
    let source = format!("mqtt:{}", config.topic);
    let mut backoff = Duration::from_millis(200);
    let mut tx = Some(tx);
    info!(subscription, client_id = %config.client_id, host = %config.url.host, port = config.url.port, "connecting to MQTT");
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled(), if tx.is_some() => {
                // Stop feeding the ingestor; what it holds is committed and acknowledged below.
                tx = None;
                continue;
            }
            _ = ingestor_done.cancelled(), if tx.is_none() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(200);
                info!(session_present = ack.session_present, "MQTT connected");
                if let Err(e) = client.subscribe(&subscription, QoS::AtLeastOnce).await {
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
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Some(sender) = &tx else {
                    continue; // shutting down: left unacknowledged, redelivered later
                };
                let delivery = Delivery {
                    payload: publish.payload.to_vec(),
                    received_at: Utc::now(),
                    source: source.clone(),
                    ack: Ack::Mqtt {
                        client: client.clone(),
                        publish,
                    },
                };
                if sender.send(delivery).await.is_err() {
                    tx = None;
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
    disconnect(&client, &mut eventloop).await;
}

/// Sends DISCONNECT and polls until it is written (or a short deadline passes), so that pending
/// acknowledgements go out before the socket closes.
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.disconnect().await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(deadline);
    loop {
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
        };
        assert_eq!(c.subscription(), "thndr-trading");
        c.shared_group = Some("bourse".into());
        assert_eq!(c.subscription(), "$share/bourse/thndr-trading");
    }
}
