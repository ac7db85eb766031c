//! Sluice nodes in a cluster, as real processes on loopback: a `redis-server` of the test's
//! own (a free port, no persistence) and `sluice` binaries started with `--redis`. Nodes
//! register and list each other with their load; a room opened on one node shows that node
//! as its origin from another; a node that drains leaves at once and one that is killed is
//! gone within the TTL; while Redis is down a node keeps serving joins and `/readyz` says
//! `cluster: degraded`; when Redis is back the registry and placements recover.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sluice_signaling::auth::{Grants, TokenAuthority};
use sluice_signaling::cluster::{HEARTBEAT, NODE_TTL};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{Process, start_sluice};

const SECRET: &str = "cluster-test-secret-0123456789abcdef";
/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(20);
/// Between two reads of a condition.
const POLL: Duration = Duration::from_millis(50);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A child process of this test, killed (by its own PID) when dropped.
/// The test's own Redis: loopback only, on a port that was free, nothing written to disk.
struct Redis {
    port: u16,
    process: Option<Process>,
}

impl Redis {
    fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut redis = Self {
            port,
            process: None,
        };
        redis.restart()?;
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port) and waits until it accepts connections.
    fn restart(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting redis-server (apt-get install redis-server; scripts/test.sh does)",
            )?;
        self.process = Some(Process(child));
        let deadline = Instant::now() + WAIT;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        while std::net::TcpStream::connect_timeout(&address, POLL).is_err() {
            ensure!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

/// One `sluice` node of the cluster.
struct Node {
    id: &'static str,
    addr: String,
    process: Process,
}

impl Node {
    fn start(id: &'static str, redis: &Redis) -> Result<Self> {
        let redis = redis.url();
        let (process, addr) = start_sluice(
            &[
                "--rtmp",
                "off",
                "--media-threads",
                "1",
                "--resume-grace-ms",
                "0",
                "--drain-timeout",
                "2",
                "--redis",
                &redis,
                "--node-id",
                id,
            ],
            SECRET,
        )?;
        Ok(Self { id, addr, process })
    }

    /// Sends `signal` (`-TERM`, `-KILL`) to this node's process.
    fn signal(&self, signal: &str) -> Result<()> {
        let sent = Command::new("kill")
            .args([signal, &self.process.0.id().to_string()])
            .status()?;
        ensure!(sent.success(), "kill {signal}");
        Ok(())
    }

    /// An admin GET: status and body (JSON, or the text as a JSON string).
    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let admin = TokenAuthority::new(SECRET.as_bytes())
            .mint_admin("cluster-test", Duration::from_secs(600))?;
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(admin)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The ids of the live nodes this node lists, with their records.
    async fn nodes(&self) -> Result<Vec<Value>> {
        let (status, body) = self.get("/api/nodes").await?;
        ensure!(status == 200, "/api/nodes: {status} {body}");
        ensure!(body["node"] == self.id, "answered by {}", body["node"]);
        Ok(body["nodes"].as_array().cloned().unwrap_or_default())
    }

    /// Its signaling WebSocket URL, as other nodes name it.
    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Joins `room` as `identity`; returns the socket and the `joined` message.
    async fn join(&self, room: &str, identity: &str) -> Result<(Socket, Value)> {
        let grants = Grants {
            room: room.into(),
            identity: identity.into(),
            can_publish: true,
            can_subscribe: true,
            ..Grants::default()
        };
        let token = TokenAuthority::new(SECRET.as_bytes()).mint(&grants, WAIT * 10)?;
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr)).await?;
        let join = json!({"type": "join", "requestId": 1, "token": token});
        ws.send(Message::Text(join.to_string().into())).await?;
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await? {
                Some(Ok(Message::Text(text))) if text.contains(r#""type":"joined""#) => {
                    return Ok((ws, serde_json::from_str(&text)?));
                }
                Some(Ok(Message::Text(text))) => bail!("join answered {text}"),
                Some(Ok(_)) => continue,
                other => bail!("socket ended before joining: {other:?}"),
            }
        }
    }
}

/// Reads `check` until it returns `Some`, within [`WAIT`]; returns it and how long it took.
async fn until<T, F, Fut>(what: &str, mut check: F) -> Result<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < WAIT {
        match check().await {
            Ok(Some(value)) => return Ok((value, start.elapsed())),
            Ok(None) => {}
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("{what}: not within {WAIT:?} (last error: {last:?})")
}

fn ids(nodes: &[Value]) -> Vec<&str> {
    nodes.iter().filter_map(|n| n["id"].as_str()).collect()
}

/// The room's origin as `node` answers `GET /api/rooms/{room}`: `None` for 404.
async fn origin(node: &Node, room: &str) -> Result<Option<(String, usize)>> {
    let (status, body) = node.get(&format!("/api/rooms/{room}")).await?;
    if status == 404 {
        return Ok(None);
    }
    ensure!(status == 200, "{status} {body}");
    let participants = body["participants"].as_array().map_or(0, Vec::len);
    Ok(body["origin"]
        .as_str()
        .map(|o| (o.to_owned(), participants)))
}

#[tokio::test]
async fn nodes_register_place_rooms_and_leave_or_expire() -> Result<()> {
    let redis = Redis::start()?;
    let a = Node::start("node-a", &redis)?;
    let b = Node::start("node-b", &redis)?;
    let c = Node::start("node-c", &redis)?;
    for node in [&a, &b, &c] {
        let (listed, _) = until("every node listed", || async {
            let nodes = node.nodes().await?;
            Ok((ids(&nodes) == ["node-a", "node-b", "node-c"]).then_some(nodes))
        })
        .await?;
        let own = listed.iter().find(|n| n["id"] == node.id).unwrap();
        assert_eq!(own["url"], format!("http://{}", node.addr));
        assert_eq!(own["mediaIp"], "127.0.0.1");
        assert!(own["udpPort"].as_u64().is_some_and(|p| p > 0), "{own}");
        let (status, body) = node.get("/readyz").await?;
        assert_eq!((status, body), (200, json!("ready\ncluster: up")));
    }

    // A room opened on A: A is its origin, for B too (which holds none of its participants).
    // The join names the other live nodes, where the SDK reconnects if A stops answering (A
    // learns of B and C with its next heartbeat).
    let mut expected = [b.ws_url(), c.ws_url()];
    expected.sort_unstable();
    let (mut on_a, _) = until("A's join names B and C as fallbacks", || async {
        let (ws, joined) = a.join("stage", "alice").await?;
        let mut fallbacks: Vec<String> = joined["fallbackUrls"]
            .as_array()
            .context("fallbackUrls in joined")?
            .iter()
            .filter_map(|url| url.as_str().map(str::to_owned))
            .collect();
        fallbacks.sort_unstable();
        Ok((fallbacks == expected).then_some(ws))
    })
    .await?;
    let (seen, _) = until("B sees A as the origin", || async {
        Ok(origin(&b, "stage").await?.filter(|(o, _)| o == "node-a"))
    })
    .await?;
    assert_eq!(seen.1, 0, "no participant of the room on B");
    assert_eq!(
        origin(&a, "stage").await?,
        Some(("node-a".into(), 1)),
        "A holds the participant"
    );
    // A's load reaches the registry with its next heartbeat.
    until("A's load listed by C", || async {
        let nodes = c.nodes().await?;
        let a = nodes.iter().find(|n| n["id"] == "node-a");
        Ok(a.filter(|a| a["rooms"] == 1 && a["participants"] == 1)
            .map(|_| ()))
    })
    .await?;
    // The same room joined on B keeps A as its origin; when A's last participant leaves, A
    // releases it and B, which still holds the room, becomes its origin.
    let (_on_b, _) = b.join("stage", "bob").await?;
    assert_eq!(origin(&b, "stage").await?, Some(("node-a".into(), 1)));
    on_a.send(Message::Text(r#"{"type":"leave","requestId":2}"#.into()))
        .await?;
    until("B becomes the origin after A's room closed", || async {
        Ok(origin(&c, "stage").await?.filter(|(o, _)| o == "node-b"))
    })
    .await?;

    // Drained (SIGTERM): C leaves the registry at once, well before its record would expire.
    c.signal("-TERM")?;
    let (_, left) = until("C gone after its drain", || async {
        Ok((ids(&a.nodes().await?) == ["node-a", "node-b"]).then_some(()))
    })
    .await?;
    assert!(
        left < NODE_TTL - HEARTBEAT,
        "a drained node left in {left:?}"
    );

    // Killed (SIGKILL): B's record and its placement expire within the TTL.
    b.signal("-KILL")?;
    let (_, expired) = until("B gone after it was killed", || async {
        Ok((ids(&a.nodes().await?) == ["node-a"]).then_some(()))
    })
    .await?;
    assert!(
        expired <= NODE_TTL + HEARTBEAT,
        "a killed node was listed for {expired:?}"
    );
    eprintln!("registry: a drained node left in {left:?}, a killed one expired in {expired:?}");
    until("the room placed on B expired", || async {
        Ok(origin(&a, "stage").await?.is_none().then_some(()))
    })
    .await?;
    drop(redis);
    Ok(())
}

/// `sluice_cluster_redis_up` in `/metrics`.
async fn redis_up_metric(node: &Node) -> Result<Option<f64>> {
    let (_, body) = node.get("/metrics").await?;
    let text = body.as_str().unwrap_or_default();
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("sluice_cluster_redis_up "))
        .and_then(|value| value.trim().parse().ok()))
}

#[tokio::test]
async fn a_redis_outage_degrades_the_cluster_but_not_the_node() -> Result<()> {
    let mut redis = Redis::start()?;
    let a = Node::start("node-a", &redis)?;
    until("A registered", || async {
        Ok((ids(&a.nodes().await?) == ["node-a"]).then_some(()))
    })
    .await?;
    assert_eq!(redis_up_metric(&a).await?, Some(1.0));

    redis.stop();
    let (body, _) = until("/readyz says degraded", || async {
        let (status, body) = a.get("/readyz").await?;
        ensure!(
            status == 200,
            "/readyz {status} {body}: the node still serves"
        );
        Ok(body
            .as_str()
            .filter(|b| b.contains("cluster: degraded"))
            .map(str::to_owned))
    })
    .await?;
    assert!(body.starts_with("ready\n"), "{body}");
    assert_eq!(a.get("/healthz").await?, (200, json!("ok")));
    assert_eq!(redis_up_metric(&a).await?, Some(0.0));
    let (status, body) = a.get("/api/nodes").await?;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("clusterUnavailable"))
    );
    // Joins are served without Redis; the room has no known origin meanwhile.
    let (_on_a, _) = a.join("outage", "carol").await?;
    let (status, body) = a.get("/api/rooms/outage").await?;
    assert_eq!(status, 200);
    assert_eq!(body["participants"].as_array().map(Vec::len), Some(1));
    assert!(body.get("origin").is_none(), "{body}");

    // Redis back (empty: it keeps nothing on disk): A registers again and places the room
    // opened during the outage.
    redis.restart()?;
    let ((), recovered) = until("A registered again with its room", || async {
        let nodes = a.nodes().await?;
        Ok(nodes
            .iter()
            .any(|n| n["id"] == "node-a" && n["rooms"] == 1)
            .then_some(()))
    })
    .await?;
    eprintln!("registry: recovered {recovered:?} after redis restarted");
    assert_eq!(origin(&a, "outage").await?, Some(("node-a".into(), 1)));
    assert_eq!(a.get("/readyz").await?, (200, json!("ready\ncluster: up")));
    assert_eq!(redis_up_metric(&a).await?, Some(1.0));
    Ok(())
}
