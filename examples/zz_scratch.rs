#![allow(missing_docs, clippy::unwrap_used)]
#[path = "../benches/raw.rs"]
#[allow(dead_code)]
mod raw;
#[path = "../benches/worker.rs"]
mod worker;
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = polos::nats::server::NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    polos::nats::streams::apply(&js, &Default::default()).await?;
    let n: usize = std::env::args().nth(1).unwrap().parse()?;
    for round in 0..3 {
        let (r, o) = (format!("raw{round}"), format!("ours{round}"));
        worker::publish_fires(&js, &r, n).await?;
        worker::publish_fires(&js, &o, n).await?;
        let ours = worker::polos_worker(client.clone(), &o, n, 64).await?;
        let raw = raw::worker_loop(&js, &r, n, 64).await?;
        eprintln!(
            "round {round}: ours {ours:.0} raw {raw:.0} ratio {:.2}",
            ours / raw
        );
    }
    Ok(())
}
