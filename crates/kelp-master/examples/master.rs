//! Runs a master for manual smoke tests against real `weed` processes:
//! `cargo run -p kelp-master --example master -- <http port> <grpc port> <meta dir>`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().as_deref().unwrap_or("9333").parse()?;
    let grpc_port: u16 = args.next().as_deref().unwrap_or("19333").parse()?;
    let meta_dir = args.next().unwrap_or_else(|| ".".to_string());
    let http = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let grpc = tokio::net::TcpListener::bind(("127.0.0.1", grpc_port)).await?;
    let cfg = kelp_master::MasterConfig {
        port,
        grpc_port,
        meta_dir: meta_dir.into(),
        ..Default::default()
    };
    kelp_master::run(http, grpc, cfg, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
