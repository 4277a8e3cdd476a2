//! Two async nodes in one process: the client sends a few messages, the server echoes each
//! one back from its receive loop, and the client commits the echoes. Bounded in time.
//!
//! `cargo run -p hrpc-node --features tokio --example async_echo`

use std::time::Duration;

use hrpc_node::NodeConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hrpc-async-echo-{}", std::process::id()));
    let mut server = NodeConfig::new(dir.join("server"), 1)
        .bind("127.0.0.1:0".parse()?)
        .open_async()?;
    let mut client = NodeConfig::new(dir.join("client"), 2)
        .peer(1, server.local_addr())
        .open_async()?;

    // The server echoes every message, then commits it: a crash before the commit would
    // deliver it again after a restart.
    let echo = server.sender();
    let serve = tokio::spawn(async move {
        while let Some(d) = server.recv().await {
            echo.send(d.peer(), d.payload()).await?;
            d.commit()?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });

    let sender = client.sender();
    for i in 0..5 {
        // Committed to the client's store when this returns; waits out backpressure.
        sender.send(1, format!("hello {i}").as_bytes()).await?;
    }
    let echoes = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        while n < 5 {
            let Some(d) = client.recv().await else { break };
            println!(
                "echo #{}: {}",
                d.seq(),
                String::from_utf8_lossy(d.payload())
            );
            d.commit()?;
            n += 1;
        }
        Ok::<_, hrpc_node::NodeError>(n)
    })
    .await??;
    client.close(Duration::from_millis(100)).await?;
    // Dropping the server's node (with its task) stops its driver.
    serve.abort();
    std::fs::remove_dir_all(&dir)?;
    println!("{echoes} echoes");
    Ok(())
}
