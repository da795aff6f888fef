//! Serves the fake stooq + AlphaVantage on a fixed address, for demos and benchmarks:
//! `cargo run -p bourse-quotes --features fake --example fake-upstream -- 127.0.0.1:18090`
//! It prints the number of upstream hits when stopped with Ctrl-C or SIGTERM.

use bourse_quotes::fake::FakeUpstream;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let upstream = FakeUpstream::new();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("fake upstream on http://{}", listener.local_addr()?);
    let app = upstream.router();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    println!(
        "stooq hits: {}, alphavantage hits: {}",
        upstream.stooq_hits(),
        upstream.alphavantage_hits()
    );
    Ok(())
}
